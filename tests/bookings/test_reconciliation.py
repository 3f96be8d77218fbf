"""The reconciliation sweep: what a lost webhook or a dropped request left open is asked of
Stripe and finished as the webhook would have, with the same idempotency keys."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from bookings import gateways, payments
from bookings.models import (
    Booking,
    BookingStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundReason,
)
from bookings.services import Actor, booking_cancel
from bookings.tasks import payments_reconcile_task
from config.celery import app as celery_app
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    THREE_D_SECURE,
    _stripe_sandbox_process,
    held_web_booking,
    sandbox,
    stripe_sandbox,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_sandbox")]


def later(minutes: int = 11) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


def three_d_secure_done_in_the_browser(booking: Booking) -> Payment:
    assert booking.created_by is not None
    payment = payments.payment_card_start(
        booking_id=booking.pk,
        actor=Actor.for_user(booking.created_by),
        token=sandbox().card_token(THREE_D_SECURE),
    )
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    sandbox().authenticate(intent["id"], intent["client_secret"])
    return payment


def test_a_payment_whose_webhook_never_came_is_picked_up(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(hold_minutes=30)
    payment = three_d_secure_done_in_the_browser(booking)
    mail.outbox.clear()

    # Too young: the webhook may still be on its way.
    assert payments.payments_reconcile().refreshed == 0
    with django_capture_on_commit_callbacks(execute=True):
        report = payments.payments_reconcile(now=later())

    assert report.refreshed == 1
    assert report.errors == 0
    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert booking.status == BookingStatus.CONFIRMED
    assert sandbox().intent(str(payment.stripe_payment_intent_id))["status"] == "succeeded"
    assert [m.subject for m in mail.outbox] == [
        f"[Moonslot] Booking {booking.reference} is confirmed",
        f"[Moonslot] Receipt {payment.documents.get().number} for booking {booking.reference}",
    ]
    # Nothing is left open, so the next sweep does nothing.
    assert payments.payments_reconcile(now=later(20)).refreshed == 0


def test_an_attempt_whose_request_died_is_resent_with_its_key_and_charged_once(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(price=1_200_00, currency="USD", hold_minutes=30)
    payment = Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        stripe_payment_method_id="pm_card_visa",
        idempotency_key="moonslot:died:1",
    )
    # Stripe had authorised it before the connection dropped.
    first = gateways.intent_create_and_confirm(
        amount=payment.amount,
        currency=payment.currency,
        payment_method="pm_card_visa",
        metadata=payments._intent_metadata(payment),
        idempotency_key=payment.idempotency_key,
    )

    with django_capture_on_commit_callbacks(execute=True):
        payments.payments_reconcile(now=later())

    payment.refresh_from_db()
    assert payment.stripe_payment_intent_id == first.id
    assert payment.status == PaymentStatus.SUCCEEDED
    assert [i["id"] for i in sandbox().intents()] == [first.id]
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED


def test_an_attempt_that_never_reached_stripe_is_closed_without_charging() -> None:
    booking = held_web_booking()
    payment = Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        idempotency_key="moonslot:lost:1",
    )
    payments.payments_reconcile(now=later())
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "not_submitted")
    assert sandbox().intents() == []


def test_an_abandoned_three_d_secure_is_released_once_its_hold_lapses(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    assert booking.created_by is not None
    payment = payments.payment_card_start(
        booking_id=booking.pk,
        actor=Actor.for_user(booking.created_by),
        token=sandbox().card_token(THREE_D_SECURE),
    )
    Booking.objects.filter(pk=booking.pk).update(
        hold_expires_at=timezone.now() - timedelta(minutes=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        report = payments.payments_reconcile(now=later())
    assert report.released == 1
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CANCELED
    assert sandbox().intent(str(payment.stripe_payment_intent_id))["status"] == "canceled"


def test_a_cancelled_booking_still_owed_its_refund_gets_it(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(price=1_000_000, currency="JPY")
    assert booking.created_by is not None
    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=Actor.for_user(booking.created_by),
            payment_method="pm_card_visa",
        )
    # Cancelled through a path that does not refund (the admin, the API).
    booking_cancel(booking_id=booking.pk, actor=Actor.system("staff:sales"))
    payment = booking.payments.get()

    with django_capture_on_commit_callbacks(execute=True):
        report = payments.payments_reconcile(now=later())
        again = payments.payments_reconcile(now=later())

    assert report.refunded_bookings == 1
    assert again.refunded_bookings == 0
    assert Refund.objects.get().reason == RefundReason.CANCELLATION
    assert sandbox().refunded_total(str(payment.stripe_payment_intent_id)) == 900_000


def test_the_sweep_is_a_beat_task() -> None:
    schedule = celery_app.conf.beat_schedule["reconcile-payments"]
    assert schedule["task"] == payments_reconcile_task.name
    assert payments_reconcile_task.delay().get() == {
        "refreshed": 0,
        "released": 0,
        "refunded_bookings": 0,
        "errors": 0,
    }
