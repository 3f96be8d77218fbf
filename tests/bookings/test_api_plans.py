"""The reseller API shows what a booking is paid on and what it owes: its plan, instalments,
what was paid, what is due now, whether anything is overdue, the transfer reference; and the
catalogue shows each class's plan and tax treatment. Every body is checked against the
OpenAPI document, and the list costs the same queries for one booking or thirty."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organisation
from bookings.models import Booking, Instalment
from bookings.services import Actor, booking_confirm
from bookings.transfers import payment_record_transfer
from marketplace.models import SlotClass, TaxTreatment
from tests.bookings.api_helpers import (
    BOOKINGS,
    CANCEL,
    CONFIRM,
    DETAIL,
    keyed_client,
    place_hold,
    service_hold,
    url,
)
from tests.bookings.plan_helpers import DECK_MASS_G, deck_class, deck_plan
from tests.factories import MissionFactory, ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema, openapi_document

pytestmark = pytest.mark.django_db

MISSIONS = "/api/v1/missions/"
MISSION = "/api/v1/missions/{code}/"


def money(amount: int, currency: str = "JPY") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def detail(client: APIClient, reference: str) -> dict[str, Any]:
    body: dict[str, Any] = assert_matches_schema(
        client.get(url(DETAIL, reference)), DETAIL, "get", 200
    )
    return body


def record_transfer(booking: Booking, instalment: Instalment, amount: int) -> None:
    """Money received by bank transfer against ``instalment``, recorded as sales do."""
    payment_record_transfer(
        booking_id=booking.pk,
        amount=amount,
        currency=instalment.currency,
        received_at=timezone.now(),
        bank_reference=f"{booking.payment_reference} {instalment.position} {amount}",
        actor=Actor.system("test"),
        instalment_id=instalment.pk,
    )


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def client(reseller: Organisation) -> APIClient:
    return keyed_client(reseller)


def test_a_plan_hold_shows_its_deposit_due_and_its_instalments(client: APIClient) -> None:
    deck = deck_class()
    booking = place_hold(client, deck, mass_g=DECK_MASS_G)  # ¥450,000,000

    assert booking["payment_plan"] == {"name": "Deck: 20% and three", "deposit_percent": 20}
    positions = [(i["position"], i["kind"], i["label"]) for i in booking["instalments"]]
    assert positions == [
        (0, "deposit", "Deposit"),
        (1, "instalment", "Build start"),
        (2, "instalment", "Payload accepted"),
        (3, "instalment", "Balance"),
    ]
    amounts = [i["amount"]["amount"] for i in booking["instalments"]]
    assert amounts == [90_000_000, 135_000_000, 135_000_000, 90_000_000]
    assert sum(amounts) == booking["price"]["amount"]
    deposit, build, accepted, balance = booking["instalments"]
    assert deposit["due_at"] == booking["hold_expires_at"]
    assert build["due_at"] is not None  # 300 days before launch
    assert accepted["due_at"] is None
    assert accepted["milestone"] == "payload_accepted"
    assert balance["due_at"] is None  # counted from the confirmation
    assert balance["milestone"] is None
    assert all(i["status"] == "due" for i in booking["instalments"])
    assert all(i["paid"] == money(0) for i in booking["instalments"])
    assert not any(i["overdue"] for i in booking["instalments"])
    assert booking["paid"] == money(0)
    assert booking["due"] == money(90_000_000)  # the deposit confirms the hold
    assert booking["overdue"] is False
    assert booking["payment_reference"].startswith("MS-" + booking["reference"])
    assert booking["bank_transfer_required"] is False  # ¥90M fits on one card payment
    assert booking["payload"]["review_status"] == "declared"


def test_a_deposit_above_the_card_limit_goes_by_bank_transfer(client: APIClient) -> None:
    booking = place_hold(client, deck_class(), mass_g=10_000)  # ¥1.8bn: a ¥360M deposit
    assert booking["due"] == money(360_000_000)
    assert booking["bank_transfer_required"] is True


def test_a_booking_paid_in_full_has_no_plan_and_owes_its_price_while_held(
    client: APIClient,
) -> None:
    small = SlotClassFactory.create(prices={"JPY": 50_000_000, "USD": 350_000_00})
    booking = place_hold(client, small, mass_g=1000)
    assert booking["payment_plan"] is None
    assert booking["instalments"] == []
    assert booking["paid"] == money(0)
    assert booking["due"] == money(50_000_000)
    assert booking["overdue"] is False
    assert booking["payment_reference"] is None
    assert booking["bank_transfer_required"] is False

    confirmed = assert_matches_schema(
        client.post(url(CONFIRM, booking["reference"]), {}, format="json"), CONFIRM, "post", 200
    )
    assert confirmed["due"] == money(0)  # on account: invoiced, not due here


def test_paid_due_and_overdue_follow_the_money_received_and_the_dates(
    client: APIClient, reseller: Organisation
) -> None:
    booking = service_hold(deck_class(), reseller, mass_g=DECK_MASS_G)
    deposit, build, _accepted, _balance = booking.instalments.order_by("position")
    record_transfer(booking, deposit, 90_000_000)
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), reason="deposit received")

    body = detail(client, booking.reference)
    assert body["status"] == "confirmed"
    assert body["paid"] == money(90_000_000)
    assert body["instalments"][0]["status"] == "paid"
    assert body["instalments"][0]["paid"] == money(90_000_000)
    assert body["due"] == money(0)
    assert body["overdue"] is False

    # Build start's date passes with a part of it paid: the rest is due and overdue.
    Instalment.objects.filter(pk=build.pk).update(due_at=timezone.now() - timedelta(days=3))
    record_transfer(booking, build, 35_000_000)
    body = detail(client, booking.reference)
    assert body["paid"] == money(125_000_000)
    assert body["due"] == money(100_000_000)
    assert body["overdue"] is True
    assert [i["overdue"] for i in body["instalments"]] == [False, True, False, False]
    assert body["instalments"][1]["paid"] == money(35_000_000)


def test_a_cancelled_plan_booking_owes_nothing_more(client: APIClient) -> None:
    booking = place_hold(client, deck_class(), mass_g=DECK_MASS_G)
    cancelled = assert_matches_schema(
        client.post(url(CANCEL, booking["reference"]), {}, format="json"),
        CANCEL,
        "post",
        200,
    )
    assert cancelled["status"] == "cancelled"
    assert cancelled["due"] == money(0)
    assert {i["status"] for i in cancelled["instalments"]} == {"cancelled"}


def plan_bookings(reseller: Organisation, deck: SlotClass, count: int) -> None:
    for _ in range(count):
        booking = service_hold(deck, reseller, mass_g=1000)
        deposit = booking.instalments.get(position=0)
        record_transfer(booking, deposit, deposit.amount // 2)


def queries(client: APIClient, **query: Any) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(BOOKINGS, query)
    assert_matches_schema(response, BOOKINGS, "get", 200)
    return len(captured)


def test_the_list_costs_the_same_queries_for_one_plan_booking_or_thirty(
    django_assert_num_queries: Any,
) -> None:
    deck = deck_class(capacity_g=200_000)
    one, thirty = ResellerFactory.create(), ResellerFactory.create()
    plan_bookings(one, deck, 1)
    plan_bookings(thirty, deck, 30)
    one_client, thirty_client = keyed_client(one), keyed_client(thirty)
    one_client.get(BOOKINGS)  # the key's first use writes last_used_at once
    thirty_client.get(BOOKINGS)

    assert queries(one_client) == queries(thirty_client, page_size=30)
    # key, count, page, instalments, payments, refunds
    with django_assert_num_queries(6):
        response = thirty_client.get(BOOKINGS, {"page_size": 30})
    page = assert_matches_schema(response, BOOKINGS, "get", 200)
    assert len(page["results"]) == 30
    assert all(b["paid"]["amount"] > 0 for b in page["results"])


def test_the_catalogue_shows_each_class_plan_and_tax_treatment(
    api_client: APIClient,
) -> None:
    mission = MissionFactory.create(code="M7")
    planned = deck_class(mission=mission, tax_treatment=TaxTreatment.ZERO_RATED)
    in_full = SlotClassFactory.create(mission=mission)

    body = assert_matches_schema(
        api_client.get(f"/api/v1/missions/{mission.code}/"), MISSION, "get", 200
    )
    classes = {item["id"]: item for item in body["slot_classes"]}
    assert classes[in_full.pk]["payment_plan"] is None
    assert classes[in_full.pk]["tax_treatment"] == "standard"
    assert classes[planned.pk]["tax_treatment"] == "zero_rated"
    plan = classes[planned.pk]["payment_plan"]
    assert plan["name"] == "Deck: 20% and three"
    assert plan["deposit_percent"] == 20
    assert plan["instalments"] == [
        {
            "position": 1,
            "label": "Build start",
            "percent": 30,
            "falls_due": "before_launch",
            "days": 300,
            "milestone": None,
        },
        {
            "position": 2,
            "label": "Payload accepted",
            "percent": 30,
            "falls_due": "milestone",
            "days": None,
            "milestone": "payload_accepted",
        },
        {
            "position": 3,
            "label": "Balance",
            "percent": 20,
            "falls_due": "after_booking",
            "days": 30,
            "milestone": None,
        },
    ]
    listed = assert_matches_schema(
        api_client.get("/api/v1/missions/"), "/api/v1/missions/", "get", 200
    )
    assert any(item["code"] == "M7" for item in listed["results"])


def test_the_catalogue_costs_the_same_queries_with_plans(api_client: APIClient) -> None:
    plan = deck_plan()
    for _ in range(2):
        deck_class(mission=MissionFactory.create(), plan=plan)
    with CaptureQueriesContext(connection) as few:
        assert api_client.get("/api/v1/missions/").status_code == 200
    for index in range(6):
        deck_class(mission=MissionFactory.create(), plan=deck_plan(name=f"Plan {index}"))
    with CaptureQueriesContext(connection) as more:
        assert api_client.get("/api/v1/missions/").status_code == 200
    assert len(few) == len(more)


def test_the_document_declares_the_new_fields_strictly() -> None:
    schemas = openapi_document()["components"]["schemas"]
    for name in ("Instalment", "BookingPaymentPlan"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    booking = schemas["Booking"]["properties"]
    assert booking["payment_plan"]["oneOf"][1] == {"$ref": "#/components/schemas/NullEnum"}
    assert booking["payment_reference"]["nullable"] is True
    assert booking["overdue"]["type"] == booking["bank_transfer_required"]["type"] == "boolean"
    assert schemas["InstalmentStatusEnum"]["enum"] == ["due", "paid", "cancelled"]
    assert schemas["InstalmentKindEnum"]["enum"] == ["full", "deposit", "instalment"]
    slot_class = schemas["SlotClass"]
    assert {"payment_plan", "tax_treatment"} <= set(slot_class["required"])
    assert slot_class["properties"]["payment_plan"]["nullable"] is True
    assert schemas["TaxTreatmentEnum"]["enum"] == ["standard", "reduced", "zero_rated", "exempt"]
