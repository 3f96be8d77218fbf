"""The Celery application and every periodic job, declared in one place."""

import os
from datetime import timedelta

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("moonslot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "expire-lapsed-holds": {
        "task": "bookings.tasks.bookings_expire",
        "schedule": timedelta(seconds=30),
    },
    "dispatch-pending-outbox": {
        "task": "bookings.tasks.outbox_dispatch_pending",
        "schedule": timedelta(seconds=30),
    },
    "sequence-events": {
        "task": "bookings.tasks.booking_events_sequence",
        "schedule": timedelta(seconds=5),
    },
}
