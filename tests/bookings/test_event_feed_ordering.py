"""The events feed under out-of-order commits: an event whose transaction commits after a
later one must still reach a poller that has already moved past the later one, once and
only once. Needs real concurrent transactions, so PostgreSQL only."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.models import Organisation
from bookings import services
from bookings.models import Booking, BookingEvent, BookingStatus, EventFeedCursor
from marketplace.models import SlotClass
from tests.bookings.concurrency_helpers import SYSTEM, Background, hold, run_together
from tests.factories import ResellerFactory, SlotClassFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.usefixtures("require_postgres", "feed_cursor"),
]


@pytest.fixture
def feed_cursor() -> None:
    # The migration creates the sequencer's row, but a transactional test's flush removes it.
    EventFeedCursor.objects.get_or_create(pk=1)


class Poller:
    """A reseller's poller as the API offers it: the feed after its last ``seq``."""

    def __init__(self, organisation: Organisation, *, limit: int = 100) -> None:
        self.organisation = organisation
        self.limit = limit
        self.cursor = 0
        self.seen: list[BookingEvent] = []

    def poll(self) -> list[BookingEvent]:
        batch = services.booking_event_feed(
            organisation=self.organisation, after=self.cursor, limit=self.limit
        )
        if batch:
            assert batch[-1].seq is not None
            self.cursor = batch[-1].seq
        self.seen += batch
        return batch


class NaivePoller:
    """What the feed must not be: reading ``id > last id seen``. Ids are handed out when a
    row is inserted, not when it commits, so a late commit lands behind the cursor."""

    def __init__(self, organisation: Organisation) -> None:
        self.organisation = organisation
        self.last_id = 0
        self.seen: list[BookingEvent] = []

    def poll(self) -> list[BookingEvent]:
        batch = list(
            BookingEvent.objects.filter(
                organisation=self.organisation, pk__gt=self.last_id
            ).order_by("pk")
        )
        if batch:
            self.last_id = batch[-1].pk
        self.seen += batch
        return batch


def test_an_event_committed_late_is_delivered_once_after_the_cursor() -> None:
    reseller = ResellerFactory.create()
    # Two classes, so the open transaction's class lock does not hold up the other hold.
    early_class, other_class = SlotClassFactory.create(), SlotClassFactory.create()
    now = timezone.now()
    hold(early_class, reseller, now=now, mass_g=1000)
    poller, naive = Poller(reseller), NaivePoller(reseller)
    assert [e.type for e in poller.poll()] == [e.type for e in naive.poll()] == ["booking.held"]

    inserted, may_commit = threading.Event(), threading.Event()

    def late_transaction() -> Booking:
        with transaction.atomic():
            booking = hold(early_class, reseller, now=now, mass_g=1000)
            inserted.set()
            assert may_commit.wait(30)
        return booking

    late = Background(late_transaction, name="transaction A")
    try:
        assert inserted.wait(10), "transaction A never inserted its event"
        # Transaction B: another thread, inserted after A, committed before it.
        prompt = Background(
            lambda: hold(other_class, reseller, now=now, mass_g=1000), name="transaction B"
        ).outcome()
        assert prompt.error is None
        assert prompt.value is not None
        b_event = BookingEvent.objects.get(booking=prompt.value)

        assert poller.poll() == [b_event]
        assert naive.poll() == [b_event]
    finally:
        may_commit.set()
    committed_late = late.outcome()
    assert committed_late.error is None
    a_event = BookingEvent.objects.get(booking=committed_late.value)
    assert a_event.pk < b_event.pk  # A's id came first: the order a naive cursor relies on

    assert poller.poll() == [a_event]  # delivered, after B, and B not again
    a_event.refresh_from_db()
    b_event.refresh_from_db()
    assert a_event.seq is not None
    assert b_event.seq is not None
    assert a_event.seq > b_event.seq
    assert poller.poll() == []

    # The naive poller has moved past A's id and never sees it: the scenario does catch
    # the skip a feed by id would have.
    assert naive.poll() == []
    assert a_event not in naive.seen
    everything = list(BookingEvent.objects.filter(organisation=reseller).order_by("seq"))
    assert poller.seen == everything
    assert naive.seen != everything


def writer(
    seed: int, classes: list[SlotClass], organisations: list[Organisation], now: datetime
) -> Callable[[], int]:
    """A thread of random holds, confirms and cancels, each in a transaction that lingers
    0, 5 or 40 ms before it commits, so commits land out of id order. Returns how many
    bookings it made."""
    rng = random.Random(seed)

    def run() -> int:
        mine: list[Booking] = []
        for _ in range(6):
            with transaction.atomic():
                held = [b for b in mine if b.status == BookingStatus.HELD]
                if held and rng.random() < 0.5:
                    booking = rng.choice(held)
                    service = rng.choice([services.booking_confirm, services.booking_cancel])
                    changed = service(booking_id=booking.pk, actor=SYSTEM, now=now)
                    mine[mine.index(booking)] = changed
                else:
                    mine.append(
                        hold(
                            rng.choice(classes),
                            rng.choice(organisations),
                            now=now,
                            mass_g=500,
                        )
                    )
                time.sleep(rng.choice([0, 0.005, 0.04]))
        return len(mine)

    return run


def test_a_poller_sees_every_event_once_in_order_while_commits_land_out_of_order() -> None:
    watched, *others = [ResellerFactory.create() for _ in range(3)]
    # Most bookings are the watched organisation's, so its own events interleave too.
    organisations = [watched, watched, *others]
    classes = [SlotClassFactory.create() for _ in range(16)]
    now = timezone.now()
    poller = Poller(watched, limit=5)  # small pages, so paging is exercised as well

    def poll_until_done(stop: threading.Event) -> None:
        while True:
            finished = stop.is_set()  # read before polling: this poll sees all their commits
            batch = poller.poll()
            if finished and not batch:
                return
            time.sleep(0.001)

    def sequence_until_done(stop: threading.Event) -> None:
        # The periodic sequencer task, run as often as it can go, numbering whatever has
        # committed between two of the writers' commits.
        while not stop.is_set():
            services.booking_events_sequence()

    outcomes = run_together(
        [writer(seed, classes, organisations, now) for seed in range(8)],
        observers=[poll_until_done, sequence_until_done],
    )
    assert [o.error for o in outcomes] == [None] * 8

    everything = list(BookingEvent.objects.filter(organisation=watched).order_by("seq"))
    assert everything, "the writers made no event for the watched organisation"
    assert all(e.seq is not None for e in everything)
    seen_ids = [e.pk for e in poller.seen]
    assert len(seen_ids) == len(set(seen_ids)), "an event was delivered twice"
    assert seen_ids == [e.pk for e in everything], "an event was skipped or reordered"
    seqs = [e.seq or 0 for e in poller.seen]
    assert seqs == sorted(seqs)
    # The run did put commits out of id order (else it proved nothing): some event got its
    # feed position after an event inserted later.
    by_seq = list(BookingEvent.objects.order_by("seq").values_list("pk", flat=True))
    assert by_seq != sorted(by_seq)
