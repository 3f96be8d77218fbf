"""The Celery application and every periodic job, declared in one place."""

import os
from datetime import timedelta

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("moonslot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Sweeps are cheap when there is nothing to do; the intervals bound how long a lapsed hold
# reads as expired before it is written as such, and how long an undispatched side effect
# waits. MOONSLOT_SWEEP_SECONDS exists so the real-worker tests need not wait half a minute.
SWEEP = timedelta(seconds=float(os.environ.get("MOONSLOT_SWEEP_SECONDS", "30")))

app.conf.beat_schedule = {
    "expire-lapsed-holds": {
        "task": "bookings.tasks.bookings_expire",
        "schedule": SWEEP,
    },
    "dispatch-pending-outbox": {
        "task": "bookings.tasks.outbox_dispatch_pending",
        "schedule": SWEEP,
    },
    "remind-expiring-holds": {
        "task": "bookings.tasks.bookings_remind_expiring",
        "schedule": SWEEP,
    },
    "purge-idempotency-records": {
        "task": "bookings.tasks.idempotency_records_purge",
        "schedule": timedelta(hours=1),
    },
    "sequence-events": {
        "task": "bookings.tasks.booking_events_sequence",
        "schedule": min(SWEEP, timedelta(seconds=5)),
    },
}

# Card payments whose webhook never came are asked of Stripe; cancelled bookings still owed
# their policy refund get it. Attempts are only looked at some minutes after their last
# change (STRIPE_RECONCILE_AFTER), so this need not run often.
app.conf.beat_schedule["reconcile-payments"] = {
    "task": "bookings.tasks.payments_reconcile",
    "schedule": max(SWEEP, timedelta(seconds=60)),
}

# At a mission's booking cutoff sales close and the manifest freezes. Debounced manifest
# rebuilds need no job of their own: the outbox sweep dispatches them once their window ends.
app.conf.beat_schedule["freeze-manifests-at-cutoff"] = {
    "task": "bookings.tasks.manifests_freeze_due",
    "schedule": max(SWEEP, timedelta(seconds=60)),
}

# Waitlists: serve queues that no freeing path saw (capacity raised by sales, a sale
# reopened) and write the outcome of confirmed offers. Reseller webhooks: fan new feed events
# out to the registered URLs and send what is due, retries included.
app.conf.beat_schedule["sweep-waitlists"] = {
    "task": "bookings.tasks.waitlists_sweep",
    "schedule": SWEEP,
}
app.conf.beat_schedule["fan-out-webhooks"] = {
    "task": "bookings.tasks.webhooks_fan_out",
    "schedule": min(SWEEP, timedelta(seconds=10)),
}

# Re-accommodation offers still open at their deadline default to staying on the mission.
# Readers already see them as defaulted; this writes it (and the offer.defaulted events).
app.conf.beat_schedule["default-due-offers"] = {
    "task": "bookings.tasks.offers_default_due",
    "schedule": max(SWEEP, timedelta(seconds=60)),
}

# Instalments (bookings.instalment_reminders): reminders before the due date, overdue notices,
# the sales flag after the grace period. Days-scale deadlines: hourly is on time.
app.conf.beat_schedule["remind-instalments"] = {
    "task": "bookings.tasks.instalments_remind",
    "schedule": timedelta(hours=1),
}
app.conf.beat_schedule["instalments-overdue"] = {
    "task": "bookings.tasks.instalments_overdue",
    "schedule": timedelta(hours=1),
}

# Payload declarations still incomplete 30 and 7 days before the booking cutoff get one
# reminder per threshold (bookings.review). Days-scale: hourly is on time.
app.conf.beat_schedule["remind-payload-declarations"] = {
    "task": "bookings.tasks.declarations_remind",
    "schedule": timedelta(hours=1),
}
