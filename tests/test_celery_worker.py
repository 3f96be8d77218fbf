"""A real worker and beat against Redis, sharing the PostgreSQL test database (CI tier 2).
Each test's broker is a redis-server of its own (``tests.worker.private_redis``), so no other
worker on the machine can take its tasks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.http.response import HttpResponseBase
from django.test import Client
from django.utils import timezone

from bookings import payments, services
from bookings.models import (
    Booking,
    BookingStatus,
    OutboxMessage,
    PaymentStatus,
    StripeEvent,
)
from bookings.services import Actor
from bookings.tasks import ping_task
from tests.factories import ResellerFactory, SlotClassFactory
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    SECRET_KEY,
    THREE_D_SECURE,
    WEBHOOK_SECRET,
    Sandbox,
    _stripe_sandbox_process,
    event_body,
    held_web_booking,
    signature_header,
    stripe_sandbox,
)
from tests.worker import (  # noqa: F401 (fixture)
    PrivateRedis,
    mail_files,
    mails_with,
    private_redis_fixture,
    running_worker,
    wait_for,
)

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker(private_redis: PrivateRedis) -> str:
    return private_redis.url


def test_worker_answers_a_round_trip(broker: str) -> None:
    with running_worker(broker) as worker:
        result = ping_task.delay()
        # disable_sync_subtasks: an earlier test in this process may have run Celery's worker
        # set-up, which marks the whole process as "inside a task"; this is the test itself.
        assert result.get(timeout=30, disable_sync_subtasks=False) == "pong", worker["log"]


def test_hold_notification_is_delivered_by_the_worker_after_commit(broker: str) -> None:
    slot_class = SlotClassFactory.create()
    reseller = ResellerFactory.create(notification_email="desk@reseller.example")
    with running_worker(broker) as worker:
        booking = services.booking_hold(
            slot_class_id=slot_class.pk,
            organisation=reseller,
            channel="api",
            actor=Actor.system("test"),
            currency="JPY",
            mass_g=1000,
        )
        message = OutboxMessage.objects.get(topic="booking.notify")
        wait_for(
            lambda: OutboxMessage.objects.filter(
                pk=message.pk, processed_at__isnull=False
            ).exists(),
            what=f"the worker to process the outbox row (log: {worker['log']})",
        )
        mails = wait_for(lambda: mail_files(worker["mail_dir"]), what="the e-mail file")  # type: ignore[arg-type]
    assert len(mails) == 1
    assert booking.reference in mails[0]
    assert "desk@reseller.example" in mails[0]


def test_beat_expires_lapsed_holds(broker: str) -> None:
    slot_class = SlotClassFactory.create()
    booking = services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=ResellerFactory.create(),
        channel="api",
        actor=Actor.system("test"),
        currency="JPY",
        mass_g=1000,
        now=timezone.now() - timedelta(hours=1),
        hold_minutes=5,
    )
    with running_worker(broker, beat=True) as worker:
        wait_for(
            lambda: Booking.objects.filter(pk=booking.pk, status="expired").exists(),
            what=f"beat to expire the hold (log: {worker['log']})",
        )
    slot_class.refresh_from_db()
    assert slot_class.taken_g == 0


def post_stripe_webhook(body: str) -> HttpResponseBase:
    """Deliver ``body`` as Stripe does: signed ``t=<time>,v1=HMAC-SHA256(secret, "t.body")``."""
    return Client().post(
        "/stripe/webhook/",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": signature_header(body)},
    )


def test_a_signed_payment_webhook_confirms_captures_and_mails_through_the_worker(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """The whole card path after the customer's page is gone: Stripe authorised the card
    (3-D Secure passed in Stripe.js, the tab closed), Stripe's webhook arrives, and the rest
    is the worker's: it processes the event from the outbox, confirms the booking, captures
    the money at Stripe (localstripe) and e-mails the confirmation."""
    # After the broker: on the SQLite tier that skips before the sandbox is asked for.
    box: Sandbox = request.getfixturevalue("stripe_sandbox")
    booking = held_web_booking()
    assert booking.created_by is not None
    payment = payments.payment_card_start(
        booking_id=booking.pk,
        actor=Actor.for_user(booking.created_by),
        token=box.card_token(THREE_D_SECURE),
    )
    intent_id = str(payment.stripe_payment_intent_id)
    intent = box.intent(intent_id)
    assert box.authenticate(intent_id, intent["client_secret"]) == "requires_capture"
    (event,) = [
        e
        for e in box.events("payment_intent.amount_capturable_updated")
        if e["data"]["object"]["id"] == intent_id
    ]
    body = event_body(event)
    sandbox_env = {
        "MOONSLOT_TEST_STRIPE_API_BASE": box.base_url,
        "MOONSLOT_TEST_STRIPE_SECRET_KEY": SECRET_KEY,
        "MOONSLOT_TEST_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    subject = f"Booking {booking.reference} is confirmed"

    with running_worker(broker, extra_env=sandbox_env) as worker:
        mail_dir: Path = worker["mail_dir"]  # type: ignore[assignment]
        assert post_stripe_webhook(body).status_code == 200
        # Answered before any of the work: the request only recorded and queued the event.
        wait_for(
            lambda: Booking.objects.filter(pk=booking.pk, status=BookingStatus.CONFIRMED).exists(),
            timeout=60,
            what=f"the worker to confirm the booking (log: {worker['log']})",
        )
        wait_for(
            lambda: box.intent(intent_id)["status"] == "succeeded",
            timeout=60,
            what=f"the worker to capture the payment at Stripe (log: {worker['log']})",
        )
        wait_for(
            lambda: mails_with(mail_dir, subject),
            timeout=60,
            what=f"the confirmation e-mail (log: {worker['log']})",
        )
        # Stripe delivers an event again when it is unsure we got it: nothing happens twice.
        assert post_stripe_webhook(body).status_code == 200
        # (The manifest rebuild the confirmation asked for waits for its debounce window.)
        work = OutboxMessage.objects.exclude(topic="manifest.rebuild")
        wait_for(
            lambda: not work.filter(processed_at__isnull=True).exists(),
            timeout=60,
            what=f"the worker to finish every side effect (log: {worker['log']})",
        )

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert StripeEvent.objects.get(stripe_id=event["id"]).processed_at is not None
    assert booking.events.filter(type="booking.confirmed").count() == 1
    assert mails_with(mail_dir, subject) == 1
    (confirmation,) = [m for m in mail_files(mail_dir) if subject in m]
    assert booking.created_by.email in confirmation
    captured = box.intent(intent_id)
    assert captured["status"] == "succeeded"
    assert (captured["amount"], captured["currency"]) == (booking.price_amount, "jpy")
