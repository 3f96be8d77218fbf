"""A sale opening: many reseller integrations placing holds on one slot class at the same
moment, until it is sold out, and the proof afterwards that nothing was oversold.

Each client is a thread with its own connection (``http.client``; it reconnects whenever
gunicorn's sync workers close one), its own reseller key and a fresh ``Idempotency-Key`` per
request. A client asks for a random small mass; after a 409 ``insufficient_capacity`` it asks
for no more than the ``available_g`` the server reported, and everyone stops once less than
the class's minimum is left, so the class ends exactly sold out. wrk cannot do that (unique
bodies and headers per request, stopping on the server's answer), hence Python: the report
gives the CPU the client itself used and its own ceiling against the baseline, so its cost
is visible rather than hidden in the figures.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from bench.loadgen import Request, percentile, send


@dataclass(frozen=True)
class SaleSpec:
    host: str
    port: int
    slot_class_id: int
    keys: list[str]
    clients: int
    masses_g: tuple[int, ...]
    min_mass_g: int
    mass_step_g: int
    currency: str = "JPY"
    deadline_s: float = 60.0
    path: str = "/api/v1/bookings/"


@dataclass
class SaleOutcome:
    attempts: int
    holds: int
    held_mass_g: int  # what the 201 responses said was held: the client's own tally
    insufficient: int  # 409 insufficient_capacity
    errors: int  # anything else: other statuses or codes, socket errors
    error_kinds: dict[str, int]
    wall_s: float
    client_cpu_s: float
    latencies_ms: list[float] = field(repr=False)
    sold_out: bool = False

    @property
    def holds_per_s(self) -> float:
        return self.holds / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.99)

    @property
    def client_cpu_share(self) -> float:
        """Cores the client kept busy on average (1.0 = one core of the two)."""
        return self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def hold_request(spec: SaleSpec, key: str, mass_g: int) -> Request:
    body = {
        "slot_class": spec.slot_class_id,
        "mass_g": mass_g,
        "currency": spec.currency,
        "customer": {
            "name": "Sale Opening Customer",
            "email": "customer@bench.example",
            "organisation": "Bench Space Co.",
        },
    }
    return Request(
        "POST",
        spec.path,
        body=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )


class _Board:
    """What the clients share: the last availability the server reported, and the stop flag."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.available_g: int | None = None
        self.stop = threading.Event()

    def note_available(self, available_g: int, min_mass_g: int) -> None:
        with self.lock:
            if self.available_g is None or available_g < self.available_g:
                self.available_g = available_g
        if available_g < min_mass_g:
            self.stop.set()

    def mass_for(self, wanted_g: int, step_g: int) -> int:
        with self.lock:
            ceiling = self.available_g
        if ceiling is None or wanted_g <= ceiling:
            return wanted_g
        return max(step_g, ceiling // step_g * step_g)


def run_sale(spec: SaleSpec) -> SaleOutcome:
    board = _Board()
    lock = threading.Lock()
    latencies: list[float] = []
    tally: Counter[str] = Counter()
    held_mass = [0]
    first_start: list[float] = []
    last_end: list[float] = []
    barrier = threading.Barrier(spec.clients)
    deadline = time.perf_counter() + spec.deadline_s

    def client(number: int) -> None:
        rng = random.Random(number)
        key = spec.keys[number % len(spec.keys)]
        conn = http.client.HTTPConnection(spec.host, spec.port, timeout=60)
        mine: list[float] = []
        counts: Counter[str] = Counter()
        mass_total = 0
        barrier.wait()
        started_at = time.perf_counter()
        ended_at = started_at
        while not board.stop.is_set() and time.perf_counter() < deadline:
            mass_g = board.mass_for(rng.choice(spec.masses_g), spec.mass_step_g)
            request = hold_request(spec, key, mass_g)
            began = time.perf_counter()
            try:
                status, raw = send(conn, request)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                counts[f"socket:{type(exc).__name__}"] += 1
                time.sleep(0.05)  # a dead server must not turn the client into a busy loop
                continue
            ended_at = time.perf_counter()
            mine.append((ended_at - began) * 1000)
            kind, available = _classify(status, raw)
            counts[kind] += 1
            if kind == "held":
                mass_total += mass_g
            elif kind == "insufficient_capacity" and available is not None:
                board.note_available(available, spec.min_mass_g)
        conn.close()
        with lock:
            latencies.extend(mine)
            tally.update(counts)
            held_mass[0] += mass_total
            first_start.append(started_at)
            last_end.append(ended_at)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(spec.clients)]
    cpu_before = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_s = time.process_time() - cpu_before
    wall_s = (max(last_end) - min(first_start)) if first_start else 0.0
    errors = {k: v for k, v in tally.items() if k not in ("held", "insufficient_capacity")}
    return SaleOutcome(
        attempts=sum(tally.values()),
        holds=tally["held"],
        held_mass_g=held_mass[0],
        insufficient=tally["insufficient_capacity"],
        errors=sum(errors.values()),
        error_kinds=errors,
        wall_s=wall_s,
        client_cpu_s=cpu_s,
        latencies_ms=sorted(latencies),
        sold_out=board.stop.is_set(),
    )


def _classify(status: int, raw: bytes) -> tuple[str, int | None]:
    """What an answer means for the sale: ``held``, ``insufficient_capacity`` (with the
    ``available_g`` reported) or an error kind such as ``500`` or ``409:hold_limit_exceeded``."""
    if status == 201:
        return "held", None
    try:
        body = json.loads(raw)
    except ValueError:
        return str(status), None
    code = body.get("code") if isinstance(body, dict) else None
    if status == 409 and code == "insufficient_capacity":
        available = body.get("available_g")
        return "insufficient_capacity", available if isinstance(available, int) else None
    return f"{status}:{code}" if code else str(status), None


# --- the oversell check ----------------------------------------------------------------


@dataclass(frozen=True)
class ClassState:
    """A slot class after the sale, read from the database: its capacity, its counters, and
    the sums of the bookings that count against capacity (held, lapsed or not, and
    confirmed), computed from the rows independently of the counters."""

    capacity_g: int
    taken_g: int
    booked_g: int
    bookings: int
    capacity_units: int | None = None
    taken_units: int = 0
    booked_units: int = 0


@dataclass(frozen=True)
class OversellCheck:
    oversold_g: int  # how far the bookings pass capacity (0 when within)
    counter_drift_g: int  # counter minus the bookings' sum (0 when they agree)
    oversold_units: int = 0
    counter_drift_units: int = 0
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def check_oversell(state: ClassState) -> OversellCheck:
    """Nothing may be sold beyond capacity, by the rows or by the counter, and the counter
    must equal the rows' sum: otherwise a later hold would trust a wrong figure."""
    problems = []
    oversold_g = max(0, state.booked_g - state.capacity_g, state.taken_g - state.capacity_g)
    if oversold_g:
        problems.append(
            f"OVERSOLD by {oversold_g} g: bookings hold {state.booked_g} g and the counter "
            f"{state.taken_g} g of {state.capacity_g} g"
        )
    drift_g = state.taken_g - state.booked_g
    if drift_g:
        problems.append(
            f"counter drift: taken_g is {state.taken_g} g but held and confirmed bookings "
            f"sum to {state.booked_g} g"
        )
    oversold_units = drift_units = 0
    if state.capacity_units is not None:
        oversold_units = max(
            0,
            state.booked_units - state.capacity_units,
            state.taken_units - state.capacity_units,
        )
        if oversold_units:
            problems.append(f"OVERSOLD by {oversold_units} units")
        drift_units = state.taken_units - state.booked_units
        if drift_units:
            problems.append(
                f"counter drift: taken_units is {state.taken_units}, bookings sum to "
                f"{state.booked_units}"
            )
    return OversellCheck(
        oversold_g=oversold_g,
        counter_drift_g=drift_g,
        oversold_units=oversold_units,
        counter_drift_units=drift_units,
        problems=tuple(problems),
    )


def read_class_state(slot_class_id: int) -> ClassState:
    """The class's figures from the database, for ``check_oversell``."""
    from django.db.models import Count, Sum

    from bookings.models import CAPACITY_STATUSES, Booking
    from marketplace.models import SlotClass

    slot_class = SlotClass.objects.get(pk=slot_class_id)
    sums = Booking.objects.filter(
        slot_class_id=slot_class_id, status__in=CAPACITY_STATUSES
    ).aggregate(mass=Sum("mass_g"), units=Sum("quantity"), count=Count("pk"))
    return ClassState(
        capacity_g=slot_class.capacity_g,
        taken_g=slot_class.taken_g,
        booked_g=sums["mass"] or 0,
        bookings=sums["count"] or 0,
        capacity_units=slot_class.capacity_units,
        taken_units=slot_class.taken_units,
        booked_units=sums["units"] or 0,
    )
