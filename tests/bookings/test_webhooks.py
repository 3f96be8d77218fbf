"""The Stripe webhook: signed exactly as Stripe signs, recorded once, processed through the
outbox, and order-proof. Events are the ones localstripe generated for real intents."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from bookings import gateways, payments
from bookings.models import (
    Booking,
    BookingStatus,
    OutboxMessage,
    Payment,
    PaymentStatus,
    Refund,
    RefundReason,
    StripeEvent,
)
from bookings.services import Actor, bookings_expire
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    THREE_D_SECURE,
    WEBHOOK_SECRET,
    _stripe_sandbox_process,
    event_body,
    held_web_booking,
    intent_event,
    sandbox,
    signature_header,
    stripe_sandbox,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_sandbox")]

URL = "/stripe/webhook/"


def deliver(body: str, header: str | None = "sign") -> Any:
    headers = {}
    if header == "sign":
        headers["Stripe-Signature"] = signature_header(body)
    elif header is not None:
        headers["Stripe-Signature"] = header
    return Client().post(URL, data=body, content_type="application/json", headers=headers)


def subjects() -> list[str]:
    """The booking and payment e-mails; the receipts and credit notes that also go out are
    asserted in test_billing.py."""
    return [str(m.subject) for m in mail.outbox if "X-Moonslot-Document" not in m.extra_headers]


def authenticated_but_never_back(booking: Booking) -> Payment:
    """A 3-D Secure payment the customer completed in Stripe.js, whose page never posted
    back (tab closed): only Stripe knows it is authorised."""
    assert booking.created_by is not None
    payments.payment_card_start(
        booking_id=booking.pk,
        actor=Actor.for_user(booking.created_by),
        token=sandbox().card_token(THREE_D_SECURE),
    )
    payment = booking.payments.get()
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    assert sandbox().authenticate(intent["id"], intent["client_secret"]) == "requires_capture"
    return payment


def sandbox_event(type: str, intent_id: str) -> dict[str, Any]:
    (event,) = [e for e in sandbox().events(type) if e["data"]["object"]["id"] == intent_id]
    return event


def test_the_webhook_confirms_a_booking_whose_page_never_came_back(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    event = sandbox_event(
        "payment_intent.amount_capturable_updated", str(payment.stripe_payment_intent_id)
    )
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(event_body(event))

    assert response.status_code == 200
    booking.refresh_from_db()
    payment.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert payment.status == PaymentStatus.SUCCEEDED
    assert sandbox().intent(str(payment.stripe_payment_intent_id))["status"] == "succeeded"
    assert subjects() == [f"[Moonslot] Booking {booking.reference} is confirmed"]
    assert StripeEvent.objects.get(stripe_id=event["id"]).processed_at is not None


def test_the_event_is_recorded_and_queued_before_the_answer_and_processed_after_commit(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    event = sandbox_event(
        "payment_intent.amount_capturable_updated", str(payment.stripe_payment_intent_id)
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert deliver(event_body(event)).status_code == 200
    message = OutboxMessage.objects.get(topic="stripe.event")
    assert message.payload == {"stripe_event_id": StripeEvent.objects.get().pk}
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD  # nothing done inside the request
    assert len(callbacks) == 1


def test_the_same_event_ten_times_confirms_once_and_mails_once(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    event = sandbox_event(
        "payment_intent.amount_capturable_updated", str(payment.stripe_payment_intent_id)
    )
    body = event_body(event)
    mail.outbox.clear()

    answers = []
    for _ in range(10):  # each delivery is its own request, committed before the next
        with django_capture_on_commit_callbacks(execute=True):
            answers.append(deliver(body).status_code)

    assert answers == [200] * 10
    assert StripeEvent.objects.count() == 1
    assert OutboxMessage.objects.filter(topic="stripe.event").count() == 1
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert booking.events.filter(type="booking.confirmed").count() == 1
    assert subjects() == [f"[Moonslot] Booking {booking.reference} is confirmed"]


def test_a_redelivery_of_an_unprocessed_event_is_queued_again(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    event = sandbox_event(
        "payment_intent.amount_capturable_updated", str(payment.stripe_payment_intent_id)
    )
    body = event_body(event)
    # First delivery: recorded, but its processing never ran (the worker was down).
    with django_capture_on_commit_callbacks(execute=False):
        deliver(body)
    assert StripeEvent.objects.get().processed_at is None

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(body).status_code == 200

    assert StripeEvent.objects.get().processed_at is not None
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED


@pytest.mark.parametrize(
    "case",
    [
        "forged",
        "tampered",
        "stale",
        "unsigned",
        "garbled-header",
        "malformed",
        "not-an-object",
        "no-id",
    ],
)
def test_webhooks_that_do_not_verify_are_refused_and_change_nothing(
    django_capture_on_commit_callbacks, case
) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    event = sandbox_event(
        "payment_intent.amount_capturable_updated", str(payment.stripe_payment_intent_id)
    )
    body = event_body(event)
    now = int(time.time())
    requests = {
        "forged": (body, signature_header(body, secret="whsec_someone_else")),
        "tampered": (body.replace('"livemode": false', '"livemode": true'), signature_header(body)),
        "stale": (body, signature_header(body, timestamp=now - 301)),
        "unsigned": (body, None),
        "garbled-header": (body, "t=yesterday,v1=zz"),
        "malformed": ("{not json", signature_header("{not json")),
        "not-an-object": ("[1, 2]", signature_header("[1, 2]")),
        "no-id": (
            json.dumps({"object": "event", "type": "payment_intent.succeeded"}),
            signature_header(json.dumps({"object": "event", "type": "payment_intent.succeeded"})),
        ),
    }
    sent, header = requests[case]
    assert sent != body or case in ("forged", "stale", "unsigned", "garbled-header")

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(sent, header)

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()
    assert not OutboxMessage.objects.filter(topic="stripe.event").exists()
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD


def test_a_signature_just_inside_the_tolerance_is_accepted() -> None:
    body = event_body(intent_event({"id": "pi_unknown", "metadata": {}}, "payment_intent.canceled"))
    response = deliver(body, signature_header(body, timestamp=int(time.time()) - 290))
    assert response.status_code == 200


def test_the_webhook_secret_is_the_one_in_settings(settings) -> None:
    body = event_body(intent_event({"id": "pi_unknown", "metadata": {}}, "payment_intent.canceled"))
    settings.STRIPE_WEBHOOK_SECRET = "whsec_rotated"
    assert deliver(body, signature_header(body, secret=WEBHOOK_SECRET)).status_code == 400
    assert deliver(body, signature_header(body, secret="whsec_rotated")).status_code == 200


def test_only_post_is_accepted() -> None:
    assert Client().get(URL).status_code == 405


def test_events_out_of_order_never_move_a_payment_back(django_capture_on_commit_callbacks) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    intent_id = str(payment.stripe_payment_intent_id)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(event_body(sandbox_event("payment_intent.amount_capturable_updated", intent_id)))
    succeeded = sandbox_event("payment_intent.succeeded", intent_id)
    # An older "failed" for the same intent, arriving late, and "succeeded" twice over.
    stale_failure = intent_event(
        {**succeeded["data"]["object"], "status": "requires_payment_method"},
        "payment_intent.payment_failed",
        event_id="evt_late_failure",
    )
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        for event in (succeeded, stale_failure, {**succeeded, "id": "evt_second_success"}):
            assert deliver(event_body(event)).status_code == 200

    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert booking.status == BookingStatus.CONFIRMED
    assert booking.events.filter(type="booking.confirmed").count() == 1
    assert mail.outbox == []
    assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 4


def test_a_failure_event_before_any_success_records_the_decline(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    payment = authenticated_but_never_back(booking)
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    event = intent_event(intent, "payment_intent.requires_action", event_id="evt_old_action")
    with django_capture_on_commit_callbacks(execute=True):
        deliver(event_body(event))
    # The event said requires_action, but Stripe now says authorised: we act on Stripe.
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED


def test_a_request_that_died_after_stripe_authorised_is_finished_by_the_webhook(
    django_capture_on_commit_callbacks,
) -> None:
    """The attempt was written, Stripe authorised it, but the request never recorded the
    intent: the event finds the attempt by the payment id in the intent's metadata."""
    booking = held_web_booking(price=1_200_00, currency="USD")
    payment = Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        idempotency_key="died-mid-request",
        updated_at=timezone.now() - timedelta(minutes=5),
    )
    intent = gateways.intent_create_and_confirm(
        amount=payment.amount,
        currency=payment.currency,
        payment_method="pm_card_visa",
        metadata={"booking_reference": booking.reference, "payment_id": str(payment.pk)},
        idempotency_key=payment.idempotency_key,
    )
    event = sandbox_event("payment_intent.amount_capturable_updated", intent.id)

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(event_body(event)).status_code == 200

    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.stripe_payment_intent_id == intent.id
    assert payment.status == PaymentStatus.SUCCEEDED
    assert booking.status == BookingStatus.CONFIRMED


def test_metadata_pointing_at_another_booking_is_not_trusted(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    payment = Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        idempotency_key="victim",
    )
    intent = gateways.intent_create_and_confirm(
        amount=payment.amount,
        currency=payment.currency,
        payment_method="pm_card_visa",
        metadata={"booking_reference": "ZZZZZZ", "payment_id": str(payment.pk)},
        idempotency_key="other",
    )
    event = sandbox_event("payment_intent.amount_capturable_updated", intent.id)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(event_body(event))
    booking.refresh_from_db()
    payment.refresh_from_db()
    assert booking.status == BookingStatus.HELD
    assert payment.stripe_payment_intent_id is None
    # Acknowledged and done with: retrying would never make it ours.
    assert StripeEvent.objects.get().processed_at is not None


def test_events_for_intents_that_are_not_ours_are_acknowledged_and_ignored(
    django_capture_on_commit_callbacks,
) -> None:
    body = event_body(
        intent_event({"id": "pi_elsewhere", "metadata": {}}, "payment_intent.succeeded")
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(body).status_code == 200
    assert StripeEvent.objects.get().processed_at is not None
    assert not Payment.objects.exists()


def test_a_capture_made_after_the_hold_lapsed_is_refunded_in_full_and_the_customer_told(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(price=1_200_00, currency="USD")
    payment = authenticated_but_never_back(booking)
    intent_id = str(payment.stripe_payment_intent_id)
    # The hold lapses and is swept; then someone captures in Stripe's dashboard.
    Booking.objects.filter(pk=booking.pk).update(
        hold_expires_at=timezone.now() - timedelta(minutes=1)
    )
    bookings_expire()
    sandbox().client.v1.payment_intents.capture(intent_id)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        deliver(event_body(sandbox_event("payment_intent.succeeded", intent_id)))

    payment.refresh_from_db()
    booking.refresh_from_db()
    assert booking.status == BookingStatus.EXPIRED
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.amount_refunded == 1_200_00
    assert sandbox().refunded_total(intent_id) == 1_200_00
    refund = Refund.objects.get()
    assert refund.reason == RefundReason.HOLD_LAPSED
    assert subjects() == [f"[Moonslot] Booking {booking.reference}: refund of $1,200.00"]


def test_a_second_authorised_attempt_for_a_paid_booking_is_released(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    first = authenticated_but_never_back(booking)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(
            event_body(
                sandbox_event(
                    "payment_intent.amount_capturable_updated", str(first.stripe_payment_intent_id)
                )
            )
        )
    second = Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=2,
        amount=booking.price_amount,
        currency=booking.currency,
        idempotency_key="second-tab",
    )
    intent = gateways.intent_create_and_confirm(
        amount=second.amount,
        currency=second.currency,
        payment_method="pm_card_visa",
        metadata={"booking_reference": booking.reference, "payment_id": str(second.pk)},
        idempotency_key=second.idempotency_key,
    )
    with django_capture_on_commit_callbacks(execute=True):
        deliver(event_body(sandbox_event("payment_intent.amount_capturable_updated", intent.id)))

    second.refresh_from_db()
    assert second.status == PaymentStatus.CANCELED
    assert sandbox().intent(intent.id)["status"] == "canceled"
    assert Payment.objects.get(pk=first.pk).status == PaymentStatus.SUCCEEDED
    assert Booking.objects.get(pk=booking.pk).status == BookingStatus.CONFIRMED
    assert subjects()[-1] == f"[Moonslot] Booking {booking.reference}: second payment released"
