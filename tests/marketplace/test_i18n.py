"""English by default, Japanese on request, and a compiled catalogue that matches its source."""

from __future__ import annotations

import ast
import gettext
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import translation

from tests.factories import MissionFactory, SlotClassFactory
from tests.marketplace.test_pages import text_of

pytestmark = pytest.mark.django_db

CATALOGUE_DIR = Path(settings.LOCALE_PATHS[0]) / "ja" / "LC_MESSAGES"


def switch_to_japanese(client: Client) -> None:
    response = client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    assert response.status_code == 302


def test_catalogue_is_english_by_default(client: Client) -> None:
    MissionFactory.create(name="Far side flight", name_ja="裏側ミッション")

    response = client.get("/")

    page = text_of(response)
    assert '<html lang="en">' in response.content.decode()
    assert "Upcoming missions" in page
    assert "Far side flight" in page
    assert "裏側ミッション" not in page


def test_language_switch_shows_the_catalogue_in_japanese(client: Client) -> None:
    mission = MissionFactory.create(name="Far side flight", name_ja="裏側ミッション")
    SlotClassFactory.create(mission=mission, capacity_g=100_000)

    switch_to_japanese(client)
    response = client.get("/")

    page = text_of(response)
    assert '<html lang="ja">' in response.content.decode()
    assert "今後のミッション" in page
    assert "裏側ミッション" in page
    assert "Far side flight" not in page
    assert "販売中" in page  # the mission status, from the model's choices
    assert "残り 100 kg／100 kg" in page


def test_language_switch_back_to_english(client: Client) -> None:
    MissionFactory.create(name="Far side flight", name_ja="裏側ミッション")
    switch_to_japanese(client)

    client.post(reverse("set_language"), {"language": "en", "next": "/"})

    assert "Far side flight" in text_of(client.get("/"))


def test_browser_language_picks_japanese(client: Client) -> None:
    MissionFactory.create()

    page = text_of(client.get("/", HTTP_ACCEPT_LANGUAGE="ja,en;q=0.5"))

    assert "今後のミッション" in page


def test_quote_messages_are_translated(client: Client) -> None:
    deck = SlotClassFactory.create(min_mass_g=500)
    switch_to_japanese(client)

    response = client.get(
        reverse("marketplace:mission-detail", kwargs={"code": deck.mission.code}),
        {"slot_class": str(deck.pk), "mass": "400", "unit": "g", "currency": "JPY"},
    )

    assert "このクラスの 1 回の予約の最小は 500 g です。" in text_of(response)


def test_known_strings_translate_under_japanese() -> None:
    with translation.override("ja"):
        assert translation.gettext("Upcoming missions") == "今後のミッション"
        assert translation.gettext("On sale") == "販売中"


# --- The catalogue files ----------------------------------------------------------------


def read_po(path: Path) -> list[dict[str, str]]:
    """Entries of a .po file as {"msgctxt"?, "msgid", "msgid_plural"?, "msgstr…", "flags"}."""
    entries: list[dict[str, str]] = []
    entry: dict[str, str] = {}
    key = ""
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if entry:
                entries.append(entry)
            entry, key = {}, ""
        elif line.startswith("#~"):
            continue  # obsolete entries are not compiled
        elif line.startswith("#,"):
            entry["flags"] = entry.get("flags", "") + line[2:]
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            entry[key] += ast.literal_eval(line)
        else:
            key, _, literal = line.partition(" ")
            entry[key] = ast.literal_eval(literal)
    return [e for e in entries if e.get("msgid")]


def test_japanese_catalogue_has_no_fuzzy_or_empty_entries() -> None:
    entries = read_po(CATALOGUE_DIR / "django.po")

    assert entries
    assert [e["msgid"] for e in entries if "fuzzy" in e.get("flags", "")] == []
    untranslated = [e["msgid"] for e in entries if not e.get("msgstr", e.get("msgstr[0]"))]
    assert untranslated == []


def test_compiled_catalogue_matches_its_source() -> None:
    # A .po edited without running compilemessages ships stale Japanese: the .mo must give
    # every translation the .po holds.
    with (CATALOGUE_DIR / "django.mo").open("rb") as compiled:
        catalogue = gettext.GNUTranslations(compiled)

    stale = []
    for entry in read_po(CATALOGUE_DIR / "django.po"):
        msgid, context = entry["msgid"], entry.get("msgctxt")
        if "msgid_plural" in entry:
            expected = entry["msgstr[0]"]
            if context is None:
                actual = catalogue.ngettext(msgid, entry["msgid_plural"], 1)
            else:
                actual = catalogue.npgettext(context, msgid, entry["msgid_plural"], 1)
        else:
            expected = entry["msgstr"]
            if context is None:
                actual = catalogue.gettext(msgid)
            else:
                actual = catalogue.pgettext(context, msgid)
        if actual != expected:
            stale.append(msgid)
    assert stale == []
