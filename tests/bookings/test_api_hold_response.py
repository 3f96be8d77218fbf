"""The 201 of a hold is built from what the hold wrote, without reading the booking back (the
class's row lock is held until the commit): it must be exactly what reading it back shows,
for a class paid in full and for one on a payment plan, and a hold costs a pinned number of
queries."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bookings.api_helpers import BOOKINGS, DETAIL, keyed_client, place_hold, url
from tests.bookings.plan_helpers import DECK_MASS_G, deck_class
from tests.factories import SlotClassFactory
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

FULL_PAYLOAD = {
    "name": "Rover",
    "description": "A small rover",
    "mass_g": 2400,
    "dimensions_mm": [300, 200, 100],
    "power_w": 12,
    "data_kbps": 64,
    "hazards": [],
    "export_classification": "EAR99",
}
CUSTOMER = {"name": "Aiko Tanaka", "email": "aiko@example.jp", "organisation": "Lab"}


def read_back(client: Any, reference: str) -> dict[str, Any]:
    body: dict[str, Any] = assert_matches_schema(
        client.get(url(DETAIL, reference)), DETAIL, "get", 200
    )
    return body


def test_a_held_booking_is_answered_as_reading_it_back_shows_it() -> None:
    deck = SlotClassFactory.create(capacity_g=100_000)
    client = keyed_client()

    held = place_hold(client, deck, mass_g=2500, payload=FULL_PAYLOAD, customer=CUSTOMER)

    assert held["payload"]["name"] == "Rover"
    assert held["instalments"] == []
    assert held == read_back(client, held["reference"])


def test_a_hold_on_a_payment_plan_answers_its_instalments_as_read_back() -> None:
    deck = deck_class(capacity_g=100_000)
    client = keyed_client()

    held = place_hold(client, deck, mass_g=DECK_MASS_G, customer=CUSTOMER)

    assert len(held["instalments"]) == 4
    assert held["payment_plan"] is not None
    assert held["payment_reference"]
    assert held == read_back(client, held["reference"])


def test_a_hold_costs_a_pinned_number_of_queries(django_assert_max_num_queries: Any) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000)
    client = keyed_client()
    place_hold(client, deck)  # the key's first use writes last_used_at once

    body = {"slot_class": deck.pk, "mass_g": 1000, "currency": "JPY"}
    # Was 26 with the read-back and a savepoint around each insert that may fail; 17 in a
    # request, plus the claim's savepoint that only a test's enclosing transaction needs.
    with django_assert_max_num_queries(19):
        response = client.post(BOOKINGS, body, format="json", HTTP_IDEMPOTENCY_KEY="sale-1")
    assert_matches_schema(response, BOOKINGS, "post", 201)
