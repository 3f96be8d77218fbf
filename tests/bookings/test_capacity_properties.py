"""Stateful property tests of the booking accounting: Hypothesis drives holds, confirms,
cancels, sweeps and a clock against one slot class, while the test keeps its own model of
every booking in plain Python. The model decides what must happen (which error, which
status, how much is free) from its own clock and its own records, never from the counters;
after every step the database must agree with it. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Organisation
from bookings import services
from bookings.exceptions import (
    BookingError,
    HoldExpired,
    HoldLimitExceeded,
    InsufficientCapacity,
    InvalidTransition,
)
from bookings.models import Booking, BookingStatus
from marketplace.models import SlotClass
from tests.bookings.concurrency_helpers import SYSTEM
from tests.bookings.concurrency_helpers import hold as place_hold
from tests.factories import OrganisationFactory, ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

T = TypeVar("T")

HELD, CONFIRMED = BookingStatus.HELD, BookingStatus.CONFIRMED
CANCELLED, EXPIRED = BookingStatus.CANCELLED, BookingStatus.EXPIRED
# The class's hold times per channel, set on the class below and known to the model.
HOLD_MINUTES = {"web": 20, "api": 3 * 24 * 60, "admin": 7 * 24 * 60}
MAX_STEPS = 4
STEPS = st.integers(min_value=1, max_value=MAX_STEPS)  # a booking's size in the class's steps
PICK = st.integers(min_value=0, max_value=10_000)  # which booking a rule acts on


# What confirming a booking the model sees in this status must raise.
CONFIRM_ERRORS: dict[str, type[BookingError]] = {
    EXPIRED: HoldExpired,
    CANCELLED: InvalidTransition,
}


def attempt(call: Callable[[], T]) -> tuple[T | None, BookingError | None]:
    """A service call's result or its domain error, for comparing with the model's."""
    try:
        return call(), None
    except BookingError as error:
        return None, error


def error_type(error: BookingError | None) -> type[BookingError] | None:
    return None if error is None else type(error)


@dataclass
class Modelled:
    """The model's record of one booking: ``status`` is what the row must say."""

    slot_class: int
    organisation: int
    mass_g: int
    units: int
    status: str
    expires_at: datetime

    def status_at(self, now: datetime) -> str:
        if self.status == HELD and self.expires_at <= now:
            return EXPIRED
        return self.status


class CapacityMachine(RuleBasedStateMachine):
    """Two per-kg classes of 3 kg sold in 0.5 kg steps (0.5–2 kg a booking), small enough
    that a few holds fill one, and three organisations: no cap, a 1.5 kg and a 1 kg cap on
    unpaid holds (counted across both classes)."""

    per_unit: ClassVar[bool] = False
    capacity_g: ClassVar[int] = 3000
    capacity_units: ClassVar[int] = 0
    step_g: ClassVar[int] = 500
    caps_g: ClassVar[tuple[int | None, ...]] = (None, 1500, 1000)

    def __init__(self) -> None:
        super().__init__()
        # Each example runs in a savepoint that teardown rolls back, so examples start
        # clean on either database without a transactional test.
        self._example = transaction.atomic()
        self._example.__enter__()
        self.now = timezone.now().replace(microsecond=0)
        self.classes = [self.make_class(), self.make_class()]
        self.organisations: list[Organisation] = [
            ResellerFactory.create(held_mass_cap_g=cap) if cap else OrganisationFactory.create()
            for cap in self.caps_g
        ]
        self.bookings: dict[int, Modelled] = {}

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._example.__exit__(None, None, None)

    def make_class(self) -> SlotClass:
        return SlotClassFactory.create(
            capacity_g=self.capacity_g,
            min_mass_g=self.step_g,
            max_mass_g=MAX_STEPS * self.step_g,
            mass_step_g=self.step_g,
            hold_minutes_web=HOLD_MINUTES["web"],
            hold_minutes_api=HOLD_MINUTES["api"],
            hold_minutes_admin=HOLD_MINUTES["admin"],
        )

    def size(self, steps: int) -> dict[str, int]:
        return {"mass_g": steps * self.step_g}

    # --- what the model says ---------------------------------------------------------------

    def of_class(self, slot_class: int) -> list[Modelled]:
        return [b for b in self.bookings.values() if b.slot_class == slot_class]

    def live(self, slot_class: int) -> tuple[int, int]:
        """Mass and units held (not lapsed) or confirmed at the model's clock."""
        rows = [b for b in self.of_class(slot_class) if b.status_at(self.now) in (HELD, CONFIRMED)]
        return sum(b.mass_g for b in rows), sum(b.units for b in rows)

    def counted(self, slot_class: int) -> tuple[int, int]:
        """What the counters must say: a row still marked held counts, lapsed or not, until
        something releases it."""
        rows = [b for b in self.of_class(slot_class) if b.status in (HELD, CONFIRMED)]
        return sum(b.mass_g for b in rows), sum(b.units for b in rows)

    def release_lapsed(self, slot_class: int | None) -> int:
        """What a committed hold or cancel does to its class first, and a sweep to every
        class: holds past their expiry become expired."""
        released = [
            b
            for b in self.bookings.values()
            if slot_class in (None, b.slot_class) and b.status == HELD and b.expires_at <= self.now
        ]
        for booking in released:
            booking.status = EXPIRED
        return len(released)

    def held_by(self, organisation: int) -> int:
        return sum(
            b.mass_g
            for b in self.bookings.values()
            if b.organisation == organisation and b.status_at(self.now) == HELD
        )

    def expected_hold_error(
        self, slot_class: int, organisation: int, mass_g: int
    ) -> type[BookingError] | None:
        live_g, _units = self.live(slot_class)
        if mass_g > self.capacity_g - live_g:
            return InsufficientCapacity
        cap = self.caps_g[organisation]
        if cap is not None and self.held_by(organisation) + mass_g > cap:
            return HoldLimitExceeded
        return None

    def pick(self, index: int) -> tuple[int, Modelled]:
        ids = sorted(self.bookings)
        booking_id = ids[index % len(ids)]
        return booking_id, self.bookings[booking_id]

    # --- rules -----------------------------------------------------------------------------

    @rule(
        slot_class=st.integers(min_value=0, max_value=1),
        organisation=st.integers(min_value=0, max_value=2),
        steps=STEPS,
        channel=st.sampled_from(sorted(HOLD_MINUTES)),
        minutes=st.one_of(st.none(), st.integers(min_value=1, max_value=60)),
    )
    def hold(
        self, slot_class: int, organisation: int, steps: int, channel: str, minutes: int | None
    ) -> None:
        size = self.size(steps)
        mass_g = steps * self.step_g
        expected = self.expected_hold_error(slot_class, organisation, mass_g)
        # Without a cap, one guarded UPDATE takes what the counters leave free (they count
        # lapsed holds not released yet) and releases nothing; otherwise the hold locks the
        # class and releases its lapsed holds first, and they stay released if it is refused.
        counted_g, counted_units = self.counted(slot_class)
        guarded = (
            self.caps_g[organisation] is None
            and counted_g + mass_g <= self.capacity_g
            and (not self.per_unit or counted_units + steps <= self.capacity_units)
        )
        booking, error = attempt(
            lambda: place_hold(
                self.classes[slot_class],
                self.organisations[organisation],
                now=self.now,
                channel=channel,
                hold_minutes=minutes,
                **size,
            )
        )
        assert error_type(error) is expected, f"got {error!r}, the model expected {expected}"
        event(f"hold: {type(error).__name__ if error else 'held'}")
        if isinstance(error, InsufficientCapacity):
            live_g, live_units = self.live(slot_class)
            assert error.available_g == self.capacity_g - live_g
            if self.per_unit:
                assert error.available_units == self.capacity_units - live_units
        if not guarded:
            self.release_lapsed(slot_class)
        if booking is None:
            return  # refused: nothing was held
        event("hold: guarded update" if guarded else "hold: under the lock")
        self.bookings[booking.pk] = Modelled(
            slot_class=slot_class,
            organisation=organisation,
            mass_g=mass_g,
            units=steps if self.per_unit else 0,
            status=HELD,
            expires_at=self.now + timedelta(minutes=minutes or HOLD_MINUTES[channel]),
        )

    @rule(
        slot_class=st.integers(min_value=0, max_value=1),
        organisation=st.integers(min_value=1, max_value=2),
        steps=STEPS,
        minutes=st.integers(min_value=1, max_value=60),
    )
    def hold_for_a_capped_organisation(
        self, slot_class: int, organisation: int, steps: int, minutes: int
    ) -> None:
        """Short holds by the capped organisations, so caps meet lapsed holds often."""
        self.hold(slot_class, organisation, steps, "api", minutes)

    @precondition(lambda self: self.bookings)
    @rule(index=PICK)
    def confirm(self, index: int) -> None:
        booking_id, modelled = self.pick(index)
        before = modelled.status_at(self.now)
        expected = CONFIRM_ERRORS.get(before)
        confirmed, error = attempt(
            lambda: services.booking_confirm(booking_id=booking_id, actor=SYSTEM, now=self.now)
        )
        assert error_type(error) is expected, f"{before} booking: got {error!r}"
        event(f"confirm of a {before} booking")
        if confirmed is None:
            return
        assert confirmed.status == CONFIRMED
        modelled.status = CONFIRMED

    @precondition(lambda self: self.bookings)
    @rule(index=PICK)
    def cancel(self, index: int) -> None:
        booking_id, modelled = self.pick(index)
        cancelled = services.booking_cancel(booking_id=booking_id, actor=SYSTEM, now=self.now)
        self.release_lapsed(modelled.slot_class)
        if modelled.status in (HELD, CONFIRMED):
            modelled.status = CANCELLED
        assert cancelled.status == modelled.status

    @rule()
    def sweep(self) -> None:
        expired = services.bookings_expire(now=self.now)
        assert expired == self.release_lapsed(None)

    @rule(minutes=st.one_of(st.integers(min_value=1, max_value=90), st.just(4 * 24 * 60)))
    def advance_clock(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @precondition(lambda self: any(b.status_at(self.now) == HELD for b in self.bookings.values()))
    @rule(index=PICK)
    def advance_to_an_expiry(self, index: int) -> None:
        """Stop the clock exactly on a hold's expiry: the hold is lapsed at that instant."""
        live = sorted(b.expires_at for b in self.bookings.values() if b.status_at(self.now) == HELD)
        self.now = live[index % len(live)]

    # --- what the database must say after every step -------------------------------------

    @invariant()
    def availability_matches_the_model(self) -> None:
        rows = SlotClass.objects.with_availability(self.now).filter(
            pk__in=[c.pk for c in self.classes]
        )
        by_pk = {row.pk: row for row in rows}
        for index, slot_class in enumerate(self.classes):
            row = by_pk[slot_class.pk]
            live_g, live_units = self.live(index)
            assert 0 <= live_g <= self.capacity_g
            assert row.available_g == self.capacity_g - live_g
            assert (row.taken_g, row.taken_units) == self.counted(index)
            if self.per_unit:
                assert row.available_units == self.capacity_units - live_units

    @invariant()
    def every_booking_reads_as_the_model_says(self) -> None:
        rows = Booking.objects.filter(slot_class__in=self.classes).with_live_status(self.now)
        seen = {}
        for row in rows:
            live_status = getattr(row, "live_status")  # noqa: B009 (an annotation)
            seen[row.pk] = (row.status, row.status_at(self.now), live_status)
            assert row.hold_expires_at == self.bookings[row.pk].expires_at
        expected = {
            pk: (b.status, b.status_at(self.now), b.status_at(self.now))
            for pk, b in self.bookings.items()
        }
        assert seen == expected


class PerUnitCapacityMachine(CapacityMachine):
    """Message capsules: two classes of 8 units of 100 g, 1–4 a booking; units and mass
    both counted. Caps of 300 g and 200 g."""

    per_unit = True
    capacity_g = 800
    capacity_units = 8
    step_g = 100
    caps_g = (None, 300, 200)

    def make_class(self) -> SlotClass:
        return SlotClassFactory.per_unit(
            unit_mass_g=self.step_g,
            capacity_units=self.capacity_units,
            max_quantity=MAX_STEPS,
            hold_minutes_web=HOLD_MINUTES["web"],
            hold_minutes_api=HOLD_MINUTES["api"],
            hold_minutes_admin=HOLD_MINUTES["admin"],
        )

    def size(self, steps: int) -> dict[str, int]:
        return {"quantity": steps}


MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    # No example database: it would write .hypothesis/ into the shared working tree.
    database=None,
)


def test_capacity_accounting_matches_an_independent_model() -> None:
    run_state_machine_as_test(CapacityMachine, settings=MACHINE_SETTINGS)


def test_per_unit_capacity_accounting_matches_an_independent_model() -> None:
    run_state_machine_as_test(PerUnitCapacityMachine, settings=MACHINE_SETTINGS)
