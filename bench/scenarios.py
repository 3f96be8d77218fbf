"""The scenarios, each a function from the run's context to rows of the table.

Add one by writing a runner and listing it in ``SCENARIOS``; a feature that does not exist yet
is listed with ``runner=None`` and shows as "skipped (not built yet)" until someone writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bench import loadgen
from bench.backoffice import run_admin_bookings, run_manifest
from bench.cpu import CpuMeter, CpuUse
from bench.loadgen import LoadResult, Request
from bench.report import SKIPPED_NOT_BUILT, Row
from bench.sale import SaleSpec, check_oversell, hold_request, read_class_state, run_sale
from bench.server import http_status
from bench.sweep import run_sweep

if TYPE_CHECKING:  # bench.seed imports models, which need Django set up first
    from bench.seed import Catalogue, ManifestMission

BASELINE_PATH = "/api/v1/_bench/baseline/"
DEFAULTS_BASELINE_PATH = "/api/v1/_bench/baseline-defaults/"


@dataclass
class Context:
    host: str
    port: int
    duration_s: float
    warmup_s: float
    connections: int
    clients: int
    sweep_rows: int
    catalogue: Catalogue
    wrk: str | None
    say: Callable[[str], None]
    manifest_bookings: int = 10_000
    manifest_mission: ManifestMission | None = None  # seeded by the first scenario needing it
    meter: CpuMeter | None = None
    baseline_rps: float | None = None
    baseline_cpu_ms: float | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def tool(self) -> str:
        return "wrk" if self.wrk else "python"

    def ratio(self, rate: float | None) -> float | None:
        if rate is None or not self.baseline_rps:
            return None
        return rate / self.baseline_rps

    def cpu_ratio(self, cpu_ms: float | None) -> float | None:
        if not cpu_ms or not self.baseline_cpu_ms:
            return None
        return self.baseline_cpu_ms / cpu_ms

    def measured(self, work: Callable[[], T]) -> tuple[T, CpuUse | None]:
        """Run ``work`` and return what the server's processes spent on it."""
        if self.meter is None:
            return work(), None
        return self.meter.measure(work)


Runner = Callable[[Context], list[Row]]
T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    needs_server: bool
    runner: Runner | None  # None: the feature it measures is not built yet
    target: str = ""
    todo: str = ""


# --- HTTP reads ---------------------------------------------------------------------------


def measure_get(
    ctx: Context,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    connections: int | None = None,
) -> tuple[LoadResult, CpuUse | None]:
    """Warm up, then measure ``GET path`` for the run's duration with the run's tool; also
    returns the CPU the server spent during the measurement (not the warm-up). ``headers``
    go with every request (a session cookie); ``connections`` overrides the run's."""
    connections = connections or ctx.connections
    # A few requests one after the other first: each worker pays for importing the URLconf
    # and views on its first request (over half a second), which no steady state includes.
    for _ in range(6):
        status = http_status(ctx.host, ctx.port, path, timeout=60, headers=headers)
        if status != 200:  # wrk counts 3xx as success; a redirect must not pass for a page
            raise RuntimeError(f"GET {path} answered {status}, not 200")
    url = f"http://{ctx.host}:{ctx.port}{path}"

    def make() -> Request:
        return Request("GET", path, headers=dict(headers or {}))

    def load(seconds: float) -> LoadResult:
        if ctx.wrk:
            return loadgen.run_wrk(
                ctx.wrk, url, connections=connections, duration_s=seconds, headers=headers
            )
        return loadgen.python_load(
            ctx.host, ctx.port, make, connections=connections, duration_s=seconds
        )

    if ctx.warmup_s > 0:
        load(ctx.warmup_s)
    return ctx.measured(lambda: load(ctx.duration_s))


def http_row(
    ctx: Context,
    scenario: Scenario,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    connections: int | None = None,
) -> Row:
    """The table's row for ``GET path`` measured under ``scenario``'s name (the caller may
    rename it and add to its note and details)."""
    result, cpu = measure_get(ctx, path, headers=headers, connections=connections)
    if result.requests == 0:
        raise RuntimeError(f"no request to {path} completed in {ctx.duration_s:g}s")
    cpu_ms = cpu.per_request_ms(result.requests) if cpu else None
    return Row(
        name=scenario.name,
        title=scenario.title,
        rate=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        ratio=ctx.ratio(result.rps),
        cpu_ms=cpu_ms,
        cpu_ratio=ctx.cpu_ratio(cpu_ms),
        target=scenario.target,
        note=f"GET {path}",
        details=_cpu_details(cpu)
        | {
            "tool": result.tool,
            "requests": result.requests,
            "duration_s": round(result.duration_s, 3),
            "connections": connections or ctx.connections,
            "percentiles_ms": result.percentiles_ms,
            "non_2xx": result.non_2xx,
            "socket_errors": result.socket_errors,
        },
    )


def _cpu_details(cpu: CpuUse | None) -> dict[str, Any]:
    if cpu is None:
        return {}
    return {
        "app_cpu_s": round(cpu.app_s, 3),
        "db_cpu_s": round(cpu.db_s, 3),
        "loadgen_cpu_s": round(cpu.loadgen_s, 3),
    }


def run_baseline(ctx: Context) -> list[Row]:
    row = http_row(ctx, SCENARIO_BY_NAME["baseline"], BASELINE_PATH)
    ctx.baseline_rps = row.rate
    ctx.baseline_cpu_ms = row.cpu_ms
    row.ratio = 1.0
    row.cpu_ratio = 1.0 if row.cpu_ms else None
    defaults = http_row(ctx, SCENARIO_BY_NAME["baseline"], DEFAULTS_BASELINE_PATH)
    defaults.name = "baseline-defaults"
    defaults.title = "baseline + project auth/throttles"
    defaults.target = "info"
    return [row, defaults]


def run_api_missions(ctx: Context) -> list[Row]:
    return [http_row(ctx, SCENARIO_BY_NAME["api-missions"], "/api/v1/missions/")]


def run_api_mission(ctx: Context) -> list[Row]:
    path = f"/api/v1/missions/{ctx.catalogue.detail_code}/"
    return [http_row(ctx, SCENARIO_BY_NAME["api-mission"], path)]


def run_page_missions(ctx: Context) -> list[Row]:
    return [http_row(ctx, SCENARIO_BY_NAME["page-missions"], "/")]


def run_page_mission(ctx: Context) -> list[Row]:
    path = f"/missions/{ctx.catalogue.detail_code}/"
    return [http_row(ctx, SCENARIO_BY_NAME["page-mission"], path)]


# --- the sale opening ---------------------------------------------------------------------


def _client_ceiling(ctx: Context, spec: SaleSpec) -> LoadResult:
    """The sale client's own limit: the same threads and request shape (JSON body, fresh
    Idempotency-Key) against the baseline, which does no work (the key is left out: the
    baseline has no authentication to read it)."""

    def make() -> Request:
        request = hold_request(spec, "", 200)
        request.path = BASELINE_PATH
        del request.headers["Authorization"]
        return request

    return loadgen.python_load(
        ctx.host, ctx.port, make, connections=spec.clients, duration_s=min(2.0, ctx.duration_s)
    )


def run_sale_opening(ctx: Context) -> list[Row]:
    from django.urls import NoReverseMatch, reverse

    from bench.seed import SALE_MASSES_G, SALE_STEP_G

    scenario = SCENARIO_BY_NAME["sale-opening"]
    try:
        reverse("api-booking-list")
    except NoReverseMatch:
        return [Row(scenario.name, scenario.title, "skipped", note="hold API not built yet")]
    spec = SaleSpec(
        host=ctx.host,
        port=ctx.port,
        slot_class_id=ctx.catalogue.sale_class_id,
        keys=ctx.catalogue.reseller_keys,
        clients=ctx.clients,
        masses_g=SALE_MASSES_G,
        min_mass_g=SALE_STEP_G,
        mass_step_g=SALE_STEP_G,
        deadline_s=max(60.0, ctx.duration_s * 10),
    )
    ceiling = _client_ceiling(ctx, spec)
    ctx.say(
        f"  sale client ceiling against the baseline: {ceiling.rps:,.0f} req/s "
        f"({spec.clients} threads)"
    )
    outcome, cpu = ctx.measured(lambda: run_sale(spec))
    cpu_ms = cpu.per_request_ms(outcome.attempts) if cpu else None
    state = read_class_state(spec.slot_class_id)
    check = check_oversell(state)
    problems = list(check.problems)
    warnings: list[str] = []
    if outcome.held_mass_g != state.booked_g:
        mismatch = (
            f"the server acknowledged {outcome.held_mass_g} g of holds (201s) but the class "
            f"has {state.booked_g} g of held and confirmed bookings"
        )
        # A request that failed in flight may have committed; with no failure the two
        # tallies must agree exactly.
        (warnings if outcome.errors else problems).append(mismatch)
    ctx.checks["oversell"] = {
        "ok": not problems,
        "problems": problems,
        "warnings": warnings,
        "capacity_g": state.capacity_g,
        "taken_g": state.taken_g,
        "booked_g": state.booked_g,
        "acknowledged_g": outcome.held_mass_g,
        "bookings": state.bookings,
        "oversold_g": check.oversold_g,
        "counter_drift_g": check.counter_drift_g,
    }
    ctx.failed_checks.extend(problems)
    sold = "sold out" if outcome.sold_out else f"NOT sold out after {outcome.wall_s:.0f}s"
    row = Row(
        name=scenario.name,
        title=scenario.title,
        status="ok" if not problems else "failed",
        unit="holds/s",
        rate=outcome.holds_per_s,
        p50_ms=outcome.p50_ms,
        p99_ms=outcome.p99_ms,
        errors=outcome.errors,
        ratio=ctx.ratio(outcome.holds_per_s),
        cpu_ms=cpu_ms,
        cpu_ratio=ctx.cpu_ratio(cpu_ms),
        target=scenario.target,
        note=(
            f"{outcome.holds} holds, {outcome.insufficient}×409 insufficient_capacity, {sold}, "
            + ("0 oversold" if check.oversold_g == 0 else f"OVERSOLD {check.oversold_g} g")
            + "".join(f"; {text}" for text in [*problems, *warnings])
        ),
        details=_cpu_details(cpu)
        | {
            "clients": spec.clients,
            "keys": len(spec.keys),
            "attempts": outcome.attempts,
            "holds": outcome.holds,
            "insufficient_capacity": outcome.insufficient,
            "error_kinds": outcome.error_kinds,
            "wall_s": round(outcome.wall_s, 3),
            "sold_out": outcome.sold_out,
            "client_cpu_s": round(outcome.client_cpu_s, 3),
            "client_cpu_cores": round(outcome.client_cpu_share, 3),
            "client_ceiling_rps": round(ceiling.rps, 1),
            "client_ceiling_p50_ms": ceiling.p50_ms,
        },
    )
    return [row]


# --- the expiry sweep ---------------------------------------------------------------------


def run_expiry_sweep(ctx: Context) -> list[Row]:
    from bench.seed import analyze_tables, seed_lapsed_holds

    scenario = SCENARIO_BY_NAME["expiry-sweep"]
    started = time.perf_counter()
    seeded = seed_lapsed_holds(total=ctx.sweep_rows)
    analyze_tables()
    ctx.say(f"  seeded {seeded.bookings:,} lapsed holds in {time.perf_counter() - started:.1f}s")
    outcome = run_sweep(seeded)
    ctx.checks["sweep"] = {
        "ok": not outcome.problems,
        "problems": list(outcome.problems),
        "released": outcome.released,
        "seconds": round(outcome.seconds, 3),
    }
    ctx.failed_checks.extend(outcome.problems)
    return [
        Row(
            name=scenario.name,
            title=scenario.title,
            status="ok" if not outcome.problems else "failed",
            unit="rows/s",
            rate=outcome.rows_per_s,
            errors=len(outcome.problems),
            target=scenario.target,
            note=f"{outcome.released:,} holds released in {outcome.seconds:.2f} s"
            + ("" if not outcome.problems else "; " + "; ".join(outcome.problems)),
            details={"seconds": outcome.seconds, "rows": outcome.released},
        )
    ]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("baseline", "baseline: bare DRF APIView, no DB", True, run_baseline, target="1.00"),
    Scenario(
        "api-missions", "API GET /missions/ (catalogue)", True, run_api_missions, target="≥ 0.50"
    ),
    Scenario("api-mission", "API GET /missions/{code}/", True, run_api_mission, target="≥ 0.50"),
    Scenario("page-missions", "page / (mission list)", True, run_page_missions, target="≥ 0.35"),
    Scenario("page-mission", "page /missions/{code}/", True, run_page_mission, target="≥ 0.35"),
    Scenario(
        "sale-opening",
        "sale opening: API holds, one class",
        True,
        run_sale_opening,
        target="PG: ≥ 200/s, p99 < 250",
    ),
    Scenario(
        "expiry-sweep",
        "expiry sweep of lapsed holds",
        False,
        run_expiry_sweep,
        target="PG: 100k < 5 s",
    ),
    Scenario(
        "manifest",
        "manifest of 10,000 confirmed bookings",
        False,
        run_manifest,
        target="PG: < 5 s, constant queries",
    ),
    Scenario(
        "admin-bookings",
        "admin booking changelist, 10,000+",
        True,
        run_admin_bookings,
        target="info: s/page, queries",
    ),
)
SCENARIO_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def scenario_of(row_name: str) -> Scenario | None:
    """The scenario a row belongs to (a scenario may give several rows: ``manifest-pdf``)."""
    owners = [s for s in SCENARIOS if row_name == s.name or row_name.startswith(s.name + "-")]
    return max(owners, key=lambda s: len(s.name), default=None)


def skipped_row(scenario: Scenario) -> Row:
    return Row(scenario.name, scenario.title, "skipped", note=SKIPPED_NOT_BUILT)
