"""A real worker and beat against Redis, sharing the PostgreSQL test database (CI tier 2)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse, urlunparse

import pytest
from django.utils import timezone

from bookings import services
from bookings.models import Booking, OutboxMessage
from bookings.services import Actor
from bookings.tasks import ping_task
from tests.factories import ResellerFactory, SlotClassFactory
from tests.worker import mail_files, running_worker, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker(require_redis: str, require_postgres: None) -> str:
    # A Redis database of its own, so a developer's running worker cannot steal the tasks.
    parsed = urlparse(require_redis)
    return urlunparse(parsed._replace(path="/14"))


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
