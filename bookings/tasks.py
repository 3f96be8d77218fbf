"""Thin Celery entry points: ids in, one service call, the retry policy."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from bookings import (
    billing,  # noqa: F401 (registers the billing documents' outbox handler)
    enterprise,  # noqa: F401 (registers the completion-link e-mail)
    idempotency,
    notifications,  # noqa: F401 (registers the outbox handlers)
    outbox,
    payments,  # registers the payment outbox handlers too
    services,
)
from bookings.exceptions import TransientError


@shared_task(
    name="bookings.tasks.outbox_process",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
    # Nobody reads its result: without this, every dispatch (one per hold, in the request,
    # after the commit) also subscribed the web process to the result's Redis channel, and
    # the worker stored a result nobody fetches.
    ignore_result=True,
)
def outbox_process_task(message_id: int) -> bool:
    return outbox.outbox_process(message_id=message_id)


@shared_task(name="bookings.tasks.outbox_dispatch_pending", acks_late=True)
def outbox_dispatch_pending_task() -> int:
    return outbox.outbox_dispatch_pending()


@shared_task(name="bookings.tasks.bookings_expire", acks_late=True)
def bookings_expire_task() -> int:
    return services.bookings_expire()


@shared_task(name="bookings.tasks.bookings_remind_expiring", acks_late=True)
def bookings_remind_expiring_task() -> int:
    return services.bookings_remind_expiring(within=timedelta(minutes=5))


@shared_task(name="bookings.tasks.booking_events_sequence", acks_late=True)
def booking_events_sequence_task() -> int:
    return services.booking_events_sequence()


@shared_task(name="bookings.tasks.idempotency_records_purge", acks_late=True)
def idempotency_records_purge_task() -> int:
    return idempotency.idempotency_records_purge()


@shared_task(name="bookings.tasks.ping")
def ping_task() -> str:
    """Round trip for health checks and the real-worker tests."""
    return "pong"


@shared_task(name="bookings.tasks.payments_reconcile", acks_late=True)
def payments_reconcile_task() -> dict[str, int]:
    report = payments.payments_reconcile()
    return {
        "refreshed": report.refreshed,
        "released": report.released,
        "refunded_bookings": report.refunded_bookings,
        "errors": report.errors,
    }


# --- manifests and mission status (bookings.manifests, bookings.mission_ops) -------------
from bookings import manifests, mission_ops  # noqa: E402, F401 (register their outbox handlers)


@shared_task(name="bookings.tasks.manifests_freeze_due", acks_late=True)
def manifests_freeze_due_task() -> list[int]:
    return manifests.manifests_freeze_due()


# --- waitlists and reseller webhooks (bookings.waitlist, bookings.webhooks_out) ----------
from bookings import waitlist, webhooks_out  # noqa: E402 (webhooks_out registers a handler)


@shared_task(name="bookings.tasks.waitlists_sweep", acks_late=True)
def waitlists_sweep_task() -> int:
    return waitlist.waitlists_sweep()


@shared_task(name="bookings.tasks.webhooks_fan_out", acks_late=True)
def webhooks_fan_out_task() -> int:
    """Write the deliveries of new events, then hand each endpoint with a due delivery to
    its own task (one endpoint's slow receiver does not hold up the others)."""
    created = webhooks_out.webhooks_fan_out()
    for endpoint_id in webhooks_out.webhook_endpoints_due():
        webhook_endpoint_deliver_task.delay(endpoint_id)
    return created


# No autoretry: each delivery row keeps its own retry schedule (webhooks_out.retry_delay).
@shared_task(
    name="bookings.tasks.webhook_endpoint_deliver", acks_late=True, reject_on_worker_lost=True
)
def webhook_endpoint_deliver_task(endpoint_id: int) -> int:
    return webhooks_out.webhook_endpoint_deliver(endpoint_id=endpoint_id)


# --- schedule changes (bookings.reaccommodation) ---------------------------------------
from bookings import reaccommodation  # noqa: E402 (registers the offers' outbox handlers)


@shared_task(name="bookings.tasks.offers_default_due", acks_late=True)
def offers_default_due_task() -> int:
    return reaccommodation.offers_default_due()


# --- instalments (bookings.instalment_reminders; billing documents: bookings.billing) ----
from bookings import instalment_reminders  # noqa: E402 (registers the reminders' handlers)


@shared_task(name="bookings.tasks.instalments_remind", acks_late=True)
def instalments_remind_task() -> int:
    return instalment_reminders.instalments_remind()


@shared_task(name="bookings.tasks.instalments_overdue", acks_late=True)
def instalments_overdue_task() -> dict[str, int]:
    return instalment_reminders.instalments_overdue()


# --- payload declarations (bookings.review) ------------------------------------------------
from bookings import review  # noqa: E402 (registers the review's outbox handlers)


@shared_task(name="bookings.tasks.declarations_remind", acks_late=True)
def declarations_remind_task() -> int:
    """Remind bookings whose payload declaration is incomplete as their cutoff nears."""
    return review.declarations_remind()
