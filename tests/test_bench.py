"""The benchmark harness's pieces, in-process and at a tiny scale: seeding, the oversell and
sweep checks, the sale client's stopping rule, the report writer, wrk's output parser and the
options. Nothing here starts gunicorn or asserts a duration."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db.models import Sum
from django.test import Client
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounts.models import Organisation
from accounts.services import api_key_authenticate
from bench import backoffice, cli, cpu, db, loadgen, report, sale
from bench.report import Row
from bench.scenarios import SCENARIO_BY_NAME, Scenario, scenario_of, skipped_row
from bench.seed import seed_catalogue, seed_lapsed_holds, seed_manifest_mission
from bench.sweep import run_sweep, verify_sweep
from bench.views import PAYLOAD
from bookings.models import (
    CAPACITY_STATUSES,
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    ManifestVersion,
    PayloadDeclaration,
)
from marketplace.models import Mission, Pricing, ScheduleChange, SlotClass, SlotClassPrice

pytestmark = pytest.mark.django_db

# A real capture of `wrk -t2 -c4 -d1s --timeout 10s --latency` against a server answering 404.
WRK_404 = """\
Running 1s test @ http://127.0.0.1:18732/missing
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.75ms    2.61ms  22.89ms   88.70%
    Req/Sec   829.33    264.31     1.78k    80.95%
  Latency Distribution
     50%    1.69ms
     75%    3.82ms
     90%    5.63ms
     99%   13.31ms
  1735 requests in 1.10s, 0.86MB read
  Non-2xx or 3xx responses: 1735
Requests/sec:   1577.67
Transfer/sec:    801.32KB
"""
# wrk's report with other units and its socket-error line (format of wrk 4.1's summary).
WRK_SOCKET_ERRORS = """\
Running 6s test @ http://127.0.0.1:40001/api/v1/_bench/baseline/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   840.12us  201.40us   1.20s    91.02%
    Req/Sec     1.40k   110.23     1.62k    71.67%
  Latency Distribution
     50%  812.00us
     75%    0.95ms
     90%    1.10ms
     99%    1.02s
  16773 requests in 6.00s, 4.61MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
Requests/sec:   2795.17
Transfer/sec:    786.43KB
"""


# --- seeding -------------------------------------------------------------------------------


def test_seed_catalogue_builds_missions_classes_prices_and_consistent_counters() -> None:
    catalogue = seed_catalogue(missions=3, bookings_per_class=8, resellers=2, sale_capacity_g=9_000)

    assert Mission.objects.count() == 3
    assert SlotClass.objects.count() == 15
    assert SlotClass.objects.filter(pricing=Pricing.PER_UNIT).count() == 3
    for slot_class in SlotClass.objects.all():
        currencies = set(
            SlotClassPrice.objects.filter(slot_class=slot_class).values_list("currency", flat=True)
        )
        assert currencies == {"JPY", "USD"}
        # The counters hold what the rows say, computed here independently of the seeder.
        rows = Booking.objects.filter(slot_class=slot_class, status__in=CAPACITY_STATUSES)
        sums = rows.aggregate(mass=Sum("mass_g"), units=Sum("quantity"))
        assert slot_class.taken_g == (sums["mass"] or 0)
        assert slot_class.taken_units == (sums["units"] or 0)
        assert slot_class.taken_g <= slot_class.capacity_g
    assert catalogue.bookings == Booking.objects.count() == 14 * 8
    statuses = set(Booking.objects.values_list("status", flat=True))
    assert {BookingStatus.CONFIRMED, BookingStatus.HELD} <= statuses
    assert Booking.objects.filter(
        status=BookingStatus.HELD, hold_expires_at__lte=timezone.now()
    ).exists(), "some holds have lapsed unswept, as in life"

    sale_class = SlotClass.objects.get(pk=catalogue.sale_class_id)
    assert sale_class.capacity_g == 9_000
    assert not Booking.objects.filter(slot_class=sale_class).exists()
    assert ScheduleChange.objects.filter(mission__code=catalogue.detail_code).exists()
    assert len(catalogue.reseller_keys) == 2
    for raw_key in catalogue.reseller_keys:
        assert api_key_authenticate(raw_key).organisation.is_reseller


def test_seeded_lapsed_holds_are_all_released_by_the_sweep() -> None:
    seeded = seed_lapsed_holds(total=203, classes=4)
    assert Booking.objects.filter(status=BookingStatus.HELD).count() == 203
    assert SlotClass.objects.filter(pk__in=seeded.class_ids).aggregate(t=Sum("taken_g"))["t"] == (
        seeded.mass_g
    )

    outcome = run_sweep(seeded)

    assert outcome.released == 203
    assert outcome.problems == ()
    assert BookingEvent.objects.filter(type=EventType.BOOKING_EXPIRED).count() == 203


def test_sweep_verification_flags_holds_that_were_not_released() -> None:
    seeded = seed_lapsed_holds(total=10, classes=2)

    problems = verify_sweep(seeded, released=0, lapsed_before=10)

    assert any("reported 0, expected 10" in p for p in problems)
    assert any("counters not released" in p for p in problems)
    assert any("0 bookings expired" in p for p in problems)
    assert any("0 booking.expired events" in p for p in problems)


# --- the oversell check --------------------------------------------------------------------


def test_oversell_check_passes_a_class_sold_exactly_to_capacity() -> None:
    check = sale.check_oversell(
        sale.ClassState(capacity_g=10_000, taken_g=10_000, booked_g=10_000, bookings=50)
    )
    assert check.ok
    assert check.oversold_g == 0


def test_oversell_check_flags_bookings_beyond_capacity() -> None:
    check = sale.check_oversell(
        sale.ClassState(capacity_g=10_000, taken_g=10_000, booked_g=10_300, bookings=52)
    )
    assert not check.ok
    assert check.oversold_g == 300
    assert any("OVERSOLD" in problem for problem in check.problems)


def test_oversell_check_flags_a_counter_that_disagrees_with_the_rows() -> None:
    check = sale.check_oversell(
        sale.ClassState(capacity_g=10_000, taken_g=9_000, booked_g=9_500, bookings=40)
    )
    assert not check.ok
    assert check.oversold_g == 0
    assert check.counter_drift_g == -500


def test_oversell_check_flags_units_sold_beyond_a_per_unit_class() -> None:
    state = sale.ClassState(
        capacity_g=100, taken_g=100, booked_g=100, bookings=11,
        capacity_units=100, taken_units=100, booked_units=101,
    )  # fmt: skip
    check = sale.check_oversell(state)
    assert check.oversold_units == 1
    assert not check.ok


def test_class_state_read_from_the_database_exposes_an_oversold_class() -> None:
    catalogue = seed_catalogue(missions=2, bookings_per_class=0, resellers=1, sale_capacity_g=1_000)
    sale_class = SlotClass.objects.get(pk=catalogue.sale_class_id)
    organisation_id = Organisation.objects.get(name="Bench reseller 1").pk
    now = timezone.now()
    # Rows written behind the services' back: 1,200 g held in a 1,000 g class.
    for index, status in enumerate(
        [BookingStatus.HELD, BookingStatus.CONFIRMED, BookingStatus.HELD]
    ):
        Booking.objects.create(
            reference=f"OVR{index}ZZ",
            organisation_id=organisation_id,
            channel="api",
            slot_class=sale_class,
            mass_g=400,
            currency="JPY",
            price_amount=1,
            status=status,
            hold_expires_at=now + timedelta(days=1),
            confirmed_at=now if status == BookingStatus.CONFIRMED else None,
        )

    state = sale.read_class_state(sale_class.pk)
    check = sale.check_oversell(state)

    assert (state.capacity_g, state.booked_g, state.bookings) == (1_000, 1_200, 3)
    assert check.oversold_g == 200
    assert check.counter_drift_g == -1_200  # the counter never heard of them
    assert not check.ok


# --- the sale client against a stand-in server ---------------------------------------------


class _FakeHoldServer(ThreadingHTTPServer):
    """Takes holds against a capacity under a lock, answering like the API does."""

    def __init__(self, capacity_g: int) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHoldHandler)
        self.capacity_g = capacity_g
        self.taken_g = 0
        self.holds = 0
        self.keys: set[str] = set()
        self.lock = threading.Lock()


class _FakeHoldHandler(BaseHTTPRequestHandler):
    server: _FakeHoldServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        idempotency_key = self.headers["Idempotency-Key"]
        with self.server.lock:
            assert idempotency_key not in self.server.keys, "a key must never repeat"
            self.server.keys.add(idempotency_key)
            available = self.server.capacity_g - self.server.taken_g
            if body["mass_g"] <= available:
                self.server.taken_g += body["mass_g"]
                self.server.holds += 1
                status, answer = 201, {"reference": "ABCDEF", "mass_g": body["mass_g"]}
            else:
                status = 409
                answer = {"code": "insufficient_capacity", "available_g": available}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_hold_server() -> Iterator[_FakeHoldServer]:
    server = _FakeHoldServer(capacity_g=5_000)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_sale_clients_stop_exactly_at_sold_out_and_tally_what_was_held(
    fake_hold_server: _FakeHoldServer,
) -> None:
    spec = sale.SaleSpec(
        host="127.0.0.1",
        port=fake_hold_server.server_address[1],
        slot_class_id=1,
        keys=["k1", "k2"],
        clients=4,
        masses_g=(100, 200, 300),
        min_mass_g=100,
        mass_step_g=100,
        deadline_s=20,
    )

    outcome = sale.run_sale(spec)

    assert outcome.sold_out
    assert fake_hold_server.taken_g == 5_000, "later clients shrink their asks to what is left"
    assert outcome.held_mass_g == 5_000
    assert outcome.holds == fake_hold_server.holds
    assert outcome.insufficient >= 1
    assert outcome.errors == 0
    assert len(outcome.latencies_ms) == outcome.attempts


def test_python_load_counts_requests_and_failures(fake_hold_server: _FakeHoldServer) -> None:
    port = fake_hold_server.server_address[1]
    result = loadgen.python_load(
        "127.0.0.1", port, lambda: loadgen.Request("GET", "/"), connections=2, duration_s=0.3
    )
    assert result.requests > 0
    assert result.errors == 0
    assert result.p50_ms is not None


def test_answers_are_classified_for_the_sale_tally() -> None:
    assert sale._classify(201, b"{}") == ("held", None)
    assert sale._classify(409, b'{"code": "insufficient_capacity", "available_g": 300}') == (
        "insufficient_capacity",
        300,
    )
    assert sale._classify(409, b'{"code": "idempotency_key_in_use"}') == (
        "409:idempotency_key_in_use",
        None,
    )
    assert sale._classify(500, b"<html>Server Error</html>") == ("500", None)


# --- the report ----------------------------------------------------------------------------


def _result(rows: list[Row]) -> dict[str, object]:
    return {
        "schema": report.SCHEMA_VERSION,
        "started_at": "2026-01-02T03:04:05+00:00",
        "finished_at": "2026-01-02T03:09:05+00:00",
        "ok": True,
        "options": {"duration": 6.0},
        "machine": report.machine_info(),
        "stack": {"database": "SQLite"},
        "baseline_rps": 2000.0,
        "scenarios": [row.as_dict() for row in rows],
        "checks": {},
    }


def test_results_are_written_with_the_documented_keys(tmp_path: Path) -> None:
    rows = [
        Row("baseline", "baseline", rate=2000.0, p50_ms=1.0, p99_ms=3.0, errors=0, ratio=1.0),
        Row("api-missions", "API list", rate=900.0, p50_ms=2.0, p99_ms=9.0, errors=0, ratio=0.45),
        skipped_row(SCENARIO_BY_NAME["manifest"]),
    ]

    path = report.write_results(_result(rows), directory=tmp_path)

    written = json.loads(path.read_text())
    assert path.name == "20260102T030405.json"
    assert json.loads((tmp_path / "latest.json").read_text()) == written
    assert set(report.RESULT_KEYS) <= set(written)
    assert all(tuple(row) == report.ROW_KEYS for row in written["scenarios"])
    assert written["scenarios"][2]["status"] == "skipped"
    assert {"cores", "cpu_model", "memory_gib", "python", "django"} <= set(written["machine"])

    table = report.format_table(rows)
    assert table.splitlines()[0].split()[:4] == ["scenario", "rate", "p50", "ms"]
    assert "0.45" in table
    assert report.SKIPPED_NOT_BUILT in table


def test_a_result_missing_a_documented_key_is_refused(tmp_path: Path) -> None:
    result = _result([])
    del result["machine"]
    with pytest.raises(ValueError, match="machine"):
        report.write_results(result, directory=tmp_path)


def test_a_scenario_not_built_is_listed_as_skipped() -> None:
    scenario = Scenario("future", "a feature to come", False, None)
    assert skipped_row(scenario).note == report.SKIPPED_NOT_BUILT
    assert skipped_row(scenario).status == "skipped"


def test_rows_are_ordered_under_the_scenario_they_belong_to() -> None:
    assert scenario_of("manifest-pdf") == SCENARIO_BY_NAME["manifest"]
    assert scenario_of("admin-bookings-last") == SCENARIO_BY_NAME["admin-bookings"]
    assert scenario_of("baseline-defaults") == SCENARIO_BY_NAME["baseline"]
    assert scenario_of("api-missions") == SCENARIO_BY_NAME["api-missions"]
    assert scenario_of("unknown") is None


# --- the back office: manifest and booking changelist --------------------------------------


def test_manifest_mission_has_confirmed_bookings_with_payloads_and_exact_counters() -> None:
    seeded = seed_manifest_mission(total=60, classes=3, code="MF")

    bookings = Booking.objects.filter(slot_class__mission_id=seeded.mission_id)
    assert bookings.count() == 60
    assert set(bookings.values_list("status", flat=True)) == {BookingStatus.CONFIRMED}
    assert PayloadDeclaration.objects.filter(booking__in=bookings).count() == 60
    for slot_class in SlotClass.objects.filter(pk__in=seeded.class_ids):
        booked = bookings.filter(slot_class=slot_class).aggregate(t=Sum("mass_g"))["t"]
        assert slot_class.taken_g == booked == slot_class.capacity_g
    hazards = PayloadDeclaration.objects.filter(booking__in=bookings).values_list(
        "hazards", flat=True
    )
    assert any(hazards), "some payloads declare hazards, as on a real manifest"


def test_manifest_timing_counts_queries_that_do_not_grow_with_the_bookings() -> None:
    small = seed_manifest_mission(total=5, classes=2, code="MFS", seed=1)
    large = seed_manifest_mission(total=120, classes=5, code="MFL", seed=2)

    tiny = backoffice.time_manifest(small.mission_id)
    big = backoffice.time_manifest(large.mission_id)

    assert (tiny.lines, big.lines) == (5, 120)
    assert big.queries == tiny.queries > 0
    assert big.csv_bytes > tiny.csv_bytes > 0
    version = ManifestVersion.objects.get(pk=big.version_id)
    assert len(version.content["lines"]) == 120


def test_the_bench_staff_session_opens_the_booking_changelist() -> None:
    seeded = seed_manifest_mission(total=30, classes=2, code="MFA")
    name, value = backoffice.staff_session()
    client = Client()

    # Without the session the admin sends the visitor to sign in.
    assert client.get(backoffice.ADMIN_CHANGELIST).status_code == 302
    client.cookies[name] = value
    pages = backoffice.admin_pages(seeded.mission_id, seeded.bookings)
    assert [page[0] for page in pages] == [
        "admin-bookings",
        "admin-bookings-last",
        "admin-bookings-search",
        "admin-bookings-mission",
    ]
    for _name, _title, path in pages:
        queries, _seconds = backoffice.admin_queries(client, path)
        assert queries > 0
    search = client.get(pages[2][2]).content.decode()
    assert pages[2][2].rsplit("=", 1)[1] in search


# --- wrk's output ---------------------------------------------------------------------------


def test_wrk_latency_output_is_parsed() -> None:
    result = loadgen.parse_wrk_output(WRK_404)

    assert result.requests == 1735
    assert result.duration_s == pytest.approx(1.10)
    assert result.rps == pytest.approx(1577.67)
    assert result.p50_ms == pytest.approx(1.69)
    assert result.p99_ms == pytest.approx(13.31)
    assert result.percentiles_ms["p90"] == pytest.approx(5.63)
    assert result.non_2xx == 1735
    assert result.errors == 1735


def test_wrk_units_and_socket_errors_are_parsed() -> None:
    result = loadgen.parse_wrk_output(WRK_SOCKET_ERRORS)

    assert result.p50_ms == pytest.approx(0.812)
    assert result.p99_ms == pytest.approx(1020.0)
    assert result.socket_errors == {"read": 3, "timeout": 2}
    assert result.non_2xx == 0
    assert result.errors == 5


def test_output_that_is_not_a_wrk_report_is_refused() -> None:
    with pytest.raises(ValueError, match="no wrk summary"):
        loadgen.parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


# --- options, databases and the baseline endpoint ----------------------------------------------


def test_quick_shrinks_the_run_and_only_keeps_the_baseline_beside_http_scenarios() -> None:
    args = cli.parse_args(["--quick", "--only", "api-missions,expiry-sweep"])
    assert args.duration == 2.0
    assert args.connections == 4
    assert args.sweep_rows <= 2_000
    assert [s.name for s in args.scenarios] == ["baseline", "api-missions", "expiry-sweep"]

    args = cli.parse_args(["--only", "expiry-sweep"])
    assert [s.name for s in args.scenarios] == ["expiry-sweep"]

    args = cli.parse_args(["--skip-sweep"])
    assert "expiry-sweep" not in [s.name for s in args.scenarios]

    args = cli.parse_args(["--quick", "--only", "catalogue", "manifest"])
    assert [s.name for s in args.scenarios] == [
        "baseline",
        "api-missions",
        "api-mission",
        "page-missions",
        "page-mission",
        "manifest",
    ]
    assert args.manifest_bookings <= 500


def test_the_server_runs_two_sync_workers_unless_told_otherwise() -> None:
    assert cli.parse_args([]).workers == 2  # as the README runs production per 2 cores
    assert cli.parse_args(["--workers", "3"]).workers == 3


@pytest.mark.parametrize(
    "argv",
    [["--clients", "33"], ["--clients", "0"], ["--only", "nope"], ["--workers", "0"]],
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(argv)


def test_the_bench_database_is_never_the_configured_one(tmp_path: Path) -> None:
    pg = db.bench_database_url(
        "postgres://postgres@127.0.0.1:5432/test", name="moonslot_bench", tmpdir=tmp_path
    )
    assert pg.url == "postgres://postgres@127.0.0.1:5432/moonslot_bench"
    assert pg.vendor == "postgresql"

    sqlite = db.bench_database_url(None, name="moonslot_bench", tmpdir=tmp_path)
    assert sqlite.vendor == "sqlite"
    assert sqlite.name == str(tmp_path / "bench.sqlite3")

    with pytest.raises(ValueError, match="already names"):
        db.bench_database_url(
            "postgres://postgres@127.0.0.1/moonslot_bench", name="moonslot_bench", tmpdir=tmp_path
        )
    with pytest.raises(ValueError, match="refusing"):
        db.bench_database_url("postgres://postgres@127.0.0.1/x", name="test", tmpdir=tmp_path)


@pytest.mark.urls("config.bench_urls")
def test_the_baseline_answers_a_constant_beside_the_product_urls(client: Client) -> None:
    for path in ("/api/v1/_bench/baseline/", "/api/v1/_bench/baseline-defaults/"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == PAYLOAD
    # The reference baseline does no authentication: even a malformed key is not looked at,
    # whereas the project's defaults refuse it.
    assert client.get("/api/v1/_bench/baseline/", HTTP_AUTHORIZATION="Bearer x").status_code == 200
    refused = client.get("/api/v1/_bench/baseline-defaults/", HTTP_AUTHORIZATION="Bearer x")
    assert refused.status_code == 401
    assert client.get("/api/v1/missions/").status_code == 200


def test_the_baseline_is_not_part_of_the_product_urls() -> None:
    with pytest.raises(NoReverseMatch):
        reverse("bench-baseline")


# --- CPU accounting ---------------------------------------------------------------------------


def test_cpu_meter_counts_what_processes_spent_while_the_work_ran() -> None:
    import os
    import subprocess
    import sys

    # A process that appears during the measurement, burns CPU and exits before it ends: its
    # CPU is still counted, from the figures the meter's thread read while it lived.
    burner = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    pids: list[int] = []
    meter = cpu.CpuMeter(lambda: list(pids), lambda: [], interval=0.05)

    def work() -> str:
        child = subprocess.Popen([sys.executable, "-c", burner])
        assert child.pid in cpu.child_pids(os.getpid())
        pids.append(child.pid)
        child.wait()
        time.sleep(0.2)
        return "done"

    result, used = meter.measure(work)

    assert result == "done"
    assert 0.3 <= used.app_s < 5
    assert used.db_s == 0
    assert used.per_request_ms(0) is None
    assert cpu.process_cpu_seconds(pids[0]) == 0.0, "a finished process can no longer be read"
