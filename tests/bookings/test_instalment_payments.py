"""Paying a payment plan: the deposit by card confirms, later instalments by card or (above
the card limit) by bank transfer recorded by sales in the admin; duplicates, under- and
overpayments, and refunds across card and transfer payments."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.roles import OPERATIONS, SALES, SALES_MANAGER
from bookings import gateways, payments, plans, transfers
from bookings.admin_payments import major_to_minor
from bookings.gateways import IntentSnapshot
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    Instalment,
    InstalmentStatus,
    OutboxMessage,
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundReason,
    RefundStatus,
)
from bookings.services import Actor
from marketplace.models import PaymentPlan
from marketplace.money import STRIPE_MAX_CHARGE_MINOR, Money
from tests.admin.helpers import admin_client_with_mfa, staff_user
from tests.bookings.plan_helpers import deck_class, plan_hold
from tests.factories import SlotClassFactory
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    VISA,
    _stripe_sandbox_process,
    event_body,
    intent_event,
    sandbox,
    signature_header,
    stripe_sandbox,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_sandbox")]

SALES_ACTOR = Actor.system("test:sales")


def logged_in(user: User | None) -> Client:
    assert user is not None
    client = Client()
    client.force_login(user)
    return client


def flash(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def pay_by_card(client: Client, booking: Booking, capture: Any) -> Any:
    token = sandbox().card_token(VISA)
    with capture(execute=True):
        return client.post(reverse("payments:card", args=[booking.reference]), {"token": token})


def rows(booking: Booking) -> list[Instalment]:
    return list(Instalment.objects.filter(booking=booking).order_by("position"))


def record(booking: Booking, amount: int, bank_reference: str) -> transfers.TransferOutcome:
    """A transfer in yen received now, recorded by sales through the service."""
    return transfers.payment_record_transfer(
        booking_id=booking.pk,
        amount=amount,
        currency="JPY",
        received_at=timezone.now(),
        bank_reference=bank_reference,
        actor=SALES_ACTOR,
    )


def transfer_url(booking: Booking) -> str:
    return reverse("admin:bookings_booking_record_transfer", args=[booking.pk])


def transfer_form(**overrides: Any) -> dict[str, str]:
    data = {
        "instalment": "",
        "currency": "JPY",
        "amount": "135,000,000",
        "received_on": timezone.localdate().isoformat(),
        "bank_reference": "MS-TEST",
        "note": "Statement line 42",
    }
    data.update(overrides)
    return data


@pytest.fixture
def sales_client() -> Client:
    return admin_client_with_mfa(staff_user(role=SALES, email="sales-h1@moonslot.example"))


# --- the must-show scenario ---------------------------------------------------------------


def test_deck_plan_in_yen_deposit_by_card_then_instalments_by_transfer_through_the_admin(
    django_capture_on_commit_callbacks, sales_client
) -> None:
    booking = plan_hold()
    customer = logged_in(booking.created_by)
    assert [i.amount for i in rows(booking)] == [90_000_000, 135_000_000, 135_000_000, 90_000_000]
    assert sum(i.amount for i in rows(booking)) == booking.price_amount == 450_000_000

    # The pay page asks for the deposit, by card.
    page = customer.get(reverse("payments:pay", args=[booking.reference])).content.decode()
    assert "¥90,000,000" in page
    assert 'id="card-form"' in page

    response = pay_by_card(customer, booking, django_capture_on_commit_callbacks)

    assert response.status_code == 302
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    deposit_payment = Payment.objects.get(booking=booking)
    assert (deposit_payment.status, deposit_payment.amount) == (PaymentStatus.SUCCEEDED, 90_000_000)
    assert deposit_payment.instalment_id == rows(booking)[0].pk
    intent = sandbox().intent(str(deposit_payment.stripe_payment_intent_id))
    assert (intent["amount"], intent["status"]) == (90_000_000, "succeeded")
    assert [i.status for i in rows(booking)] == ["paid", "due", "due", "due"]

    # The next instalment (¥135,000,000) is above the card limit: bank transfer only.
    page = customer.get(reverse("payments:pay", args=[booking.reference])).content.decode()
    assert 'id="card-form"' not in page
    assert "¥135,000,000" in page
    assert booking.payment_reference is not None
    assert booking.payment_reference in page
    assert "Demo Bank" in page

    # Sales record the transfer for it; a double submit records it once.
    with django_capture_on_commit_callbacks(execute=True):
        first = sales_client.post(
            transfer_url(booking), transfer_form(bank_reference=booking.payment_reference)
        )
        second = sales_client.post(
            transfer_url(booking), transfer_form(bank_reference=booking.payment_reference)
        )
    assert first.status_code == 302
    assert any("Recorded ¥135,000,000" in m for m in flash(first))
    assert any("already recorded" in m for m in flash(second))
    transfers_made = Payment.objects.filter(booking=booking, provider=PaymentProvider.BANK_TRANSFER)
    assert transfers_made.count() == 1
    assert [i.status for i in rows(booking)] == ["paid", "paid", "due", "due"]
    assert (
        BookingEvent.objects.filter(booking=booking, type=EventType.TRANSFER_RECORDED).count() == 1
    )

    # An overpayment on the next one is recorded, flagged and shown, not absorbed.
    response = sales_client.post(
        transfer_url(booking),
        transfer_form(amount="135,000,500", bank_reference="BANK-TX-2"),
    )
    assert any("Overpaid: ¥500" in m for m in flash(response))
    third = rows(booking)[2]
    assert (third.status, third.amount_paid, third.overpaid) == ("paid", 135_000_500, 500)
    assert rows(booking)[3].amount_paid == 0  # nothing moved on silently
    assert BookingEvent.objects.filter(booking=booking, type=EventType.PAYMENT_OVERPAID).exists()
    detail = customer.get(reverse("bookings:detail", args=[booking.reference])).content.decode()
    assert "Overpaid by ¥500" in detail
    assert "We have received ¥500 more than was owed" in detail
    admin_page = sales_client.get(transfer_url(booking)).content.decode()
    assert "Overpaid by ¥500" in admin_page


def test_a_150_million_yen_deposit_is_offered_by_bank_transfer_only(
    django_capture_on_commit_callbacks,
) -> None:
    booking = plan_hold(deck_class(price_per_kg=300_000_000))
    assert rows(booking)[0].amount == 150_000_000 > STRIPE_MAX_CHARGE_MINOR
    customer = logged_in(booking.created_by)

    page = customer.get(reverse("payments:pay", args=[booking.reference])).content.decode()
    assert 'id="card-form"' not in page
    assert "js.stripe.com" not in page
    assert "¥150,000,000" in page
    assert "Payment by bank transfer" in page
    assert plans.payment_reference_for(booking.reference) in page
    assert "Demo Bank" in page

    response = pay_by_card(customer, booking, django_capture_on_commit_callbacks)
    assert response["Location"] == reverse("payments:pay", args=[booking.reference])
    assert any("above what a single card payment can carry" in m for m in flash(response))
    assert not Payment.objects.filter(booking=booking).exists()
    assert sandbox().intents() == []

    # The transfer of the deposit confirms the booking.
    outcome = record(booking, 150_000_000, str(booking.payment_reference))
    assert outcome.confirmed
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED


# --- card payments per instalment -------------------------------------------------------


def test_a_second_card_authorisation_for_the_same_instalment_is_given_back() -> None:
    booking = plan_hold(deck_class(price_per_kg=20_000_000))  # ¥50M: all by card
    user = booking.created_by
    assert user is not None
    first = payments.payment_card_start(
        booking_id=booking.pk, actor=Actor.for_user(user), token=sandbox().card_token(VISA)
    )
    assert first.status == PaymentStatus.AUTHORISED
    # A second tab opened before the first finished: its attempt is for the same instalment.
    second = Payment.objects.create(
        booking=booking,
        provider=PaymentProvider.STRIPE,
        attempt=2,
        instalment=first.instalment,
        amount=first.amount,
        currency="JPY",
        idempotency_key="second-tab",
    )
    intent = IntentSnapshot(
        id="pi_second",
        status="requires_capture",
        amount=second.amount,
        currency="JPY",
        metadata={"payment_id": str(second.pk), "booking_reference": booking.reference},
    )
    payments.payment_apply_intent(payment_id=second.pk, intent=intent)

    assert Payment.objects.get(pk=second.pk).status == PaymentStatus.AUTHORISED
    assert OutboxMessage.objects.filter(
        topic="payment.release", payload__payment_id=second.pk
    ).exists()
    assert not OutboxMessage.objects.filter(
        topic="payment.capture", payload__payment_id=second.pk
    ).exists()


def test_a_later_instalment_below_the_card_limit_is_paid_by_card_on_a_confirmed_booking(
    django_capture_on_commit_callbacks,
) -> None:
    booking = plan_hold(deck_class(price_per_kg=20_000_000))  # ¥50M
    customer = logged_in(booking.created_by)
    pay_by_card(customer, booking, django_capture_on_commit_callbacks)
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED

    page = customer.get(reverse("payments:pay", args=[booking.reference])).content.decode()
    assert "Build start" in page
    assert "¥15,000,000" in page
    pay_by_card(customer, booking, django_capture_on_commit_callbacks)

    assert [i.status for i in rows(booking)] == ["paid", "paid", "due", "due"]
    amounts = list(
        Payment.objects.filter(booking=booking).order_by("attempt").values_list("amount", flat=True)
    )
    assert amounts == [10_000_000, 15_000_000]


# --- transfers: the service ------------------------------------------------------------------


def test_an_underpaid_instalment_stays_due_showing_what_is_still_owed() -> None:
    booking = plan_hold(deck_class(price_per_kg=300_000_000))
    outcome = record(booking, 100_000_000, "PART 1")
    assert outcome.still_owed == Money(50_000_000, "JPY")
    assert not outcome.confirmed
    deposit = rows(booking)[0]
    assert (deposit.status, deposit.amount_paid, deposit.outstanding) == (
        "due",
        100_000_000,
        50_000_000,
    )
    summary = plans.booking_money_summary(booking)
    assert [i.position for i in summary.underpaid] == [0]
    page = logged_in(booking.created_by).get(reverse("bookings:detail", args=[booking.reference]))
    assert "Underpaid: ¥50,000,000 still owed." in page.content.decode()

    record(booking, 50_000_000, "PART 2")
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"currency": "USD"}, "priced in JPY"),
        ({"amount": 0}, "more than zero"),
        ({"bank_reference": "  "}, "reference"),
    ],
)
def test_transfers_that_cannot_be_recorded_are_refused_with_a_reason(changes, message) -> None:
    booking = plan_hold()
    arguments: dict[str, Any] = {
        "booking_id": booking.pk,
        "amount": 90_000_000,
        "currency": "JPY",
        "received_at": timezone.now(),
        "bank_reference": "REF",
        "actor": SALES_ACTOR,
        **changes,
    }
    with pytest.raises(transfers.TransferRefused, match=message):
        transfers.payment_record_transfer(**arguments)
    assert not Payment.objects.exists()


def test_a_transfer_for_a_lapsed_hold_is_refused() -> None:
    now = timezone.now()
    booking = plan_hold(now=now - timedelta(hours=2), hold_minutes=60)
    with pytest.raises(transfers.TransferRefused, match="new hold"):
        transfers.payment_record_transfer(
            booking_id=booking.pk,
            amount=90_000_000,
            currency="JPY",
            received_at=now,
            bank_reference="LATE",
            actor=SALES_ACTOR,
            now=now,
        )


def test_a_transfer_pays_a_booking_in_full_without_a_plan_and_confirms_it() -> None:
    booking = plan_hold(SlotClassFactory.create())  # ¥450M, no plan, over the card limit
    page = logged_in(booking.created_by).get(reverse("payments:pay", args=[booking.reference]))
    assert plans.payment_reference_for(booking.reference) in page.content.decode()
    outcome = record(booking, 450_000_000, "FULL")
    assert outcome.confirmed
    assert outcome.overpaid.amount == 0
    assert outcome.instalment is None


# --- cancellation across card and transfer payments -----------------------------------------


def test_cancelling_refunds_the_card_through_stripe_and_records_the_transfer_refund_for_sales(
    django_capture_on_commit_callbacks,
) -> None:
    booking = plan_hold(deck_class(price_per_kg=20_000_000))  # ¥50M; deposit ¥10M by card
    customer = logged_in(booking.created_by)
    pay_by_card(customer, booking, django_capture_on_commit_callbacks)
    record(booking, 15_000_000, "BUILD")
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED

    with django_capture_on_commit_callbacks(execute=True):
        cancelled = payments.booking_cancel_and_refund(booking_id=booking.pk, actor=SALES_ACTOR)

    # 90% of the price is ¥45M, but only ¥25M was ever paid.
    assert cancelled.refund_amount == 25_000_000
    card_refund = Refund.objects.get(payment__provider=PaymentProvider.STRIPE)
    transfer_refund = Refund.objects.get(payment__provider=PaymentProvider.BANK_TRANSFER)
    assert (card_refund.amount, card_refund.status) == (10_000_000, RefundStatus.SUCCEEDED)
    assert (transfer_refund.amount, transfer_refund.status) == (15_000_000, RefundStatus.PENDING)
    assert transfer_refund.reason == RefundReason.CANCELLATION
    assert not transfer_refund.stripe_refund_id
    assert [i.status for i in rows(booking)] == ["paid", "paid", "cancelled", "cancelled"]

    paid_out = transfers.refund_record_paid_out(
        refund_id=transfer_refund.pk, actor=SALES_ACTOR, bank_reference="OUT-1"
    )
    assert paid_out.status == RefundStatus.SUCCEEDED
    assert BookingEvent.objects.filter(booking=booking, type=EventType.REFUND_PAID_OUT).exists()


# --- the admin page ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("135,000,000", "JPY", 135_000_000),
        ("1,234.56", "USD", 123_456),
        ("0.1", "USD", 10),
        ("150000000", "JPY", 150_000_000),
    ],
)
def test_amounts_in_major_units_convert_exactly(text, currency, minor) -> None:
    assert major_to_minor(text, currency) == minor


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": "1.5"}, "JPY has no smaller unit"),
        ({"amount": "abc"}, "Enter the amount as digits"),
        ({"amount": "-5"}, "more than zero"),
        ({"currency": "USD"}, "priced in JPY"),
        ({"received_on": "2999-01-01"}, "cannot be received in the future"),
        ({"bank_reference": ""}, "This field is required"),
    ],
)
def test_the_admin_form_explains_what_is_wrong(sales_client, changes, message) -> None:
    booking = plan_hold()
    response = sales_client.post(transfer_url(booking), transfer_form(**changes))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Payment.objects.exists()


def test_the_transfer_page_needs_the_permission_to_record_payments(
    django_assert_max_num_queries,
) -> None:
    booking = plan_hold()
    ops = admin_client_with_mfa(staff_user(role=OPERATIONS, email="ops-h1@moonslot.example"))
    assert ops.get(transfer_url(booking)).status_code == 403
    sales = admin_client_with_mfa(staff_user(role=SALES, email="sales-h1b@moonslot.example"))
    change = sales.get(reverse("admin:bookings_booking_change", args=[booking.pk]))
    assert transfer_url(booking) in change.content.decode()
    with django_assert_max_num_queries(14):
        page = sales.get(transfer_url(booking))
    assert page.status_code == 200
    assert booking.reference in page.content.decode()


def test_replayed_webhooks_and_intent_updates_count_a_card_instalment_once(
    django_capture_on_commit_callbacks,
) -> None:
    booking = plan_hold(deck_class(price_per_kg=20_000_000))
    pay_by_card(logged_in(booking.created_by), booking, django_capture_on_commit_callbacks)
    payment = Payment.objects.get(booking=booking)
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    body = event_body(intent_event(intent, "payment_intent.succeeded", event_id="evt_replayed"))

    with django_capture_on_commit_callbacks(execute=True):
        for _delivery in range(3):
            response = Client().post(
                "/stripe/webhook/",
                data=body,
                content_type="application/json",
                headers={"Stripe-Signature": signature_header(body)},
            )
            assert response.status_code == 200
        payments.payment_apply_intent(
            payment_id=payment.pk, intent=gateways.intent_retrieve(intent["id"])
        )

    deposit = rows(booking)[0]
    assert (deposit.status, deposit.amount_paid) == (InstalmentStatus.PAID, 10_000_000)
    assert Payment.objects.filter(booking=booking).count() == 1
    assert not Refund.objects.filter(payment__booking=booking).exists()


def test_the_booking_page_of_a_plan_costs_the_same_queries_whatever_its_instalments() -> None:
    one = plan_hold(deck_class(plan=PaymentPlan.objects.create(name="All", deposit_percent=100)))
    four = plan_hold()
    assert (len(rows(one)), len(rows(four))) == (1, 4)
    counts = []
    for booking in (one, four):
        client = logged_in(booking.created_by)
        url = reverse("bookings:detail", args=[booking.reference])
        client.get(url)  # warm the session and content types
        with CaptureQueriesContext(connection) as queries:
            page = client.get(url)
        assert page.status_code == 200
        assert "Payment plan" in page.content.decode()
        counts.append(len(queries.captured_queries))
    # The plan panel adds its instalments, payments and refunds, once each.
    assert counts[0] == counts[1] <= 7 + 3 + 2


def test_the_sales_manager_records_a_transfer_refund_as_paid_out_in_the_admin(
    django_capture_on_commit_callbacks,
) -> None:
    booking = plan_hold(SlotClassFactory.create())  # ¥450M paid in full by transfer
    record(booking, 450_000_000, "FULL")
    with django_capture_on_commit_callbacks(execute=True):
        payments.booking_cancel_and_refund(booking_id=booking.pk, actor=SALES_ACTOR)
    refund = Refund.objects.get(payment__booking=booking)
    assert refund.status == RefundStatus.PENDING
    payout_url = reverse("admin:bookings_booking_refund_paid_out", args=[booking.pk, refund.pk])
    change_url = reverse("admin:bookings_booking_change", args=[booking.pk])

    sales = admin_client_with_mfa(staff_user(role=SALES))
    assert payout_url not in sales.get(change_url).content.decode()
    assert sales.post(payout_url, {"bank_reference": "OUT-9"}).status_code == 403

    manager = admin_client_with_mfa(staff_user(role=SALES_MANAGER))
    assert payout_url in manager.get(change_url).content.decode()
    refused = manager.post(payout_url, {"bank_reference": "  "})
    assert refused.status_code == 200
    assert "This field is required." in refused.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        done = manager.post(payout_url, {"bank_reference": "OUT-9"})

    assert done.status_code == 302
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SUCCEEDED
    assert "OUT-9" in refund.note
    assert BookingEvent.objects.filter(booking=booking, type=EventType.REFUND_PAID_OUT).count() == 1
    # Once paid out, the page only says so.
    again = manager.post(payout_url, {"bank_reference": "OUT-9"})
    assert again.status_code == 302
    assert BookingEvent.objects.filter(booking=booking, type=EventType.REFUND_PAID_OUT).count() == 1
