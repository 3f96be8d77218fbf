"""The expiry sweep over a mountain of lapsed holds, timed in-process, and the proof that it
released exactly what it should: counters back to zero, one ``booking.expired`` event and one
``expired`` status per hold."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bench.seed imports models, which need Django set up first
    from bench.seed import LapsedHolds


@dataclass(frozen=True)
class SweepOutcome:
    seconds: float
    released: int
    problems: tuple[str, ...]

    @property
    def rows_per_s(self) -> float:
        return self.released / self.seconds if self.seconds > 0 else 0.0


def run_sweep(seeded: LapsedHolds) -> SweepOutcome:
    from django.utils import timezone

    from bookings.models import Booking, BookingStatus
    from bookings.services import bookings_expire

    now = timezone.now()
    # The catalogue's own lapsed holds are swept too: the sweep takes every class at once.
    lapsed = Booking.objects.filter(status=BookingStatus.HELD, hold_expires_at__lte=now).count()
    started = time.perf_counter()
    released = bookings_expire(now=now)
    seconds = time.perf_counter() - started
    return SweepOutcome(
        seconds=seconds,
        released=released,
        problems=verify_sweep(seeded, released=released, lapsed_before=lapsed),
    )


def verify_sweep(seeded: LapsedHolds, *, released: int, lapsed_before: int) -> tuple[str, ...]:
    from django.db.models import Sum

    from bookings.models import Booking, BookingEvent, BookingStatus, EventType
    from marketplace.models import SlotClass

    problems = []
    if released != lapsed_before:
        problems.append(f"bookings_expire() reported {released}, expected {lapsed_before}")
    counters = SlotClass.objects.filter(pk__in=seeded.class_ids).aggregate(
        taken_g=Sum("taken_g"), taken_units=Sum("taken_units")
    )
    if counters["taken_g"] or counters["taken_units"]:
        problems.append(
            f"counters not released: taken_g {counters['taken_g']}, "
            f"taken_units {counters['taken_units']}"
        )
    swept = Booking.objects.filter(slot_class_id__in=seeded.class_ids)
    expired = swept.filter(status=BookingStatus.EXPIRED, expired_at__isnull=False).count()
    if expired != seeded.bookings:
        problems.append(f"{expired} bookings expired, expected {seeded.bookings}")
    events = BookingEvent.objects.filter(
        booking__slot_class_id__in=seeded.class_ids, type=EventType.BOOKING_EXPIRED
    ).count()
    if events != seeded.bookings:
        problems.append(f"{events} booking.expired events, expected {seeded.bookings}")
    return tuple(problems)
