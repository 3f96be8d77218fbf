"""``GET /api/v1/events/``: everything that happened to the key's bookings, oldest first, in
pages of at most 100, polled with the ``next`` cursor without skipping or repeating."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Organisation
from bookings import services
from bookings.models import Booking, BookingEvent
from bookings.services import Actor
from marketplace.models import SlotClass
from tests.bookings.api_helpers import (
    CANCEL,
    CONFIRM,
    EVENTS,
    PAYLOAD,
    keyed_client,
    lapse,
    place_hold,
    service_hold,
    url,
)
from tests.factories import ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def client(reseller: Organisation) -> APIClient:
    return keyed_client(reseller)


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create(capacity_g=500_000, max_mass_g=50_000)


def feed(client: APIClient, after: str | None = None) -> dict[str, Any]:
    query = {} if after is None else {"after": after}
    page: dict[str, Any] = assert_matches_schema(client.get(EVENTS, query), EVENTS, "get", 200)
    return page


def service_holds(slot_class: SlotClass, organisation: Organisation, count: int) -> list[Booking]:
    return [service_hold(slot_class, organisation, mass_g=500) for _ in range(count)]


def test_empty_feed_starts_at_zero_and_answers_next(client):
    page = feed(client)

    assert page == {"results": [], "next": "0"}


def test_events_come_oldest_first_with_their_booking_and_data(client, deck):
    booking = place_hold(client, deck, mass_g=2000)
    reference = booking["reference"]
    client.patch(url(PAYLOAD, reference), {"name": "Rover"}, format="json")
    client.post(url(CONFIRM, reference))
    client.post(url(CANCEL, reference))

    page = feed(client)

    events = page["results"]
    assert [e["type"] for e in events] == [
        "booking.held",
        "payload.updated",
        "booking.confirmed",
        "booking.cancelled",
    ]
    assert {e["booking"] for e in events} == {reference}
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert all(isinstance(e["id"], str) for e in events)
    assert page["next"] == events[-1]["id"]
    held, updated, confirmed, cancelled = (e["data"] for e in events)
    assert held == {
        "mass_g": 2000,
        "quantity": None,
        "price": {"amount": 360_000_000, "currency": "JPY"},
    }
    assert updated == {"fields": ["name"]}
    assert confirmed == {"on_account": True}
    assert cancelled["refund"]["currency"] == "JPY"


def test_a_lapsed_hold_appears_as_expired_once_released(client, deck):
    booking = place_hold(client, deck)
    lapse(booking["reference"])
    services.bookings_expire()

    types = [e["type"] for e in feed(client)["results"]]

    assert types == ["booking.held", "booking.expired"]


def test_polling_with_next_never_skips_or_repeats(client, reseller, deck):
    seen: list[str] = []
    cursor = None
    expected = 0
    for round_size in (3, 0, 2, 5):
        bookings = service_holds(deck, reseller, round_size)
        for booking in bookings[:1]:
            services.booking_confirm(booking_id=booking.pk, actor=SYSTEM)
        expected += round_size + min(round_size, 1)
        page = feed(client, cursor)
        seen += [e["id"] for e in page["results"]]
        if not page["results"]:
            assert page["next"] == (cursor or "0")
        cursor = page["next"]

    assert len(seen) == len(set(seen)) == expected
    assert [int(i) for i in seen] == sorted(int(i) for i in seen)
    mine = BookingEvent.objects.filter(organisation=reseller).order_by("seq")
    assert seen == [str(e.seq) for e in mine]
    assert feed(client, cursor) == {"results": [], "next": cursor}


def test_other_organisations_events_never_appear_even_between_mine(client, reseller, deck):
    stranger = ResellerFactory.create()
    for _ in range(3):
        service_holds(deck, reseller, 1)
        service_holds(deck, stranger, 2)

    page = feed(client)

    mine = set(Booking.objects.filter(organisation=reseller).values_list("reference", flat=True))
    assert {e["booking"] for e in page["results"]} == mine
    assert len(page["results"]) == 3


def test_a_page_holds_at_most_100_and_the_rest_follows(client, reseller, deck):
    service_holds(deck, reseller, 101)

    first = feed(client)
    second = feed(client, first["next"])

    assert len(first["results"]) == 100
    assert len(second["results"]) == 1
    assert int(second["results"][0]["id"]) > int(first["next"])
    assert feed(client, second["next"])["results"] == []


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", "9" * 30, "0x10", " 1", "1e3"])
def test_an_invalid_cursor_is_400_on_after(client, after):
    response = client.get(EVENTS, {"after": after})

    body = assert_matches_schema(response, EVENTS, "get", 400)
    assert body["code"] == "invalid"
    assert "after" in body["fields"]


def test_a_cursor_past_the_end_returns_itself(client, deck):
    place_hold(client, deck)

    assert feed(client, "999999") == {"results": [], "next": "999999"}


def test_feed_costs_the_same_queries_for_one_event_or_a_full_page(reseller, deck):
    few_org, many_org = ResellerFactory.create(), ResellerFactory.create()
    service_holds(deck, few_org, 1)
    service_holds(deck, many_org, 100)
    few, many = keyed_client(few_org), keyed_client(many_org)
    few.get(EVENTS)  # numbers the events and writes each key's last_used_at once
    many.get(EVENTS)

    counts = []
    for organisation, client in ((few_org, few), (many_org, many)):
        service_holds(deck, organisation, 1)  # so each read numbers a new event
        with CaptureQueriesContext(connection) as captured:
            page = feed(client)
        counts.append(len(captured))
        assert len(page["results"]) in (2, 100)

    assert counts[0] == counts[1]
    # The key; sequencing (anything to number?, savepoint, lock the cursor, number, save it,
    # release); the page.
    assert counts[0] == 8
