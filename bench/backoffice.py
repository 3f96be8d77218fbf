"""Scenarios 5 and 6: the back office at the size of a full mission.

- ``manifest``: building the payload manifest of a mission with 10,000 confirmed bookings,
  in-process (a worker builds it, never a request): the build with JSON and CSV apart from
  the PDF, each timed, with the queries counted and compared with those of a tiny mission
  (the count must not grow with the bookings).
- ``admin-bookings``: the staff booking changelist with 10,000+ bookings, under gunicorn,
  signed in as a superuser whose session has passed the second factor: seconds per page for
  the first page, the last page, a search and a mission filter, with the queries each costs
  (counted in-process through Django's test client on the same database).

Both share one seeded mission (``Context.manifest_mission``), written the first time either
needs it, after the catalogue scenarios have run, so it never changes their figures.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.report import Row

if TYPE_CHECKING:
    from django.test import Client

    from bench.scenarios import Context
    from bench.seed import ManifestMission

MANIFEST_CODE = "MANIFEST"
SMALL_MANIFEST_CODE = "MANIFEST-S"
SMALL_MANIFEST_BOOKINGS = 40
MANIFEST_TARGET_S = 5.0
ADMIN_CHANGELIST = "/admin/bookings/booking/"
ADMIN_CONNECTIONS = 2  # a few staff at once, not a crowd: the latency is the figure
BENCH_STAFF_EMAIL = "bench-admin@bench.example"


def manifest_mission(ctx: Context) -> ManifestMission:
    """The mission with ``ctx.manifest_bookings`` confirmed bookings, seeded once per run."""
    if ctx.manifest_mission is None:
        from bench.seed import analyze_tables, seed_manifest_mission

        started = time.perf_counter()
        ctx.manifest_mission = seed_manifest_mission(
            total=ctx.manifest_bookings, code=MANIFEST_CODE
        )
        analyze_tables()
        ctx.say(
            f"  seeded {ctx.manifest_bookings:,} confirmed bookings on {MANIFEST_CODE} in "
            f"{time.perf_counter() - started:.1f}s"
        )
    return ctx.manifest_mission


# --- the manifest ----------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestTiming:
    lines: int
    build_s: float
    json_s: float
    csv_s: float
    queries: int
    json_bytes: int
    csv_bytes: int
    version_id: int

    @property
    def data_s(self) -> float:
        return self.build_s + self.json_s + self.csv_s


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    # The manifest logs its alerts (a rejected payload still on board) as errors, one line
    # each, with every reference: right in production, noise in the benchmark's output.
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def time_manifest(mission_id: int) -> ManifestTiming:
    """Build the mission's manifest (a new version) and its JSON and CSV, timing each step and
    counting every query they made."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bookings.manifests import manifest_build, manifest_csv, manifest_json

    with _quiet("bookings.manifests"), CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        version = manifest_build(mission_id=mission_id, trigger="benchmark")
        built = time.perf_counter()
        if version is None:
            raise RuntimeError("the manifest build wrote no version (nothing changed?)")
        as_json = manifest_json(version)
        jsoned = time.perf_counter()
        as_csv = manifest_csv(version)
        csved = time.perf_counter()
    return ManifestTiming(
        lines=int(version.content["totals"]["lines"]),
        build_s=built - started,
        json_s=jsoned - built,
        csv_s=csved - jsoned,
        queries=len(queries),
        json_bytes=len(as_json),
        csv_bytes=len(as_csv),
        version_id=version.pk,
    )


def run_manifest(ctx: Context) -> list[Row]:
    from bench.scenarios import SCENARIO_BY_NAME
    from bench.seed import seed_manifest_mission
    from bookings.manifest_pdf import font_available, manifest_pdf
    from bookings.models import ManifestVersion

    scenario = SCENARIO_BY_NAME["manifest"]
    mission = manifest_mission(ctx)
    small = seed_manifest_mission(
        total=SMALL_MANIFEST_BOOKINGS, classes=2, code=SMALL_MANIFEST_CODE, seed=40
    )
    tiny = time_manifest(small.mission_id)
    big = time_manifest(mission.mission_id)
    problems = []
    if big.lines != mission.bookings:
        problems.append(f"the manifest has {big.lines} lines, expected {mission.bookings}")
    constant = big.queries == tiny.queries
    ctx.checks["manifest"] = {
        "ok": not problems,
        "problems": problems,
        "lines": big.lines,
        "queries": big.queries,
        "queries_at_small": tiny.queries,
        "small_lines": tiny.lines,
        "constant_queries": constant,
    }
    ctx.failed_checks.extend(problems)
    queries_note = f"{big.queries} queries ({tiny.queries} at {tiny.lines} lines: " + (
        "constant)" if constant else "NOT constant)"
    )
    data_row = Row(
        name=scenario.name,
        title=scenario.title + ": JSON + CSV",
        status="ok" if not problems else "failed",
        unit="lines/s",
        rate=big.lines / big.data_s if big.data_s > 0 else None,
        errors=len(problems),
        target=scenario.target,
        note=f"{big.lines:,} lines in {big.data_s:.2f} s (build {big.build_s:.2f} + JSON "
        f"{big.json_s:.2f} + CSV {big.csv_s:.2f}); {queries_note}"
        + "".join(f"; {p}" for p in problems),
        details={
            "seconds": round(big.data_s, 3),
            "build_s": round(big.build_s, 3),
            "json_s": round(big.json_s, 3),
            "csv_s": round(big.csv_s, 3),
            "lines": big.lines,
            "queries": big.queries,
            "queries_at_small": tiny.queries,
            "small_lines": tiny.lines,
            "json_bytes": big.json_bytes,
            "csv_bytes": big.csv_bytes,
        },
    )
    rows = [data_row]
    pdf_title = scenario.title + ": PDF"
    if not font_available():
        rows.append(
            Row(
                "manifest-pdf",
                pdf_title,
                "skipped",
                note="the CJK font is missing (make system-packages)",
            )
        )
        return rows
    version = ManifestVersion.objects.get(pk=big.version_id)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # fontTools logs every table it subsets at INFO.
    with _quiet("fontTools"), CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        pdf = manifest_pdf(version)
        seconds = time.perf_counter() - started
    rows.append(
        Row(
            name="manifest-pdf",
            title=pdf_title,
            unit="lines/s",
            rate=big.lines / seconds if seconds > 0 else None,
            errors=0,
            target="info (a worker renders it)",
            note=f"{big.lines:,} lines, {len(pdf) / 1e6:.1f} MB in {seconds:.2f} s; "
            f"{len(queries)} queries",
            details={
                "seconds": round(seconds, 3),
                "lines": big.lines,
                "bytes": len(pdf),
                "queries": len(queries),
            },
        )
    )
    return rows


# --- the admin changelist --------------------------------------------------------------


def staff_session(email: str = BENCH_STAFF_EMAIL) -> tuple[str, str]:
    """A superuser's session that has passed the second factor, as allauth records it when a
    TOTP code is accepted (``accounts.mfa.StaffMfaMiddleware`` reads that record). Returns the
    session cookie's name and value."""
    from allauth.account.internal.flows.login import record_authentication
    from django.conf import settings
    from django.http import HttpRequest
    from django.test import Client

    from accounts.models import User

    user = User.objects.filter(email=email).first() or User.objects.create_superuser(
        email=email, password=None
    )
    client = Client()
    client.force_login(user)
    request = HttpRequest()
    request.session = client.session
    request.user = user
    record_authentication(request, user, "mfa", type="totp")
    request.session.save()
    return settings.SESSION_COOKIE_NAME, str(request.session.session_key)


def _admin_client(cookie: tuple[str, str]) -> Client:
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    client.cookies[cookie[0]] = cookie[1]
    return client


def admin_queries(client: Client, path: str) -> tuple[int, float]:
    """The queries (and in-process seconds) of one GET of ``path``."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(path)
        seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code} in-process, not 200")
    return len(queries), seconds


def admin_pages(mission_id: int, bookings: int) -> list[tuple[str, str, str]]:
    """(row name, title, path) of the changelist pages measured."""
    from bookings.models import Booking

    reference = (
        Booking.objects.filter(slot_class__mission_id=mission_id)
        .order_by("pk")
        .values_list("reference", flat=True)[bookings // 2]
    )
    last = -(-Booking.objects.count() // 100)  # the admin's 100 rows a page
    return [
        ("admin-bookings", "admin bookings: first page", ADMIN_CHANGELIST),
        ("admin-bookings-last", "admin bookings: last page", f"{ADMIN_CHANGELIST}?p={last}"),
        ("admin-bookings-search", "admin bookings: search", f"{ADMIN_CHANGELIST}?q={reference}"),
        (
            "admin-bookings-mission",
            "admin bookings: one mission",
            f"{ADMIN_CHANGELIST}?slot_class__mission__id__exact={mission_id}",
        ),
    ]


def run_admin_bookings(ctx: Context) -> list[Row]:
    from bench.scenarios import SCENARIO_BY_NAME, http_row
    from bookings.models import Booking

    scenario = SCENARIO_BY_NAME["admin-bookings"]
    mission = manifest_mission(ctx)
    total = Booking.objects.count()
    cookie = staff_session()
    client = _admin_client(cookie)
    header = {"Cookie": f"{cookie[0]}={cookie[1]}"}
    rows = []
    for name, title, path in admin_pages(mission.mission_id, mission.bookings):
        queries, in_process_s = admin_queries(client, path)
        row = http_row(ctx, scenario, path, headers=header, connections=ADMIN_CONNECTIONS)
        seconds = (row.p50_ms or 0) / 1000
        row.name, row.title = name, title
        row.note = f"{seconds:.2f} s/page, {queries} queries, {total:,} bookings; {row.note}"
        row.details |= {
            "seconds_per_page": round(seconds, 4),
            "queries": queries,
            "in_process_s": round(in_process_s, 4),
            "bookings": total,
        }
        rows.append(row)
    return rows
