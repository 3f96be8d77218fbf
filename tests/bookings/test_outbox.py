"""Side effects go through the outbox: written with the change, dispatched after commit,
swept when dispatch failed, and processed once however often they are dispatched."""

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from bookings import outbox, services
from bookings.models import Booking, OutboxMessage
from bookings.services import Actor
from bookings.tasks import outbox_process_task
from tests.factories import ResellerFactory, SlotClassFactory, UserFactory
from tests.worker import wait_for

pytestmark = pytest.mark.django_db


def place_hold(**kwargs: object) -> Booking:
    slot_class = SlotClassFactory.create()
    reseller = ResellerFactory.create(notification_email="desk@reseller.example")
    params: dict[str, object] = {
        "slot_class_id": slot_class.pk,
        "organisation": reseller,
        "channel": "api",
        "actor": Actor.system("test"),
        "currency": "JPY",
        "mass_g": 1000,
    }
    params.update(kwargs)
    return services.booking_hold(**params)  # type: ignore[arg-type]


def test_notification_is_sent_only_after_commit(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        booking = place_hold()
    assert mail.outbox == []
    message = OutboxMessage.objects.get(topic="booking.notify")
    assert message.processed_at is None
    for callback in callbacks:
        callback()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["desk@reseller.example"]
    assert booking.reference in mail.outbox[0].subject
    message.refresh_from_db()
    assert message.processed_at is not None


def test_a_rolled_back_transition_leaves_no_side_effect(django_capture_on_commit_callbacks) -> None:
    def hold_then_fail() -> None:
        with transaction.atomic():
            place_hold()
            raise RuntimeError("something after the hold failed")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        hold_then_fail()
    assert not OutboxMessage.objects.exists()
    assert not Booking.objects.exists()
    assert mail.outbox == []


def test_broker_outage_loses_nothing_and_the_sweep_delivers_once(
    django_capture_on_commit_callbacks,
) -> None:
    with (
        mock.patch.object(outbox_process_task, "delay", side_effect=ConnectionError("down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        place_hold()
    message = OutboxMessage.objects.get(topic="booking.notify")
    assert message.processed_at is None
    assert mail.outbox == []
    # Too early for the sweep: it leaves rows alone until the retry delay has passed.
    assert outbox.outbox_dispatch_pending() == 0
    later = timezone.now() + timedelta(minutes=5)
    assert outbox.outbox_dispatch_pending(now=later) == 1
    assert outbox.outbox_dispatch_pending(now=later) == 0
    assert len(mail.outbox) == 1
    message.refresh_from_db()
    assert message.processed_at is not None


def test_processing_a_message_twice_sends_once(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        place_hold()
    message = OutboxMessage.objects.get(topic="booking.notify")
    assert outbox.outbox_process(message_id=message.pk) is False
    outbox_process_task.delay(message.pk)
    assert len(mail.outbox) == 1


def test_a_failing_handler_keeps_the_message_for_a_later_retry(
    django_capture_on_commit_callbacks,
) -> None:
    boom = mock.Mock(side_effect=OSError("SMTP unavailable"))
    with mock.patch.dict(outbox.HANDLERS, {"booking.notify": boom}):
        # The booking itself commits; the failed side effect does not surface to the caller.
        with django_capture_on_commit_callbacks(execute=True):
            booking = place_hold()
        message = OutboxMessage.objects.get(topic="booking.notify")
        assert message.processed_at is None
        assert "SMTP unavailable" in message.last_error
        assert message.attempts == 1
        # Leased with a backoff: a dispatch right now does not run it again.
        assert outbox.outbox_process(message_id=message.pk) is False
        assert boom.call_count == 1
    assert Booking.objects.filter(pk=booking.pk).exists()
    # The backoff elapses (the worker's clock is the real one, so move the lease instead).
    OutboxMessage.objects.filter(pk=message.pk).update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )
    later = timezone.now() + timedelta(hours=2)
    assert outbox.outbox_dispatch_pending(now=later) == 1
    message.refresh_from_db()
    assert message.processed_at is not None
    assert message.attempts == 2
    assert len(mail.outbox) == 1


def test_web_bookings_notify_the_person_not_the_organisation(
    django_capture_on_commit_callbacks,
) -> None:
    user = UserFactory.create(email="ada@example.com")
    slot_class = SlotClassFactory.create()
    reseller = ResellerFactory.create(notification_email="desk@reseller.example")
    with django_capture_on_commit_callbacks(execute=True):
        services.booking_hold(
            slot_class_id=slot_class.pk,
            organisation=reseller,
            channel="web",
            actor=Actor.for_user(user),
            currency="USD",
            mass_g=1000,
        )
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]


def test_expiry_sweep_notifies_each_lapsed_hold_once(django_capture_on_commit_callbacks) -> None:
    start = timezone.now()
    booking = place_hold(now=start, hold_minutes=5)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.bookings_expire(now=start + timedelta(minutes=6)) == 1
        assert services.bookings_expire(now=start + timedelta(minutes=7)) == 0
    assert len(mail.outbox) == 1
    assert booking.reference in mail.outbox[0].subject
    assert "expired" in mail.outbox[0].subject


def test_dedupe_key_writes_one_row() -> None:
    with transaction.atomic():
        first = outbox.outbox_write(topic="x", payload={}, dedupe_key="k1")
        second = outbox.outbox_write(topic="x", payload={}, dedupe_key="k1")
    assert first is not None
    assert second is None
    assert OutboxMessage.objects.filter(dedupe_key="k1").count() == 1


def test_hold_reminder_is_sent_once_before_expiry(django_capture_on_commit_callbacks) -> None:
    start = timezone.now() - timedelta(minutes=20)
    booking = place_hold(now=start, hold_minutes=24)  # lapses in 4 minutes
    confirmed = place_hold(now=start, hold_minutes=24)
    services.booking_confirm(booking_id=confirmed.pk, actor=Actor.system("test"))
    fresh = place_hold(hold_minutes=3)  # placed just now: no reminder the moment it is made
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.bookings_remind_expiring(within=timedelta(minutes=5)) == 1
        assert services.bookings_remind_expiring(within=timedelta(minutes=5)) == 0
    assert [m.subject for m in mail.outbox] == [
        f"[Moonslot] Your hold {booking.reference} expires soon"
    ]
    assert fresh.reference not in mail.outbox[0].body


# --- leases: kept alive while the handler runs, lapsing soon after a worker dies ----------


def _slow_row() -> OutboxMessage:
    return OutboxMessage.objects.create(topic="test.slow", payload={})


def _lease_of(message: OutboxMessage) -> Any:
    return OutboxMessage.objects.values_list("locked_until", flat=True).get(pk=message.pk)


@pytest.mark.django_db(transaction=True)
def test_a_running_handler_renews_its_lease_so_no_other_delivery_takes_the_row(
    settings: Any,
) -> None:
    settings.MOONSLOT_OUTBOX_LEASE = timedelta(seconds=1)
    message = _slow_row()
    runs: list[bool] = []

    def slow(row: OutboxMessage) -> None:
        runs.append(True)
        first_term = _lease_of(row)
        # Past the end of the lease first written: renewed meanwhile, by another thread.
        wait_for(
            lambda: _lease_of(row) > first_term + settings.MOONSLOT_OUTBOX_LEASE,
            what="the lease to be renewed past its first term",
        )
        # Another worker's delivery of the same row, now: refused.
        runs.append(outbox.outbox_process(message_id=row.pk))

    with mock.patch.dict(outbox.HANDLERS, {"test.slow": slow}):
        assert outbox.outbox_process(message_id=message.pk) is True
    assert runs == [True, False]
    message.refresh_from_db()
    assert message.attempts == 1
    assert message.processed_at is not None
    assert message.locked_until is None


@pytest.mark.django_db(transaction=True)
def test_without_renewal_a_slow_handler_loses_its_row_to_a_second_run(settings: Any) -> None:
    """The test-only switch: the short lease alone hands a slow handler's row out again."""
    settings.MOONSLOT_OUTBOX_LEASE = timedelta(seconds=1)
    settings.MOONSLOT_DISABLE_OUTBOX_LEASE_RENEWAL = True
    message = _slow_row()
    runs: list[bool] = []

    def slow(row: OutboxMessage) -> None:
        runs.append(True)
        if len(runs) > 1:
            return
        wait_for(lambda: _lease_of(row) <= timezone.now(), what="the lease to lapse")
        runs.append(outbox.outbox_process(message_id=row.pk))

    with mock.patch.dict(outbox.HANDLERS, {"test.slow": slow}):
        assert outbox.outbox_process(message_id=message.pk) is True
    assert runs == [True, True, True]  # the handler ran twice
    assert OutboxMessage.objects.get(pk=message.pk).attempts == 2


def test_a_worker_whose_claim_was_taken_over_leaves_the_new_claim_alone() -> None:
    """A claim is owned by the ``attempts`` it wrote: the first worker's failure, reported
    after a second claim took the row, neither shortens the new lease nor records its error
    over the new run."""
    message = _slow_row()
    taken_over_until = timezone.now() + timedelta(minutes=10)

    def fails_after_a_takeover(row: OutboxMessage) -> None:
        OutboxMessage.objects.filter(pk=row.pk).update(
            attempts=row.attempts + 1, locked_until=taken_over_until
        )
        raise OSError("SMTP unavailable")

    with (
        mock.patch.dict(outbox.HANDLERS, {"test.slow": fails_after_a_takeover}),
        pytest.raises(OSError, match="SMTP"),
    ):
        outbox.outbox_process(message_id=message.pk)
    message.refresh_from_db()
    assert message.attempts == 2
    assert message.locked_until == taken_over_until
    assert message.last_error == ""
