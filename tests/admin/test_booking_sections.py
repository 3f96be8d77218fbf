"""The booking page's sections, read through the admin: payments with their refunds, the
instalments with overdue and under/overpaid marks, billing documents, the payload review
and its history, and the booking's lines across manifest versions, at a constant number of
queries however much history the booking has."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from bookings.admin_services import payload_review_change
from bookings.manifests import manifest_build
from bookings.models import (
    BillingDocument,
    Booking,
    BookingStatus,
    Instalment,
    Refund,
)
from bookings.services import Actor, booking_confirm
from tests.admin.helpers import admin_client_with_mfa, bulk_bookings
from tests.admin.helpers import record_payment as pay
from tests.bookings.plan_helpers import plan_hold
from tests.factories import OrganisationFactory, SlotClassFactory

pytestmark = pytest.mark.django_db


def page_of(client: Client, booking: Booking) -> Any:
    response = client.get(f"/admin/bookings/booking/{booking.pk}/change/")
    assert response.status_code == 200
    return response


def confirmed_plan_booking(sales: User) -> tuple[Booking, list[Instalment]]:
    booking = plan_hold()
    booking_confirm(booking_id=booking.pk, actor=Actor.for_user(sales), reason="deposit by wire")
    return booking, list(booking.instalments.order_by("position"))


def test_payments_refunds_instalments_and_documents_are_listed(sales: User) -> None:
    client = admin_client_with_mfa(sales)
    booking, instalments = confirmed_plan_booking(sales)
    deposit, build_start = instalments[0], instalments[1]
    now = timezone.now()
    # The deposit came in ¥1,000 short (due tomorrow); the build-start instalment is past due
    # and unpaid.
    Instalment.objects.filter(pk=deposit.pk).update(
        amount_paid=deposit.amount - 1_000, due_at=now + timedelta(days=1)
    )
    Instalment.objects.filter(pk=build_start.pk).update(due_at=now - timedelta(days=3))
    transfer = pay(
        booking,
        deposit.amount - 1_000,
        attempt=1,
        instalment=deposit,
        bank_reference="MUFG 88-1234",
    )
    twice = pay(booking, 5_000, attempt=2, amount_refunded=5_000)
    Refund.objects.create(
        payment=twice,
        amount=5_000,
        currency="JPY",
        reason="duplicate",
        status="succeeded",
        actor="staff:finance@moonslot.example",
    )
    receipt = BillingDocument.objects.create(
        number="RCT-2026-000017",
        kind="receipt",
        booking=booking,
        payment=transfer,
        currency="JPY",
        total_amount=transfer.amount,
        buyer_name="Selene Robotics",
        pdf=b"%PDF-1.7 test",
    )
    BillingDocument.objects.create(
        number="RCT-2026-000018",
        kind="receipt",
        booking=booking,
        payment=twice,
        currency="JPY",
        total_amount=twice.amount,
        buyer_name="Selene Robotics",
    )

    response = page_of(client, booking)
    page = response.content.decode()

    assert "MUFG 88-1234" in page
    assert "Bank transfer" in page
    assert "¥89,999,000" in page  # the transfer, ¥90,000,000 deposit less ¥1,000
    assert "Paid twice" in page  # the refund's reason under its payment
    assert "underpaid: ¥1,000 short" in page
    assert "flag-overdue" in page
    assert "RCT-2026-000017" in page
    assert f'href="/admin/bookings/billingdocument/{receipt.pk}/change/"' in page
    assert f'href="/admin/bookings/billingdocument/{receipt.pk}/pdf/"' in page
    assert "PDF being built" in page  # the second receipt has no PDF yet
    money = response.context["section_money"]
    assert money.paid.amount == deposit.amount - 1_000 + 5_000
    assert money.refunded.amount == 5_000
    rows = response.context["section_instalments"]
    assert [row.overdue for row in rows] == [False, True, False, False]
    assert rows[0].underpaid is not None
    assert rows[0].underpaid.amount == 1_000


def test_an_overpaid_instalment_is_marked(sales: User) -> None:
    client = admin_client_with_mfa(sales)
    booking, instalments = confirmed_plan_booking(sales)
    deposit = instalments[0]
    Instalment.objects.filter(pk=deposit.pk).update(
        amount_paid=deposit.amount + 2_500, status="paid", paid_at=timezone.now()
    )

    page = page_of(client, booking).content.decode()

    assert "overpaid by ¥2,500" in page


def test_the_payload_review_and_its_history_are_shown(sales: User, operations: User) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000)
    (booking,) = bulk_bookings(deck, OrganisationFactory.create(), 1, review_status="data_complete")
    payload_review_change(
        booking_id=booking.pk,
        to_status="safety_review",
        actor=Actor.for_user(operations),
        reason="Lithium cells, 80 Wh",
    )

    response = page_of(admin_client_with_mfa(sales), booking)
    page = response.content.decode()

    assert "Lithium cells, 80 Wh" in page
    assert "data_complete → safety_review" in page
    assert "ops@moonslot.example" in page
    assert [e.type for e in response.context["section_review_history"]] == [
        "payload.review_changed"
    ]


def test_manifest_lines_group_the_versions_that_list_the_booking_alike(sales: User) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000)
    customer = OrganisationFactory.create()
    (booking,) = bulk_bookings(deck, customer, 1, status=BookingStatus.CONFIRMED, mass_g=2_000)
    mission_id = deck.mission_id
    first = manifest_build(mission_id=mission_id, trigger="test")
    bulk_bookings(deck, customer, 1, status=BookingStatus.CONFIRMED)  # another line: v2
    manifest_build(mission_id=mission_id, trigger="test")
    Booking.objects.filter(pk=booking.pk).update(mass_g=3_000)  # this line changes: v3
    manifest_build(mission_id=mission_id, trigger="test")
    (other,) = bulk_bookings(deck, customer, 1)  # a hold is not manifested

    response = page_of(admin_client_with_mfa(sales), booking)
    runs = response.context["section_manifest_runs"]
    page = response.content.decode()

    assert first is not None
    assert [(run.versions, run.line["mass_g"]) for run in runs] == [("v3", 3_000), ("v1–v2", 2_000)]
    assert runs[0].line["reference"] == booking.reference
    assert deck.mission.code in page
    assert "v1–v2" in page
    assert page_of(admin_client_with_mfa(sales), other).context["section_manifest_runs"] == []


def test_the_booking_page_costs_the_same_number_of_queries_however_long_its_history(
    sales: User, django_assert_max_num_queries: Any
) -> None:
    client = admin_client_with_mfa(sales)
    booking, instalments = confirmed_plan_booking(sales)
    mission_id = booking.slot_class.mission_id
    customer = OrganisationFactory.create()

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            page_of(client, booking)
        return len(captured)

    manifest_build(mission_id=mission_id, trigger="test")
    pay(booking, 1_000, attempt=1, instalment=instalments[0])
    page_of(client, booking)  # the first view after signing in also touches the session
    small = count()
    for attempt in range(2, 12):
        payment = pay(booking, 1_000, attempt=attempt, amount_refunded=100)
        Refund.objects.create(
            payment=payment, amount=100, currency="JPY", reason="goodwill", actor="test"
        )
        bulk_bookings(booking.slot_class, customer, 1, status=BookingStatus.CONFIRMED)
        manifest_build(mission_id=mission_id, trigger="test")
    large = count()

    assert small == large
    # The admin's own page (session, user, permissions, the booking, its inlines and
    # fields) and the sections: events, payload, instalments, payments, refunds,
    # documents, manifest lines.
    with django_assert_max_num_queries(21):
        page_of(client, booking)
