"""The 201 of a hold is built from what the hold wrote, without reading the booking back (the
class's row lock is held until the commit): it must be exactly what reading it back shows,
for a class paid in full and for one on a payment plan, and a hold costs a pinned number of
queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from bookings import selectors
from bookings.api.serializers import BookingSerializer
from bookings.models import Booking
from bookings.transfers import payment_record_transfer
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
    # Was 26 with the read-back and a savepoint around each insert that may fail, then 19;
    # 14 once the Idempotency-Key's claim was no longer locked again before the hold and the
    # claim's and the booking's inserts answered a conflict themselves (no savepoints); 12
    # since a class with room is checked and taken by one guarded UPDATE, without the lock's
    # SELECT and the lapsed holds' release (both tiers; the savepoint pair is the test's
    # transaction's).
    with django_assert_max_num_queries(12):
        response = client.post(BOOKINGS, body, format="json", HTTP_IDEMPOTENCY_KEY="sale-1")
    assert_matches_schema(response, BOOKINGS, "post", 201)


def test_the_fast_rendering_is_what_the_serializer_fields_render() -> None:
    """``BookingSerializer`` renders through ``booking_data`` (plain dicts); its declared
    fields are the contract. Both must give the same body for bookings in every state: held
    with a hazard and a customer, lapsed, confirmed then cancelled with a refund, and on a
    payment plan with money received, a partial payment and an overdue instalment."""
    from bookings.models import Instalment
    from bookings.services import Actor, booking_confirm
    from tests.bookings.api_helpers import CANCEL, CONFIRM, lapse, service_hold

    small = SlotClassFactory.create(capacity_g=100_000)
    client = keyed_client()
    hazard = {"type": "lithium_battery", "energy_wh": 5}
    held = place_hold(
        client, small, mass_g=2500, payload={**FULL_PAYLOAD, "hazards": [hazard]}, customer=CUSTOMER
    )
    lapsed = place_hold(client, small, mass_g=1000)
    lapse(lapsed["reference"])
    cancelled = place_hold(client, small, mass_g=1000)
    client.post(url(CONFIRM, cancelled["reference"]), {}, format="json")
    client.post(url(CANCEL, cancelled["reference"]), {"reason": "changed plans"}, format="json")
    deck = deck_class(capacity_g=100_000)
    plan_held = place_hold(client, deck, mass_g=DECK_MASS_G)

    organisation = Booking.objects.get(reference=held["reference"]).organisation
    on_plan = service_hold(deck, organisation, mass_g=DECK_MASS_G)
    deposit, build, _accepted, _balance = on_plan.instalments.order_by("position")
    payment_record_transfer(
        booking_id=on_plan.pk,
        amount=deposit.amount,
        currency=deposit.currency,
        received_at=timezone.now(),
        bank_reference="deposit",
        actor=Actor.system("test"),
        instalment_id=deposit.pk,
    )
    booking_confirm(booking_id=on_plan.pk, actor=Actor.system("test"), reason="deposit in")
    Instalment.objects.filter(pk=build.pk).update(due_at=timezone.now() - timedelta(days=3))
    payment_record_transfer(
        booking_id=on_plan.pk,
        amount=1_000,
        currency=build.currency,
        received_at=timezone.now(),
        bank_reference="part of build start",
        actor=Actor.system("test"),
        instalment_id=build.pk,
    )

    references = [
        held["reference"],
        lapsed["reference"],
        cancelled["reference"],
        plan_held["reference"],
        on_plan.reference,
    ]
    seen_statuses = set()
    for reference in references:
        booking = selectors.booking_get(
            organisation=organisation, reference=reference, with_money=True
        )
        fast = BookingSerializer(booking).data
        assert fast == BookingSerializer().fields_representation(booking), reference
        seen_statuses.add(fast["status"])
    assert seen_statuses == {"held", "expired", "cancelled", "confirmed"}
    on_plan_body = BookingSerializer(
        selectors.booking_get(
            organisation=organisation, reference=on_plan.reference, with_money=True
        )
    ).data
    assert on_plan_body["overdue"] is True
    assert on_plan_body["refund"] is None
