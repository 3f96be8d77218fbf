"""Capacity under real concurrency: many threads, each with its own PostgreSQL connection,
released together by a barrier. The counters are compared with sums the test computes from
the booking rows, never with themselves. SQLite ignores ``select_for_update``, so these run
on PostgreSQL only."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from pytest_django import Settings

from accounts.models import Organisation
from accounts.services import api_key_issue
from bookings import services
from bookings.exceptions import HoldLimitExceeded, InsufficientCapacity
from bookings.models import CAPACITY_STATUSES, Booking, BookingEvent, BookingStatus
from marketplace.models import SlotClass
from tests.bookings.api_helpers import BOOKINGS, bearer_client
from tests.bookings.concurrency_helpers import (
    SYSTEM,
    Background,
    Outcome,
    counters,
    hold,
    live_totals,
    run_together,
    wait_until_blocked_on_lock,
)
from tests.factories import OrganisationFactory, ResellerFactory, SlotClassFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.usefixtures("require_postgres"),
]

RACERS = 32
SIZE_G = 1000
SLOTS_LEFT = 10
PREFILL_G = 30_000
CAPACITY_G = PREFILL_G + SLOTS_LEFT * SIZE_G
ROUNDS = 5


@pytest.fixture
def racers() -> list[Organisation]:
    return [ResellerFactory.create() for _ in range(RACERS)]


# --- the race for the last capacity -----------------------------------------------------


@dataclass
class Race:
    slot_class: SlotClass
    outcomes: list[Outcome[Booking]]
    held: list[Booking] = field(default_factory=list)
    refused: list[InsufficientCapacity] = field(default_factory=list)
    integrity_errors: list[IntegrityError] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        for outcome in self.outcomes:
            if isinstance(outcome.error, InsufficientCapacity):
                self.refused.append(outcome.error)
            elif isinstance(outcome.error, IntegrityError):
                self.integrity_errors.append(outcome.error)
            elif outcome.error is not None:
                self.unexpected.append(outcome.error)
            else:
                assert outcome.value is not None
                self.held.append(outcome.value)

    @property
    def capacity_g(self) -> int:
        return self.slot_class.capacity_g

    def lost_update_seen(self) -> bool:
        """The race in any of its forms: the database refused a counter past capacity,
        the bookings oversell the class, or the counter drifted from the bookings."""
        live_g, _units = live_totals(self.slot_class.pk)
        taken_g, _taken_units = counters(self.slot_class.pk)
        return bool(self.integrity_errors) or live_g > self.capacity_g or taken_g != live_g


def prefilled_class() -> SlotClass:
    """A class with only ``SLOTS_LEFT`` requests of ``SIZE_G`` left: the rest is taken by a
    confirmed booking and two holds placed one at a time before the race."""
    slot_class = SlotClassFactory.create(
        capacity_g=CAPACITY_G, min_mass_g=500, max_mass_g=10_000, mass_step_g=100
    )
    now = timezone.now()
    first, *_rest = [
        hold(slot_class, OrganisationFactory.create(), now=now, mass_g=10_000) for _ in range(3)
    ]
    services.booking_confirm(booking_id=first.pk, actor=SYSTEM, now=now)
    return slot_class


def race_for_last_capacity(organisations: list[Organisation]) -> Race:
    slot_class = prefilled_class()
    now = timezone.now()
    calls = [partial(hold, slot_class, org, now=now, mass_g=SIZE_G) for org in organisations]
    return Race(slot_class=slot_class, outcomes=run_together(calls))


def test_racing_holds_take_exactly_what_is_left_and_no_more(
    racers: list[Organisation],
) -> None:
    for round_number in range(ROUNDS):
        race = race_for_last_capacity(racers)
        where = f"round {round_number}"
        assert race.unexpected == [], where
        assert race.integrity_errors == [], where
        assert len(race.held) == SLOTS_LEFT, where
        assert len(race.refused) == RACERS - SLOTS_LEFT, where
        # Requests come in whole SIZE_G steps, so a refusal is only right when nothing is left.
        assert {error.available_g for error in race.refused} == {0}, where
        live_g, _units = live_totals(race.slot_class.pk)
        assert live_g == PREFILL_G + SLOTS_LEFT * SIZE_G == CAPACITY_G, where
        assert counters(race.slot_class.pk) == (live_g, 0), where
        assert {b.status for b in race.held} == {BookingStatus.HELD}, where
        assert len({b.reference for b in race.held}) == SLOTS_LEFT, where
        held_events = BookingEvent.objects.filter(
            booking__slot_class=race.slot_class, type="booking.held"
        )
        assert held_events.count() == 3 + SLOTS_LEFT, where


def per_unit_race(organisations: list[Organisation]) -> Race:
    """30 units of 10 g; 20 go before the race, 10 single units are left for the racers."""
    capsules = SlotClassFactory.per_unit(unit_mass_g=10, capacity_units=30, max_quantity=5)
    now = timezone.now()
    for _ in range(4):
        hold(capsules, OrganisationFactory.create(), now=now, quantity=5)
    calls = [partial(hold, capsules, org, now=now, quantity=1) for org in organisations]
    return Race(slot_class=capsules, outcomes=run_together(calls))


def test_racing_per_unit_holds_keep_units_and_mass_together(
    racers: list[Organisation],
) -> None:
    for round_number in range(3):
        race = per_unit_race(racers)
        where = f"round {round_number}"
        assert race.unexpected == race.integrity_errors == [], where
        assert len(race.held) == 10, where
        assert len(race.refused) == RACERS - 10, where
        assert {(e.available_units, e.available_g) for e in race.refused} == {(0, 0)}, where
        assert live_totals(race.slot_class.pk) == (300, 30), where
        assert counters(race.slot_class.pk) == (300, 30), where


def test_racing_holds_of_mixed_sizes_refuse_only_what_no_longer_fits(
    racers: list[Organisation],
) -> None:
    rng = random.Random(20_260_101)
    for round_number in range(3):
        slot_class = prefilled_class()
        now = timezone.now()
        sizes = [rng.randrange(500, 3100, 100) for _ in racers]
        calls = [
            partial(hold, slot_class, org, now=now, mass_g=size)
            for org, size in zip(racers, sizes, strict=True)
        ]
        race = Race(slot_class=slot_class, outcomes=run_together(calls))
        where = f"round {round_number}, sizes {sizes}"
        assert race.unexpected == race.integrity_errors == [], where
        live_g, _units = live_totals(slot_class.pk)
        assert live_g == PREFILL_G + sum(b.mass_g for b in race.held), where
        assert live_g <= CAPACITY_G, where
        assert counters(slot_class.pk) == (live_g, 0), where
        # Nothing is freed during this race, so what is left at the end is at most what was
        # left when any request was refused: every refused size must still not fit.
        left_g = CAPACITY_G - live_g
        refused_sizes = [
            size
            for size, outcome in zip(sizes, race.outcomes, strict=True)
            if isinstance(outcome.error, InsufficientCapacity)
        ]
        assert refused_sizes, where  # 32 racers of 0.5–3 kg against 10 kg: some must lose
        assert all(size > left_g for size in refused_sizes), where
        assert len(race.held) + len(refused_sizes) == RACERS, where


def test_racing_api_holds_answer_201_for_what_fits_and_409_for_the_rest(
    racers: list[Organisation],
) -> None:
    """The same race through HTTP: one reseller key and one API client per thread. Exactly
    the requests that fit are 201, the rest 409 insufficient_capacity, never a 500."""
    keys = [api_key_issue(organisation=org).raw_key for org in racers]
    for round_number in range(3):
        slot_class = prefilled_class()
        body = {"slot_class": slot_class.pk, "mass_g": SIZE_G, "currency": "JPY"}
        calls = [
            partial(
                bearer_client(key).post,
                BOOKINGS,
                body,
                format="json",
                HTTP_IDEMPOTENCY_KEY=f"race-{round_number}-{index}",
            )
            for index, key in enumerate(keys)
        ]
        outcomes = run_together(calls)
        where = f"round {round_number}"
        assert [o.error for o in outcomes if o.error is not None] == [], where
        responses = [o.value for o in outcomes if o.value is not None]
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * SLOTS_LEFT + [409] * (RACERS - SLOTS_LEFT), where
        refusals = [r.json() for r in responses if r.status_code == 409]
        assert {(r["code"], r["available_g"]) for r in refusals} == {
            ("insufficient_capacity", 0)
        }, where
        created = {r.json()["reference"] for r in responses if r.status_code == 201}
        assert len(created) == SLOTS_LEFT, where
        live_g, _units = live_totals(slot_class.pk)
        assert live_g == CAPACITY_G, where
        assert counters(slot_class.pk) == (live_g, 0), where


# --- the race is real: without the row lock the same race loses updates -------------------


def test_without_the_row_lock_the_race_loses_updates_and_with_it_never(
    racers: list[Organisation], settings: Settings
) -> None:
    """Proves the race tests can fail: with ``slot_class_qs_for_update`` reduced to a plain
    read, 32 racers oversell the class or drift its counter (or trip the database's
    capacity constraint) within a few rounds. The same detector then finds nothing with the
    lock on."""
    settings.MOONSLOT_DISABLE_CAPACITY_LOCK = True
    unlocked_rounds = 0
    for _attempt in range(10):
        unlocked_rounds += 1
        race = race_for_last_capacity(racers)
        assert race.unexpected == [], race.unexpected
        if race.lost_update_seen():
            break
    else:
        pytest.fail("10 rounds without the lock and no lost update: the race test is blind")

    settings.MOONSLOT_DISABLE_CAPACITY_LOCK = False
    for round_number in range(max(unlocked_rounds, 3)):
        race = race_for_last_capacity(racers)
        assert race.unexpected == [], f"round {round_number}"
        assert not race.lost_update_seen(), f"round {round_number}"
        assert len(race.held) == SLOTS_LEFT, f"round {round_number}"


# --- holds, confirms, cancels and sweeps on one class, with holds lapsing mid-race --------


@dataclass
class MixedClass:
    """A class prepared for the mixed race; each list is one role the race gives its
    bookings. ``t0`` is the race's present; ``t1`` lies after the short holds lapse."""

    slot_class: SlotClass
    t0: datetime
    t1: datetime
    lapsed_before: list[Booking]  # lapsed before t0, not swept yet
    lapsing: list[Booking]  # live at t0, lapsed at t1
    lapsing_to_cancel: list[Booking]  # live at t0 and cancelled at t0, lapsed at t1
    confirmed_before_expiry: list[Booking]  # short holds confirmed before t0: must stay
    confirmed_to_cancel: list[Booking]
    held_to_confirm: list[Booking]  # long holds, confirmed during the race
    held_to_cancel: list[Booking]  # long holds, cancelled during the race


MIXED_CAPACITY_G = 24_000
LONG_HOLD_MINUTES = 3 * 24 * 60


def mixed_class() -> MixedClass:
    slot_class = SlotClassFactory.create(
        capacity_g=MIXED_CAPACITY_G, min_mass_g=500, max_mass_g=2000, mass_step_g=500
    )
    t0 = timezone.now()

    def placed(count: int, *, at: datetime, minutes: int) -> list[Booking]:
        return [
            hold(slot_class, OrganisationFactory.create(), now=at, mass_g=SIZE_G,
                 hold_minutes=minutes)
            for _ in range(count)
        ]  # fmt: skip

    before = t0 - timedelta(minutes=5)
    lapsing, lapsing_to_cancel = placed(4, at=before, minutes=10), placed(2, at=before, minutes=10)
    confirmed_before_expiry = placed(2, at=before, minutes=10)
    confirmed_to_cancel = placed(2, at=before, minutes=10)
    for booking in (*confirmed_before_expiry, *confirmed_to_cancel):
        services.booking_confirm(booking_id=booking.pk, actor=SYSTEM, now=t0 - timedelta(minutes=1))
    held_to_confirm = placed(4, at=before, minutes=LONG_HOLD_MINUTES)
    held_to_cancel = placed(2, at=before, minutes=LONG_HOLD_MINUTES)
    # Placed "earlier" than the rest, so none of the holds above has released them.
    lapsed_before = placed(3, at=t0 - timedelta(minutes=30), minutes=20)
    return MixedClass(
        slot_class=slot_class,
        t0=t0,
        t1=t0 + timedelta(minutes=10),
        lapsed_before=lapsed_before,
        lapsing=lapsing,
        lapsing_to_cancel=lapsing_to_cancel,
        confirmed_before_expiry=confirmed_before_expiry,
        confirmed_to_cancel=confirmed_to_cancel,
        held_to_confirm=held_to_confirm,
        held_to_cancel=held_to_cancel,
    )


def observe_counters(
    slot_class: SlotClass, now: datetime, errors: list[str]
) -> Callable[[threading.Event], None]:
    """An observer for ``run_together``: in one statement (one snapshot) it reads the counter,
    the sum of the live bookings and the catalogue's availability, again and again while the
    race runs, and notes any moment where they disagree."""
    live = (
        Booking.objects.filter(
            slot_class=OuterRef("pk"), status__in=[BookingStatus.HELD, BookingStatus.CONFIRMED]
        )
        .order_by()
        .values("slot_class")
        .annotate(total=Sum("mass_g"))
        .values("total")
    )
    query = (
        SlotClass.objects.with_availability(now)
        .annotate(live_g=Coalesce(Subquery(live), Value(0), output_field=IntegerField()))
        .filter(pk=slot_class.pk)
    )

    def watch(stop: threading.Event) -> None:
        looks = 0
        while not stop.is_set() or looks == 0:
            row = query.get()
            looks += 1
            available_g = row.available_g
            if row.taken_g != getattr(row, "live_g"):  # noqa: B009 (annotation)
                errors.append(f"counter {row.taken_g} g but live bookings {row.live_g} g")
            if not 0 <= available_g <= row.capacity_g:
                errors.append(f"availability {available_g} g outside 0..{row.capacity_g}")

    return watch


def mixed_race_calls(mixed: MixedClass, newcomers: list[Organisation]) -> list[Callable[[], Any]]:
    """Newcomers' holds first (odd ones at t0, even ones at t1), then the confirms, the
    cancels (all at t0) and three sweeps (at t1, t0, t1)."""
    t0, t1 = mixed.t0, mixed.t1
    calls: list[Callable[[], Any]] = [
        partial(
            hold,
            mixed.slot_class,
            organisation,
            now=t0 if index % 2 else t1,
            mass_g=SIZE_G,
            hold_minutes=LONG_HOLD_MINUTES,
        )
        for index, organisation in enumerate(newcomers)
    ]
    calls += [
        partial(services.booking_confirm, booking_id=b.pk, actor=SYSTEM, now=t0)
        for b in mixed.held_to_confirm
    ]
    calls += [
        partial(services.booking_cancel, booking_id=b.pk, actor=SYSTEM, now=t0)
        for b in (*mixed.held_to_cancel, *mixed.confirmed_to_cancel, *mixed.lapsing_to_cancel)
    ]
    calls += [partial(services.bookings_expire, now=at) for at in (t1, t0, t1)]
    return calls


def expected_statuses(mixed: MixedClass, outcomes: list[Outcome[Any]]) -> dict[int, str]:
    """Where each booking must end, from the roles the test gave them."""
    expected: dict[int, str] = {}
    for booking in [*mixed.lapsed_before, *mixed.lapsing]:
        expected[booking.pk] = BookingStatus.EXPIRED
    for booking in [*mixed.confirmed_before_expiry, *mixed.held_to_confirm]:
        expected[booking.pk] = BookingStatus.CONFIRMED
    for booking in [*mixed.confirmed_to_cancel, *mixed.held_to_cancel]:
        expected[booking.pk] = BookingStatus.CANCELLED
    # Cancelled at t0 while a sweep at t1 may already have expired them: either end is right,
    # as long as the cancel reported what the row says.
    reported = {o.value.pk: o.value.status for o in outcomes if isinstance(o.value, Booking)}
    for booking in mixed.lapsing_to_cancel:
        assert reported[booking.pk] in (BookingStatus.CANCELLED, BookingStatus.EXPIRED)
        expected[booking.pk] = reported[booking.pk]
    return expected


def test_mixed_race_keeps_counters_equal_to_the_live_bookings() -> None:
    for round_number in range(3):
        where = f"round {round_number}"
        mixed = mixed_class()
        newcomers = [OrganisationFactory.create() for _ in range(12)]
        seen: list[str] = []
        outcomes = run_together(
            mixed_race_calls(mixed, newcomers),
            observers=[observe_counters(mixed.slot_class, mixed.t0, seen) for _ in range(2)],
        )
        unexpected = [
            o.error
            for o in outcomes
            if o.error is not None and not isinstance(o.error, InsufficientCapacity)
        ]
        assert unexpected == [], where
        assert seen == [], where

        expected = expected_statuses(mixed, outcomes)
        newcomer_outcomes = outcomes[: len(newcomers)]
        new_holds = [o.value for o in newcomer_outcomes if isinstance(o.value, Booking)]
        expected.update({b.pk: BookingStatus.HELD for b in new_holds})
        final = dict(
            Booking.objects.filter(slot_class=mixed.slot_class).values_list("pk", "status")
        )
        assert final == expected, where

        # A hold at t1 finds every short hold gone (10 kg live besides the newcomers), so
        # none can be refused; a refusal at t0 needs at least 8 newcomers already in.
        refused = [
            index
            for index, o in enumerate(newcomer_outcomes)
            if isinstance(o.error, InsufficientCapacity)
        ]
        assert all(index % 2 for index in refused), where
        assert not refused or len(new_holds) >= 8, where

        live = [status for status in expected.values() if status in CAPACITY_STATUSES]
        assert live_totals(mixed.slot_class.pk) == (SIZE_G * len(live), 0), where
        assert counters(mixed.slot_class.pk) == (SIZE_G * len(live), 0), where
        # Each lapsed hold was expired once, by whichever sweep or hold got there first.
        expired_events = BookingEvent.objects.filter(
            booking__slot_class=mixed.slot_class, type="booking.expired"
        )
        expired = [status for status in expected.values() if status == BookingStatus.EXPIRED]
        assert expired_events.count() == len(expired), where


# --- interleavings that once broke, pinned --------------------------------------------


def raise_first_error(*outcomes: Outcome[Any]) -> None:
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error


def _hold_row_lock(booking_id: int, locked: threading.Event, release: threading.Event) -> None:
    """Stand-in for any transaction that has the booking row locked for a moment (another
    confirm, a payload update): takes the lock, then waits to be told to commit."""
    with transaction.atomic():
        Booking.objects.select_for_update().get(pk=booking_id)
        locked.set()
        assert release.wait(30)


def test_sweep_racing_a_confirm_at_the_expiry_edge_leaves_it_confirmed() -> None:
    """The minimal interleaving: the confirm has read the hold as live (its `now` is before
    expiry) and holds the row; the sweep (its `now` after expiry) counts the hold as lapsed
    and waits on the row; the confirm commits. The booking must stay confirmed, the sweep
    must expire nothing and report nothing wrong."""
    slot_class = SlotClassFactory.create()
    start = timezone.now()
    booking = hold(slot_class, OrganisationFactory.create(), now=start, mass_g=SIZE_G,
                   hold_minutes=10)  # fmt: skip
    expiry = start + timedelta(minutes=10)
    locked, release = threading.Event(), threading.Event()
    holder = Background(lambda: _hold_row_lock(booking.pk, locked, release), name="row-lock")
    try:
        assert locked.wait(10)
        confirm = Background(
            lambda: services.booking_confirm(
                booking_id=booking.pk, actor=SYSTEM, now=expiry - timedelta(seconds=1)
            ),
            name="confirm",
        )
        wait_until_blocked_on_lock(confirm.pid)
        sweep = Background(
            lambda: services.bookings_expire(now=expiry + timedelta(seconds=1)), name="sweep"
        )
        wait_until_blocked_on_lock(sweep.pid)
    finally:
        release.set()
    assert holder.outcome().error is None
    confirmed, swept = confirm.outcome(), sweep.outcome()
    raise_first_error(confirmed, swept)
    assert swept.value == 0
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert counters(slot_class.pk) == live_totals(slot_class.pk) == (SIZE_G, 0)


def test_capped_hold_racing_an_on_account_confirm_does_not_deadlock() -> None:
    """The confirm (its `now` before expiry) queues first for the organisation's lock; the
    hold (its `now` after expiry) then expires the booking in its release and queues for the
    organisation too. With one lock order the confirm goes first and both succeed."""
    reseller = ResellerFactory.create(held_mass_cap_g=50_000)
    slot_class = SlotClassFactory.create()
    start = timezone.now()
    booking = hold(slot_class, reseller, now=start, mass_g=SIZE_G, hold_minutes=10)
    expiry = start + timedelta(minutes=10)
    locked, release = threading.Event(), threading.Event()

    def lock_organisation() -> None:  # a stand-in for any other work under the org's lock
        with transaction.atomic():
            Organisation.objects.select_for_update().get(pk=reseller.pk)
            locked.set()
            assert release.wait(30)

    holder = Background(lock_organisation, name="org-lock")
    try:
        assert locked.wait(10)
        confirm = Background(
            lambda: services.booking_confirm(
                booking_id=booking.pk,
                actor=SYSTEM,
                on_account=True,
                now=expiry - timedelta(seconds=1),
            ),
            name="confirm",
        )
        wait_until_blocked_on_lock(confirm.pid)
        second = Background(
            lambda: hold(slot_class, reseller, now=expiry + timedelta(seconds=1), mass_g=SIZE_G),
            name="hold",
        )
        wait_until_blocked_on_lock(second.pid)
    finally:
        release.set()
    assert holder.outcome().error is None
    confirmed, held = confirm.outcome(), second.outcome()
    raise_first_error(confirmed, held)
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert held.value is not None
    assert counters(slot_class.pk) == live_totals(slot_class.pk) == (2 * SIZE_G, 0)


def test_one_capped_organisation_racing_on_two_classes_stops_exactly_at_its_cap() -> None:
    """A hold locks the class and then the organisation before it writes its rows: nothing
    deadlocks, and the cap (checked under the organisation's lock against what is committed,
    before the racer's own booking is written) lets exactly its worth of holds through,
    whichever class they are on."""
    cap_holds = 10
    reseller = ResellerFactory.create(held_mass_cap_g=cap_holds * SIZE_G)
    classes = [SlotClassFactory.create() for _ in range(2)]
    now = timezone.now()
    calls = [partial(hold, classes[i % 2], reseller, now=now, mass_g=SIZE_G) for i in range(RACERS)]

    outcomes = run_together(calls)

    held = [o for o in outcomes if o.error is None]
    refused = [o for o in outcomes if isinstance(o.error, HoldLimitExceeded)]
    others = [o.error for o in outcomes if o.error is not None and o not in refused]
    assert others == []
    assert len(held) == cap_holds
    assert len(refused) == RACERS - cap_holds
    assert sum(live_totals(c.pk)[0] for c in classes) == cap_holds * SIZE_G
    for slot_class in classes:
        assert counters(slot_class.pk) == live_totals(slot_class.pk)


def test_helpers_close_every_thread_connection(racers: list[Organisation]) -> None:
    """The race threads must not leave connections open against the test database."""

    def count_backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            row = cursor.fetchone()
        assert row is not None
        return int(row[0])

    before = count_backends()
    race_for_last_capacity(racers)
    # A backend ends a moment after its client disconnects: poll, bounded. (A backend of an
    # earlier test may still be ending too, so the count may even drop below `before`.)
    until = time.monotonic() + 10
    while count_backends() > before and time.monotonic() < until:
        time.sleep(0.02)
    assert count_backends() <= before
