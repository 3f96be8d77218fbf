"""Instalment reminders, overdue notices and the sales flag, with the clock moved by the
sweeps' ``now``: each e-mail goes once at its time, however often the beat runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from bookings.billing import documents_queue_for_instalment
from bookings.instalment_reminders import (
    booking_overdue_refresh,
    instalments_overdue,
    instalments_remind,
)
from bookings.models import (
    BillingDocument,
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    InstalmentStatus,
)
from tests.bookings.billing_helpers import (  # noqa: F401 (cjk_font: a fixture)
    cjk_font,
    confirmed_booking,
    days,
    instalment,
    plan_class,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cjk_font")]

Capture = Callable[..., Any]


def subjects() -> list[str]:
    return [str(m.subject) for m in mail.outbox]


def sweep(capture: Capture, at: datetime) -> None:
    """One beat: both sweeps at ``at``, with their outbox rows processed on commit."""
    with capture(execute=True):
        instalments_remind(now=at)
        instalments_overdue(now=at)


# A due date some weeks ahead, at noon, so "days before" is unambiguous.
def due_date() -> datetime:
    return (timezone.now() + days(60)).replace(hour=12, minute=0, second=0, microsecond=0)


def test_the_reminder_goes_once_reminder_days_before_the_due_date(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(plan_class(reminder_days=14))
    due = due_date()
    build = instalment(booking, amount=1_100_000, due_at=due, label="Build start")
    reminder = f"[Moonslot] Booking {booking.reference}: Build start of ¥1,100,000 is due on "
    reminder += due.date().isoformat()

    sweep(django_capture_on_commit_callbacks, due - days(14) - days(1 / 24))
    assert mail.outbox == []

    sweep(django_capture_on_commit_callbacks, due - days(14))
    sweep(django_capture_on_commit_callbacks, due - days(14))  # the same beat twice
    sweep(django_capture_on_commit_callbacks, due - days(3))  # and a later one
    invoice = BillingDocument.objects.get(instalment=build)
    assert subjects() == [
        reminder,
        f"[Moonslot] Invoice {invoice.number} for booking {booking.reference}",
    ]
    build.refresh_from_db()
    assert build.reminded_at == due - days(14)
    assert build.overdue_notified_at is None
    # The reminder names the invoice and the transfer reference.
    assert invoice.number in mail.outbox[0].body
    assert str(booking.payment_reference) in mail.outbox[0].body


def test_the_overdue_notice_goes_once_after_the_due_date_and_the_flag_waits_for_the_grace(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(plan_class(reminder_days=14, grace_days=10))
    due = due_date()
    build = instalment(booking, amount=1_100_000, due_at=due, label="Build start")
    sweep(django_capture_on_commit_callbacks, due - days(14))
    mail.outbox.clear()

    sweep(django_capture_on_commit_callbacks, due)  # due now, not past due
    assert mail.outbox == []

    sweep(django_capture_on_commit_callbacks, due + days(1 / 24))
    sweep(django_capture_on_commit_callbacks, due + days(1))
    assert subjects() == [
        f"[Moonslot] Booking {booking.reference}: Build start of ¥1,100,000 is overdue"
    ]
    build.refresh_from_db()
    assert build.overdue_notified_at == due + days(1 / 24)

    # Still within the grace period: nothing flagged, no word to sales.
    sweep(django_capture_on_commit_callbacks, due + days(10))
    booking.refresh_from_db()
    assert booking.overdue_since is None
    assert len(mail.outbox) == 1

    # Past it: flagged once, sales told once, the booking left confirmed.
    sweep(django_capture_on_commit_callbacks, due + days(10) + days(1 / 24))
    sweep(django_capture_on_commit_callbacks, due + days(11))
    booking.refresh_from_db()
    assert booking.overdue_since == due
    assert booking.status == BookingStatus.CONFIRMED
    assert subjects()[1:] == [
        f"[Moonslot sales] Booking {booking.reference} is unpaid past the grace period"
    ]
    assert mail.outbox[1].to == ["sales@moonslot.example"]
    assert "Build start: ¥1,100,000" in mail.outbox[1].body
    assert list(booking.events.values_list("type", flat=True)) == [EventType.BOOKING_OVERDUE]


def test_paying_clears_the_flag_and_nothing_more_is_sent(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(plan_class(grace_days=7))
    due = due_date()
    build = instalment(booking, amount=1_100_000, due_at=due)
    later = instalment(booking, amount=2_200_000, due_at=due + days(90), label="Balance")
    sweep(django_capture_on_commit_callbacks, due + days(8))
    booking.refresh_from_db()
    assert booking.overdue_since == due

    # Sales record the transfer; the payment service refreshes the flag at once.
    build.status = InstalmentStatus.PAID
    build.amount_paid = build.amount
    build.paid_at = due + days(9)
    build.save()
    with django_capture_on_commit_callbacks(execute=True):
        booking_overdue_refresh(booking_id=booking.pk, now=due + days(9))
        booking_overdue_refresh(booking_id=booking.pk, now=due + days(9))
    booking.refresh_from_db()
    assert booking.overdue_since is None
    assert list(booking.events.values_list("type", flat=True)) == [
        EventType.BOOKING_OVERDUE,
        EventType.BOOKING_OVERDUE_CLEARED,
    ]

    # The paid instalment gets no more notices; the next one its own reminder in time.
    mail.outbox.clear()
    sweep(django_capture_on_commit_callbacks, due + days(10))
    assert mail.outbox == []
    sweep(django_capture_on_commit_callbacks, due + days(90) - days(14))
    assert subjects()[0].endswith(f"Balance of ¥2,200,000 is due on {later.due_at:%Y-%m-%d}")


def test_the_sweep_clears_a_flag_whose_instalment_was_paid_elsewhere(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(plan_class(grace_days=0))
    due = due_date()
    build = instalment(booking, amount=1_100_000, due_at=due)
    sweep(django_capture_on_commit_callbacks, due + days(1))
    assert Booking.objects.get(pk=booking.pk).overdue_since == due

    build.status = InstalmentStatus.PAID
    build.paid_at = due + days(2)
    build.save()
    with django_capture_on_commit_callbacks(execute=True):
        counts = instalments_overdue(now=due + days(2))
    assert counts == {"notified": 0, "flagged": 0, "cleared": 1}
    assert Booking.objects.get(pk=booking.pk).overdue_since is None


def test_holds_cancelled_bookings_and_undated_milestones_get_no_reminders(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    slot_class = plan_class(grace_days=0)
    due = due_date()
    held = confirmed_booking(slot_class)
    Booking.objects.filter(pk=held.pk).update(
        status=BookingStatus.HELD, hold_expires_at=due + days(1)
    )
    cancelled = confirmed_booking(slot_class)
    Booking.objects.filter(pk=cancelled.pk).update(
        status=BookingStatus.CANCELLED, cancelled_at=due - days(30)
    )
    milestone = confirmed_booking(slot_class)
    for booking in (held, cancelled):
        instalment(booking, amount=1_000_000, due_at=due)
    instalment(milestone, amount=1_000_000, due_at=None, label="Payload accepted")

    for at in (due - days(14), due + days(1), due + days(30)):
        sweep(django_capture_on_commit_callbacks, at)
    assert mail.outbox == []
    assert not Booking.objects.filter(overdue_since__isnull=False).exists()
    assert not BillingDocument.objects.exists()


def test_an_instalment_dated_in_the_past_is_invoiced_with_its_overdue_notice(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    """A milestone reached late gives a due date already past: no reminder, the overdue
    notice, and the invoice all the same."""
    booking = confirmed_booking(plan_class(reminder_days=14, grace_days=30))
    now = timezone.now()
    accepted = instalment(booking, amount=3_300_000, due_at=now - days(2), label="Accepted")
    sweep(django_capture_on_commit_callbacks, now)
    invoice = BillingDocument.objects.get(instalment=accepted)
    assert subjects() == [
        f"[Moonslot] Booking {booking.reference}: Accepted of ¥3,300,000 is overdue",
        f"[Moonslot] Invoice {invoice.number} for booking {booking.reference}",
    ]
    accepted.refresh_from_db()
    assert accepted.reminded_at is None


def test_an_invoice_issued_early_is_not_issued_again_with_the_reminder(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(plan_class(reminder_days=14))
    due = due_date()
    build = instalment(booking, amount=1_100_000, due_at=due)
    with django_capture_on_commit_callbacks(execute=True):
        documents_queue_for_instalment(build)
    sweep(django_capture_on_commit_callbacks, due - days(14))
    assert BillingDocument.objects.filter(instalment=build).count() == 1
    assert len(mail.outbox) == 2  # the invoice when issued, then the reminder alone


def test_many_instalments_are_swept_in_a_fixed_number_of_queries(
    django_capture_on_commit_callbacks: Capture,
    django_assert_max_num_queries: Any,
) -> None:
    slot_class = plan_class(reminder_days=14, grace_days=0)
    due = due_date()
    for _ in range(12):
        instalment(confirmed_booking(slot_class), amount=1_000_000, due_at=due)
    # Each outbox row costs its own INSERT in a savepoint (three queries; four when the
    # invoice was already queued): two rows per reminder, three per overdue booking. The
    # selection, the claim, the flag and the events are set-based, whatever their number.
    with django_assert_max_num_queries(8 + 12 * 6):
        instalments_remind(now=due - days(14))
    with django_assert_max_num_queries(16 + 12 * 10):
        instalments_overdue(now=due + days(1))
    assert Booking.objects.filter(overdue_since=due).count() == 12
    assert BookingEvent.objects.filter(type=EventType.BOOKING_OVERDUE).count() == 12


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres")
def test_two_beats_at_once_claim_each_reminder_once() -> None:
    from unittest import mock

    from bookings.models import Instalment, OutboxMessage
    from tests.bookings.concurrency_helpers import run_together

    slot_class = plan_class(reminder_days=14)
    due = due_date()
    for _ in range(20):
        instalment(confirmed_booking(slot_class), amount=1_000_000, due_at=due)
    with mock.patch("bookings.outbox.outbox_dispatch"):
        outcomes = run_together([lambda: instalments_remind(now=due - days(14))] * 3)

    assert [o.error for o in outcomes] == [None] * 3
    # Rows one beat had locked were skipped by the others: 20 claims in all, not 60.
    assert sum(o.value or 0 for o in outcomes) == 20
    assert OutboxMessage.objects.filter(topic="instalment.remind").count() == 20
    assert not Instalment.objects.filter(reminded_at__isnull=True).exists()


def test_a_transfer_recorded_by_sales_clears_the_overdue_flag_at_once(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    from bookings.services import Actor
    from bookings.transfers import payment_record_transfer

    booking = confirmed_booking(plan_class(grace_days=7))
    due = due_date()
    build = instalment(booking, amount=1_100_000, due_at=due)
    sweep(django_capture_on_commit_callbacks, due + days(8))
    booking.refresh_from_db()
    assert booking.overdue_since == due

    with django_capture_on_commit_callbacks(execute=True):
        payment_record_transfer(
            booking_id=booking.pk,
            amount=build.amount,
            currency=build.currency,
            received_at=due + days(9),
            bank_reference="MIZUHO 0042",
            actor=Actor.system("test:sales"),
            instalment_id=build.pk,
            now=due + days(9),
        )

    booking.refresh_from_db()
    assert booking.overdue_since is None
    assert booking.events.filter(type=EventType.BOOKING_OVERDUE_CLEARED).count() == 1


def test_a_part_paid_dollar_instalment_is_reminded_in_dollars_and_cents(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(plan_class(), price=5_000_000, currency="USD")
    due = due_date()
    part_paid = instalment(booking, amount=1_000_000, due_at=due)
    part_paid.amount_paid = 250_050
    part_paid.save()

    sweep(django_capture_on_commit_callbacks, due - days(14))

    body = mail.outbox[0].body
    assert "Received so far: $2,500.50; still to pay: $7,499.50." in body
