"""Running booking services on real threads against PostgreSQL, for the concurrency tests.

Every thread gets its own database connection (Django's connections are per thread) and
closes it when it ends, so a test leaves no connection behind. Every wait is bounded: a call
still running at the deadline fails the test as a deadlock or hang, and its query is
cancelled by backend pid so the test database can still be flushed afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.db import connection
from django.db.models import Sum

from accounts.models import Organisation
from bookings import services
from bookings.models import CAPACITY_STATUSES, Booking
from bookings.services import Actor
from marketplace.models import SlotClass

T = TypeVar("T")

DEADLINE_S = 60.0
SYSTEM = Actor.system("concurrency-test")


# --- threads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one call returned, or what it raised."""

    index: int
    value: T | None = None
    error: BaseException | None = None


def backend_pid() -> int | None:
    """This thread's PostgreSQL backend, opening the connection if need be."""
    if connection.vendor != "postgresql":
        return None
    connection.ensure_connection()
    raw: Any = connection.connection
    return int(raw.info.backend_pid)


def cancel_backends(pids: Sequence[int]) -> None:
    """Cancel the running query of backends this test opened (never anyone else's)."""
    if not pids:
        return
    with connection.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_cancel_backend(%s)", [pid])


class _Pids:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_call: dict[int, int] = {}

    def record(self, index: int) -> None:
        pid = backend_pid()
        if pid is not None:
            with self._lock:
                self._by_call[index] = pid

    def of(self, indexes: Sequence[int]) -> list[int]:
        with self._lock:
            return [self._by_call[i] for i in indexes if i in self._by_call]


def run_together(
    calls: Sequence[Callable[[], T]],
    *,
    observers: Sequence[Callable[[threading.Event], None]] = (),
    deadline_s: float = DEADLINE_S,
) -> list[Outcome[T]]:
    """Run each call on its own thread, all released at once by a barrier (connections are
    opened before it, so the race is not spread out by connection set-up), and return their
    outcomes in call order. ``observers`` start with them and loop until the calls are done
    (they get an event that is set then); an observer's exception fails the run.

    Raises ``AssertionError`` when a call is still running at the deadline."""
    parties = len(calls) + len(observers)
    barrier = threading.Barrier(parties)
    stop = threading.Event()
    pids = _Pids()

    def start(index: int) -> None:
        try:
            pids.record(index)
        finally:
            # Always reach the barrier, so one failed connection cannot strand the others.
            barrier.wait(deadline_s)

    def call(index: int, fn: Callable[[], T]) -> T:
        try:
            start(index)
            return fn()
        finally:
            connection.close()

    def watch(index: int, fn: Callable[[threading.Event], None]) -> None:
        try:
            start(index)
            fn(stop)
        finally:
            connection.close()

    executor = ThreadPoolExecutor(max_workers=parties, thread_name_prefix="race")
    hung: list[int] = []
    try:
        futures = [executor.submit(call, i, fn) for i, fn in enumerate(calls)]
        watching = [executor.submit(watch, len(calls) + i, fn) for i, fn in enumerate(observers)]
        started = time.monotonic()
        pending = wait(futures, timeout=deadline_s).not_done
        stop.set()
        left = max(1.0, deadline_s - (time.monotonic() - started))
        pending_watchers = wait(watching, timeout=left).not_done
        hung = [i for i, f in enumerate(futures) if f in pending]
        hung += [len(calls) + i for i, f in enumerate(watching) if f in pending_watchers]
        if hung:
            cancel_backends(pids.of(hung))
            raise AssertionError(
                f"{len(hung)} of {parties} threads still running after {deadline_s:.0f} s: "
                "a deadlock or a hang"
            )
    finally:
        stop.set()
        executor.shutdown(wait=not hung, cancel_futures=True)
    for future in watching:
        future.result()
    return [_outcome(i, f) for i, f in enumerate(futures)]


def _outcome(index: int, future: Future[T]) -> Outcome[T]:
    error = future.exception()
    if error is not None:
        return Outcome(index, error=error)
    return Outcome(index, value=future.result())


class Background(Generic[T]):
    """One call on its own thread and connection, for tests that script an interleaving
    step by step. ``pid`` is the thread's backend once it has connected."""

    def __init__(self, fn: Callable[[], T], *, name: str = "background") -> None:
        self.pid: int | None = None
        self._connected = threading.Event()
        self._future: Future[T] = Future()
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()
        if not self._connected.wait(DEADLINE_S):
            raise AssertionError(f"{name} did not connect within {DEADLINE_S:.0f} s")

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self.pid = backend_pid()
            self._connected.set()
            self._future.set_result(fn())
        except BaseException as exc:
            self._future.set_exception(exc)
        finally:
            self._connected.set()
            connection.close()

    def outcome(self, deadline_s: float = DEADLINE_S) -> Outcome[T]:
        """Wait (bounded) for the call to end; cancel its query and fail if it does not."""
        self._thread.join(deadline_s)
        if self._thread.is_alive():
            if self.pid is not None:
                cancel_backends([self.pid])
            self._thread.join(5)
            raise AssertionError(f"{self._thread.name} still running after {deadline_s:.0f} s")
        return _outcome(0, self._future)


def wait_until_blocked_on_lock(pid: int | None, *, deadline_s: float = 10.0) -> None:
    """Bounded polling until backend ``pid`` waits for a lock (pg_stat_activity)."""
    assert pid is not None, "the thread has no PostgreSQL backend"
    seen: tuple[object, ...] | None = None
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT wait_event_type, state, query FROM pg_stat_activity WHERE pid = %s",
                [pid],
            )
            seen = cursor.fetchone()
        if seen is not None and seen[0] == "Lock":
            return
        time.sleep(0.005)
    raise AssertionError(f"backend {pid} never waited for a lock; last seen: {seen}")


# --- the booking side --------------------------------------------------------------------


def hold(
    slot_class: SlotClass,
    organisation: Organisation,
    *,
    now: datetime,
    mass_g: int | None = None,
    quantity: int | None = None,
    hold_minutes: int | None = None,
    channel: str = "api",
) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=organisation,
        channel=channel,
        actor=SYSTEM,
        mass_g=mass_g,
        quantity=quantity,
        hold_minutes=hold_minutes,
        now=now,
    )


def live_totals(slot_class_id: int) -> tuple[int, int]:
    """Mass and units of the class's held and confirmed rows, summed from the bookings
    themselves (never from the class's counters)."""
    totals = Booking.objects.filter(
        slot_class_id=slot_class_id, status__in=CAPACITY_STATUSES
    ).aggregate(mass=Sum("mass_g"), units=Sum("quantity"))
    return totals["mass"] or 0, totals["units"] or 0


def counters(slot_class_id: int) -> tuple[int, int]:
    taken_g, taken_units = SlotClass.objects.values_list("taken_g", "taken_units").get(
        pk=slot_class_id
    )
    return taken_g, taken_units
