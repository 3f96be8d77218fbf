"""Whole catalogue pages for anonymous visitors (marketplace/page_cache.py): served from the
catalogue cache without a query, each with a CSRF token of the visitor's own, the same
headers as a rendered page, and never to anyone whose page could differ."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages import constants
from django.contrib.messages.storage.base import Message
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest
from django.test import Client
from django.urls import reverse

from marketplace.models import SlotClass
from tests.factories import MissionFactory, SlotClassFactory, UserFactory
from tests.marketplace.test_pages import text_of

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([A-Za-z0-9]{64})"')
HEADERS = (
    "Content-Type",
    "Content-Language",
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Vary",
)


@pytest.fixture(autouse=True)
def cached(settings: Any) -> None:
    settings.MOONSLOT_CATALOGUE_CACHE_SECONDS = 5


@pytest.fixture
def deck() -> SlotClass:
    mission = MissionFactory.create(name="Paged flight", name_ja="ページ便")
    return SlotClassFactory.create(mission=mission, capacity_g=100_000)


def pages(deck: SlotClass) -> list[str]:
    return ["/", reverse("marketplace:mission-detail", args=[deck.mission.code])]


def token_of(response: Any) -> str:
    tokens = TOKEN.findall(response.content.decode())
    assert len(tokens) == 1
    return str(tokens[0])


def without_token(response: Any) -> str:
    return TOKEN.sub("", response.content.decode())


@pytest.mark.parametrize("page", [0, 1])
def test_a_new_visitor_gets_the_stored_page_without_a_query_and_with_its_own_csrf_token(
    deck: SlotClass, page: int, django_assert_num_queries: Any
) -> None:
    url = pages(deck)[page]
    first = Client().get(url)

    visitor = Client(enforce_csrf_checks=True)
    with django_assert_num_queries(0):
        served = visitor.get(url)

    assert served.status_code == 200
    assert without_token(served) == without_token(first)
    assert "Paged flight" in text_of(served)
    assert token_of(served) != token_of(first)
    # The token is this visitor's: switching language with it passes the CSRF check.
    assert "csrftoken" in served.cookies
    switched = visitor.post(
        reverse("set_language"),
        {"language": "ja", "next": "/", "csrfmiddlewaretoken": token_of(served)},
    )
    assert switched.status_code == 302


def test_a_returning_visitors_token_masks_the_secret_of_their_csrf_cookie(deck: SlotClass) -> None:
    Client().get("/")  # stored
    visitor = Client(enforce_csrf_checks=True)
    visitor.get(reverse("marketplace:mission-detail", args=[deck.mission.code]))
    secret_cookie = visitor.cookies["csrftoken"].value

    again = visitor.get("/")

    assert "csrftoken" not in again.cookies or again.cookies["csrftoken"].value == secret_cookie
    response = visitor.post(
        reverse("set_language"),
        {"language": "en", "next": "/", "csrfmiddlewaretoken": token_of(again)},
    )
    assert response.status_code == 302


@pytest.mark.parametrize("page", [0, 1])
def test_a_stored_page_carries_the_same_headers_as_a_rendered_one(
    deck: SlotClass, page: int
) -> None:
    url = pages(deck)[page]
    rendered = Client().get(url)
    served = Client().get(url)

    for header in HEADERS:
        assert served.get(header) == rendered.get(header), header
    assert served["Content-Security-Policy"]
    assert served["X-Frame-Options"] == "DENY"
    assert "Cookie" in served["Vary"]
    assert "Accept-Language" in served["Vary"]


def test_each_language_gets_its_own_stored_page(deck: SlotClass) -> None:
    english = text_of(Client().get("/"))
    japanese = text_of(Client().get("/", HTTP_ACCEPT_LANGUAGE="ja"))

    assert "Paged flight" in english
    assert "ページ便" not in english
    assert "ページ便" in japanese
    assert text_of(Client().get("/", HTTP_ACCEPT_LANGUAGE="ja")) == japanese
    assert text_of(Client().get("/")) == english


def test_a_signed_in_visitor_never_gets_the_anonymous_page(deck: SlotClass) -> None:
    url = pages(deck)[1]
    Client().get(url)
    member = Client()
    member.force_login(UserFactory.create())

    page = text_of(member.get(url))

    assert "My bookings" in page
    assert "Create account" not in page


def test_a_visitor_with_a_message_waiting_sees_it(deck: SlotClass) -> None:
    Client().get("/")
    visitor = Client()
    message = Message(constants.INFO, "A message for this visitor only")
    storage: Any = CookieStorage(HttpRequest())
    visitor.cookies["messages"] = storage._encode([message])

    assert "A message for this visitor only" in text_of(visitor.get("/"))


def test_a_quote_is_never_stored_for_the_next_visitor(deck: SlotClass) -> None:
    url = pages(deck)[1]
    quoted = Client().get(
        url, {"slot_class": str(deck.pk), "mass": "12.5", "unit": "kg", "currency": "USD"}
    )
    assert quoted.status_code == 200
    assert 'value="12.5"' in quoted.content.decode()

    plain = Client().get(url)

    assert without_token(plain) != without_token(quoted)
    assert 'value="12.5"' not in plain.content.decode()


def test_a_quote_is_shown_while_its_page_is_stored(deck: SlotClass) -> None:
    url = pages(deck)[1]
    Client().get(url)
    Client().get(url)

    quoted = Client().get(url, {"slot_class": str(deck.pk), "mass": "12.5", "unit": "kg"})

    assert 'value="12.5"' in quoted.content.decode()


def test_a_committed_change_shows_on_the_next_anonymous_page(
    deck: SlotClass, django_capture_on_commit_callbacks: Any
) -> None:
    assert "Paged flight" in text_of(Client().get("/"))

    with django_capture_on_commit_callbacks(execute=True):
        deck.mission.name = "Renamed paged flight"
        deck.mission.save()

    assert "Renamed paged flight" in text_of(Client().get("/"))
