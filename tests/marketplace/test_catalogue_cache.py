"""The catalogue cache (marketplace/cache.py): repeat reads cost no query, a committed change
shows at once, a lapsed hold shows free within the cache's bound, and each language and
display currency gets its own page."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from bookings import services
from bookings.models import Booking
from bookings.services import Actor
from marketplace import cache as catalogue_cache
from marketplace.models import Mission, SlotClass
from tests.factories import MissionFactory, OrganisationFactory, SlotClassFactory, UserFactory
from tests.marketplace.test_pages import text_of

pytestmark = pytest.mark.django_db

BOUND_S = 5


@pytest.fixture(autouse=True)
def cached(settings: Any) -> None:
    settings.MOONSLOT_CATALOGUE_CACHE_SECONDS = BOUND_S


@pytest.fixture
def deck() -> SlotClass:
    mission = MissionFactory.create(name="Cached flight", name_ja="キャッシュ便")
    return SlotClassFactory.create(mission=mission, capacity_g=100_000)


def api_available_g(client: Client, slot_class: SlotClass) -> int:
    data = client.get(f"/api/v1/missions/{slot_class.mission.code}/").json()
    return int(next(c["available_g"] for c in data["slot_classes"] if c["id"] == slot_class.pk))


def listed_available_g(client: Client, slot_class: SlotClass) -> int:
    data = client.get("/api/v1/missions/").json()
    classes = [c for m in data["results"] for c in m["slot_classes"] if c["id"] == slot_class.pk]
    return int(classes[0]["available_g"])


def page(client: Client, mission: Mission) -> str:
    response = client.get(reverse("marketplace:mission-detail", kwargs={"code": mission.code}))
    assert response.status_code == 200
    return text_of(response)


def hold(slot_class: SlotClass, mass_g: int, **kwargs: Any) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=OrganisationFactory.create(),
        actor=Actor.system("test"),
        currency="JPY",
        channel="api",
        mass_g=mass_g,
        **kwargs,
    )


def test_repeat_reads_come_from_the_cache_without_a_query(
    client: Client, deck: SlotClass, django_assert_num_queries: Any
) -> None:
    first_api = client.get(f"/api/v1/missions/{deck.mission.code}/").content
    first_list = client.get("/api/v1/missions/").content
    first_page = page(client, deck.mission)
    first_home = text_of(client.get("/"))

    with django_assert_num_queries(0):
        assert client.get(f"/api/v1/missions/{deck.mission.code}/").content == first_api
        assert client.get("/api/v1/missions/").content == first_list
        assert page(client, deck.mission) == first_page
        assert text_of(client.get("/")) == first_home
    assert "Cached flight" in first_home
    assert "100 kg of 100 kg left" in first_page


def test_a_hold_shows_in_the_cached_catalogue_when_it_commits_and_not_before(
    client: Client, deck: SlotClass, django_capture_on_commit_callbacks: Any
) -> None:
    assert api_available_g(client, deck) == 100_000
    assert listed_available_g(client, deck) == 100_000
    assert "100 kg of 100 kg left" in page(client, deck.mission)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        hold(deck, 40_000)
    # Not committed yet (the version moves on at commit): readers keep the cached state.
    assert api_available_g(client, deck) == 100_000
    for callback in callbacks:
        callback()

    assert api_available_g(client, deck) == 60_000
    assert listed_available_g(client, deck) == 60_000
    assert "60 kg of 100 kg left" in page(client, deck.mission)


def test_a_catalogue_edit_shows_at_once(
    client: Client, deck: SlotClass, django_capture_on_commit_callbacks: Any
) -> None:
    assert "Cached flight" in text_of(client.get("/"))

    with django_capture_on_commit_callbacks(execute=True):
        mission = Mission.objects.get(pk=deck.mission.pk)
        mission.name = "Renamed flight"
        mission.save()

    home = text_of(client.get("/"))
    assert "Renamed flight" in home
    assert "Cached flight" not in home


def _clock(monkeypatch: pytest.MonkeyPatch, *, ahead_s: float) -> None:
    """Move the cache's clock (entries' ages) and Django's clock ``ahead_s`` seconds."""
    real_time = time.time
    real_now = timezone.now
    monkeypatch.setattr(time, "time", lambda: real_time() + ahead_s)
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=ahead_s))


def test_a_lapsed_hold_shows_free_once_the_cached_entry_reaches_its_bound(
    client: Client,
    deck: SlotClass,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        hold(deck, 30_000, hold_minutes=1)
    assert api_available_g(client, deck) == 70_000  # cached with the hold live
    assert "70 kg of 100 kg left" in page(client, deck.mission)

    # The hold lapses without any write; an entry younger than the bound may still count it
    # (hiding capacity, never promising capacity that is gone)…
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=61))
    assert api_available_g(client, deck) == 70_000
    monkeypatch.undo()

    # …and once the entry is as old as the bound, the lapsed hold reads as free.
    _clock(monkeypatch, ahead_s=61 + BOUND_S)
    assert api_available_g(client, deck) == 100_000
    assert listed_available_g(client, deck) == 100_000
    assert "100 kg of 100 kg left" in page(client, deck.mission)


def test_each_language_and_display_currency_gets_its_own_cached_page(
    client: Client, deck: SlotClass
) -> None:
    english = text_of(client.get("/"))
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    japanese = text_of(client.get("/"))
    detail_ja = client.get(reverse("marketplace:mission-detail", args=[deck.mission.code]))

    assert "Cached flight" in english
    assert "キャッシュ便" not in english
    assert "キャッシュ便" in japanese
    # The Japanese quote form offers yen first, the English one dollars.
    assert 'value="JPY" selected' in detail_ja.content.decode()
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert text_of(client.get("/")) == english
    detail_en = client.get(reverse("marketplace:mission-detail", args=[deck.mission.code]))
    assert 'value="USD" selected' in detail_en.content.decode()

    keys = {
        catalogue_cache.catalogue_key("fragment:mission-list", parts)
        for parts in [("en", "USD"), ("ja", "JPY"), ("en", "JPY")]
    }
    assert len(keys) == 3


def test_signed_in_visitors_get_their_own_page(client: Client, deck: SlotClass) -> None:
    anonymous = page(client, deck.mission)
    client.force_login(UserFactory.create())
    signed_in = page(client, deck.mission)

    assert "You will be asked to sign in" in anonymous
    assert "You will be asked to sign in" not in signed_in


def test_an_unknown_mission_is_404_and_a_new_one_appears_after_its_commit(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    url = reverse("marketplace:mission-detail", args=["LATE1"])
    assert client.get(url).status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        MissionFactory.create(code="LATE1", name="Late addition")

    assert "Late addition" in text_of(client.get(url))


def test_turned_off_nothing_is_cached(
    client: Client, deck: SlotClass, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.MOONSLOT_CATALOGUE_CACHE_SECONDS = 0
    client.get("/api/v1/missions/")
    with django_assert_num_queries(5):
        client.get("/api/v1/missions/")


def test_a_failing_cache_falls_back_to_the_database_for_the_pages(
    client: Client, deck: SlotClass, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("cache down")

    failing: Callable[..., Any] = broken
    monkeypatch.setattr(catalogue_cache.cache, "get", failing)
    monkeypatch.setattr(catalogue_cache.cache, "get_many", failing)
    monkeypatch.setattr(catalogue_cache.cache, "set", failing)

    # (The API's throttles need the cache themselves, so only the pages can show this.)
    assert "100 kg of 100 kg left" in page(client, deck.mission)
    assert "Cached flight" in text_of(client.get("/"))


def recording_builder(builds: list[str]) -> Callable[[str], Callable[[], str]]:
    """``build(value)``: a builder of ``value`` that notes each time it runs in ``builds``."""

    def build(value: str) -> Callable[[], str]:
        def built() -> str:
            builds.append(value)
            return value

        return built

    return build


def test_an_entry_built_under_an_older_version_is_built_again() -> None:
    builds: list[str] = []
    build = recording_builder(builds)

    assert catalogue_cache.catalogue_cached("probe", ("a",), build("first")) == "first"
    assert catalogue_cache.catalogue_cached("probe", ("a",), build("unused")) == "first"
    catalogue_cache._bump()  # what a commit does

    assert catalogue_cache.catalogue_cached("probe", ("a",), build("second")) == "second"
    assert catalogue_cache.catalogue_cached("probe", ("a",), build("unused")) == "second"
    assert builds == ["first", "second"]


def test_a_process_serves_its_own_copy_while_the_version_stands() -> None:
    """A hit moves only the version over the network: with the shared entry gone (evicted),
    this process still answers from its copy until the version moves on."""
    from django.core.cache import cache

    builds: list[str] = []
    build = recording_builder(builds)

    assert catalogue_cache.catalogue_cached("probe", ("b",), build("first")) == "first"
    cache.delete(catalogue_cache.catalogue_key("probe", ("b",)))

    assert catalogue_cache.catalogue_cached("probe", ("b",), build("unused")) == "first"
    catalogue_cache._bump()
    assert catalogue_cache.catalogue_cached("probe", ("b",), build("second")) == "second"
    assert builds == ["first", "second"]


def test_a_quote_is_neither_hidden_by_the_cached_page_nor_shown_to_the_next_visitor(
    client: Client, deck: SlotClass
) -> None:
    url = reverse("marketplace:mission-detail", args=[deck.mission.code])
    asked = {"slot_class": str(deck.pk), "mass": "12.5", "unit": "kg"}
    client.get(url)  # the page's fragments are cached

    quoted = client.get(url, asked).content.decode()
    assert 'value="12.5"' in quoted
    assert 'value="12.5"' not in client.get(url).content.decode()

    catalogue_cache._bump()
    assert 'value="12.5"' in client.get(url, asked).content.decode()  # asked first this time
    assert 'value="12.5"' not in client.get(url).content.decode()
