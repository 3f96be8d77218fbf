"""``python -m bench [options]``: one command that measures Moonslot against its stack's limit.

1. Creates a database of its own (``moonslot_bench`` on the PostgreSQL server of
   ``DATABASE_URL``; a temporary SQLite file without it), migrates it and seeds a large
   catalogue with bookings.
2. Starts gunicorn as production runs it (2 sync workers on this 2-core machine, persistent
   database connections, DEBUG off) with throttle rates too high to bite.
3. Measures the baseline (a DRF APIView doing nothing) and every scenario with wrk from a
   separate process, the sale opening with a Python client, then stops the server and times
   the expiry sweep in-process.
4. Prints one table, writes ``bench/results/<timestamp>.json`` and ``latest.json``, and
   removes everything it created, also on Ctrl-C or failure.

Exit status: 0 when every scenario ran and every check passed (targets are reported, not
enforced: a slow figure is a finding, not a failure); 1 when something was oversold, a check
failed or a scenario crashed; 2 for bad options or a missing service.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bench import db as bench_db
from bench import loadgen, report
from bench.cpu import CpuMeter, postgres_backend_pids
from bench.report import Row
from bench.scenarios import (
    SCENARIO_BY_NAME,
    SCENARIOS,
    Context,
    Scenario,
    scenario_of,
    skipped_row,
)
from bench.server import Gunicorn, free_port

if TYPE_CHECKING:  # bench.seed imports models, which need Django set up first
    from bench.seed import Catalogue

# Per second, not per minute: all the load comes from one address and a handful of keys, and
# DRF keeps one timestamp per request in the window, so a per-minute limit high enough never
# to bite would make every request (un)pickle a list of 100,000 timestamps.
THROTTLE_RATE = "1000000/s"
WORKERS = 2
MAX_CLIENTS = 32
SALE_HOLD_MEAN_G = 200
# Names --only (and make bench BENCH_ONLY=…) also accepts, for a group of scenarios.
GROUPS = {
    "catalogue": ("api-missions", "api-mission", "page-missions", "page-mission"),
    "api": ("api-missions", "api-mission"),
    "pages": ("page-missions", "page-mission"),
    "backoffice": ("manifest", "admin-bookings"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [scenario.name for scenario in SCENARIOS]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure Moonslot under gunicorn against a bare DRF baseline in the same "
        "run. Set DATABASE_URL (PostgreSQL) and REDIS_URL for production-like figures; "
        "without them it runs on SQLite and says so.",
    )
    parser.add_argument(
        "--duration", type=float, default=6.0, help="seconds measured per HTTP scenario (6)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up before each (2)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections for the reads (16)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"gunicorn sync workers ({WORKERS}, as the README runs production per 2 cores)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=16,
        help=f"concurrent API clients at the sale opening (16, at most {MAX_CLIENTS})",
    )
    parser.add_argument(
        "--sale-holds",
        type=int,
        default=600,
        # 600 holds of 100–300 g: a 120 kg deck, sold out in 3 s at the 200 holds/s target
        # and still within the time limit on a machine ten times slower.
        help="size of the sale class in average holds (600)",
    )
    parser.add_argument(
        "--sweep-rows", type=int, default=100_000, help="lapsed holds for the sweep (100000)"
    )
    parser.add_argument(
        "--manifest-bookings",
        type=int,
        default=10_000,
        help="confirmed bookings on the manifest mission (10000)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SCENARIO",
        help="run only these scenarios (the baseline always runs with an HTTP one): "
        + ", ".join(names)
        + "; or a group: "
        + ", ".join(GROUPS),
    )
    parser.add_argument("--skip-sweep", action="store_true", help="leave out the expiry sweep")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run to check the harness works (2 s per scenario, 4 connections, "
        "a small sale and sweep)",
    )
    parser.add_argument(
        "--keep-db", action="store_true", help="keep the bench database afterwards (debugging)"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=report.RESULTS_DIR, help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    if args.quick:
        # Few connections, so that on a busy machine a slow page still completes a request.
        args.duration, args.warmup = 2.0, 1.0
        args.connections = min(args.connections, 4)
        args.sale_holds = min(args.sale_holds, 100)
        args.sweep_rows = min(args.sweep_rows, 2_000)
        args.manifest_bookings = min(args.manifest_bookings, 500)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if (
        args.duration <= 0
        or args.warmup < 0
        or args.connections < 1
        or args.workers < 1
        or args.sale_holds < 1
        or args.manifest_bookings < 1
    ):
        parser.error("durations, connections and sizes must be positive")
    selected: list[str] = []
    for item in args.only or names:
        for name in item.replace(",", " ").split():
            if name in GROUPS:
                selected.extend(GROUPS[name])
                continue
            if name not in SCENARIO_BY_NAME:
                parser.error(
                    f"unknown scenario {name!r}; choose from {', '.join([*names, *GROUPS])}"
                )
            selected.append(name)
    if args.skip_sweep:
        selected = [name for name in selected if name != "expiry-sweep"]
    if any(SCENARIO_BY_NAME[n].needs_server and SCENARIO_BY_NAME[n].runner for n in selected):
        selected.append("baseline")
    args.scenarios = [s for s in SCENARIOS if s.name in set(selected)]
    return args


def say(message: str) -> None:
    print(message, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every finally below still runs (a signal
    # the caller chose to ignore, as nohup does with SIGHUP, stays ignored).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupt)
    run = Run(args)
    try:
        return run.execute()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything the benchmark started")
        return 130
    finally:
        run.cleanup()


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started_at = datetime.now(UTC)
        self.run_id = self.started_at.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.tmpdir = Path(tempfile.mkdtemp(prefix="moonslot-bench-"))
        self.source_db = os.environ.get("DATABASE_URL") or None
        self.redis_url = os.environ.get("REDIS_URL") or None
        self.database: bench_db.BenchDatabase | None = None
        self.database_created = False
        self.server: Gunicorn | None = None
        self.rows: list[Row] = []
        self.crashed: list[str] = []
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]

    # --- setup ----------------------------------------------------------------------------

    def server_env(self) -> dict[str, str]:
        assert self.database is not None
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE", "DATABASE_URL")
        }
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DJANGO_DEBUG="false",
            DATABASE_URL=self.database.url,
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            MOONSLOT_THROTTLE_ANON=THROTTLE_RATE,
            MOONSLOT_THROTTLE_API_KEY=THROTTLE_RATE,
            MOONSLOT_BENCH_RUN=self.run_id,
            PYTHONUNBUFFERED="1",
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def prepare(self) -> None:
        self.database = bench_db.bench_database_url(
            self.source_db, name=bench_db.bench_database_name(), tmpdir=self.tmpdir
        )
        if self.redis_url:
            _check_redis(self.redis_url)
        bench_db.create_database(self.database)
        self.database_created = True
        # The harness itself runs the same settings against the same database: it migrates,
        # seeds, reads the sale's results back and runs the sweep.
        os.environ.clear()
        os.environ.update(self.server_env())
        import django

        django.setup()
        from django.core.management import call_command

        started = time.perf_counter()
        call_command("migrate", interactive=False, verbosity=0)
        say(f"migrated the bench database in {time.perf_counter() - started:.1f}s")

    def seed(self) -> Catalogue:
        from bench.seed import analyze_tables, seed_catalogue

        started = time.perf_counter()
        catalogue = seed_catalogue(
            bookings_per_class=5 if self.args.quick else 40,
            sale_capacity_g=self.args.sale_holds * SALE_HOLD_MEAN_G,
        )
        analyze_tables()
        counts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in catalogue.counts.items())
        say(f"seeded {counts} in {time.perf_counter() - started:.1f}s")
        return catalogue

    # --- the run --------------------------------------------------------------------------

    def execute(self) -> int:
        self.prepare()
        from django.db import connections

        catalogue = self.seed()
        connections.close_all()
        wrk = loadgen.ensure_wrk(say) if self._needs_server() else None
        ctx = Context(
            host="127.0.0.1",
            port=free_port(),
            duration_s=self.args.duration,
            warmup_s=self.args.warmup,
            connections=self.args.connections,
            clients=self.args.clients,
            sweep_rows=self.args.sweep_rows,
            manifest_bookings=self.args.manifest_bookings,
            catalogue=catalogue,
            wrk=wrk,
            say=say,
        )
        stack = self.stack_info(wrk)
        say(self.banner(stack))
        cores = os.cpu_count() or 1
        if self.load_at_start[0] > 0.5 * cores:
            say(
                f"  NOTE: the machine was already busy (load {self.load_at_start[0]:.1f} on "
                f"{cores} cores): absolute figures will be low and noisy; ratios less so"
            )
        if self._needs_server():
            self.server = Gunicorn(
                env=self.server_env(),
                port=ctx.port,
                workers=self.args.workers,
                log_path=self.tmpdir / "gunicorn.log",
            )
            self.server.start()
            say(f"gunicorn ready on 127.0.0.1:{ctx.port} ({self.args.workers} sync workers)")
            ctx.meter = CpuMeter(
                self.server.worker_pids, self._database_pids, on_thread_exit=_close_connection
            )
            try:
                for scenario in self.args.scenarios:
                    if scenario.needs_server:
                        self.run_scenario(scenario, ctx)
            finally:
                self.server.stop()
        for scenario in self.args.scenarios:
            if not scenario.needs_server:
                self.run_scenario(scenario, ctx)
        connections.close_all()
        order = {scenario.name: index for index, scenario in enumerate(SCENARIOS)}
        self.rows.sort(key=lambda row: order[owner.name] if (owner := scenario_of(row.name)) else 0)

        ok = not ctx.failed_checks and not self.crashed
        result = {
            "schema": report.SCHEMA_VERSION,
            "started_at": self.started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "ok": ok,
            "options": {
                key: (str(value) if isinstance(value, Path) else value)
                for key, value in vars(self.args).items()
                if key != "scenarios"
            }
            | {"scenarios": [s.name for s in self.args.scenarios]},
            "machine": report.machine_info()
            | {
                "load_average_at_start": self.load_at_start,
                "database": stack["database"],
                "redis": stack["redis"],
            },
            "stack": stack,
            "baseline_rps": ctx.baseline_rps,
            "scenarios": [row.as_dict() for row in self.rows],
            "checks": ctx.checks | {"crashed": self.crashed},
        }
        say("")
        say(report.format_table(self.rows))
        path = report.write_results(result, directory=self.args.results_dir)
        say(f"\nresults: {path} (and latest.json)")
        for problem in [*ctx.failed_checks, *self.crashed]:
            say(f"FAILED: {problem}")
        return 0 if ok else 1

    def _database_pids(self) -> list[int]:
        # Backends' CPU can be read only when the database server runs on this machine.
        assert self.database is not None
        if self.database.vendor != "postgresql":
            return []
        host = urlsplit(self.database.url).hostname or "localhost"
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            return []
        return postgres_backend_pids()

    def _needs_server(self) -> bool:
        return any(s.needs_server and s.runner for s in self.args.scenarios)

    def run_scenario(self, scenario: Scenario, ctx: Context) -> None:
        if scenario.runner is None:
            self.rows.append(skipped_row(scenario))
            return
        say(f"· {scenario.name} …")
        started = time.perf_counter()
        try:
            rows = scenario.runner(ctx)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.crashed.append(f"{scenario.name}: {detail}")
            traceback.print_exc()
            if self.server is not None:
                say(f"gunicorn log (tail):\n{self.server.log_tail()}")
            rows = [Row(scenario.name, scenario.title, "failed", note=detail[:200])]
        for row in rows:
            if row.status == "ok" and row.unit == "req/s":
                ratio = f", {row.ratio:.2f} of baseline" if row.ratio is not None else ""
                say(f"  {row.name}: {row.rate or 0:,.0f} req/s{ratio}")
        say(f"  ({time.perf_counter() - started:.0f}s)")
        self.rows.extend(rows)

    # --- description ----------------------------------------------------------------------

    def stack_info(self, wrk: str | None) -> dict[str, Any]:
        import gunicorn
        from django.conf import settings
        from django.db import connection

        assert self.database is not None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                version = str(cursor.fetchone()[0]).split()[0]
            database = f"PostgreSQL {version}"
        else:
            import sqlite3

            database = f"SQLite {sqlite3.sqlite_version}"
        redis_version = _redis_version(self.redis_url) if self.redis_url else None
        real = connection.vendor == "postgresql" and bool(self.redis_url)
        return {
            "database": database,
            "database_vendor": connection.vendor,
            "database_name": self.database.name,
            "redis": f"Redis {redis_version}" if redis_version else None,
            "production_like": real,
            "label": (
                "PostgreSQL + Redis: production-like figures"
                if real
                else f"{database}{' + Redis' if self.redis_url else ''}: local tier — NOT "
                "production figures (set DATABASE_URL=postgres://… and REDIS_URL=redis://…)"
            ),
            "server": f"gunicorn {gunicorn.__version__}, {self.args.workers} sync workers",
            "conn_max_age": settings.DATABASES["default"].get("CONN_MAX_AGE"),
            "debug": settings.DEBUG,
            "throttle_rates": dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]),
            "tasks": (
                "queued to Redis (no worker runs during the benchmark)"
                if self.redis_url
                else "queued to an in-memory broker (not run)"
            ),
            "load_generator": loadgen.wrk_version(wrk) if wrk else "python (threads)",
            "sale_client": "python threads + http.client",
        }

    def banner(self, stack: dict[str, Any]) -> str:
        args = self.args
        return "\n".join(
            [
                "",
                f"Moonslot benchmark {self.started_at:%Y-%m-%d %H:%M} UTC — {stack['label']}",
                f"  server: {stack['server']}, CONN_MAX_AGE={stack['conn_max_age']}, "
                f"DEBUG={stack['debug']}, tasks {stack['tasks']}",
                f"  reads: {stack['load_generator']}, {args.connections} connections, "
                f"{args.duration:g}s after {args.warmup:g}s warm-up; sale: {args.clients} "
                f"clients; sweep: {args.sweep_rows:,} holds; manifest: {args.manifest_bookings:,} "
                "bookings",
            ]
        )

    # --- teardown -------------------------------------------------------------------------

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if self.redis_url:
            with contextlib.suppress(Exception):
                _forget_redis_keys(self.redis_url, self.run_id)
        if self.database is not None and self.database_created and not self.args.keep_db:
            try:
                bench_db.drop_database(self.database)
            except Exception as exc:
                say(f"could not drop the bench database {self.database.name}: {exc}")
        elif self.database is not None and self.args.keep_db:
            say(f"kept the bench database: {self.database.url}")
        if not self.args.keep_db:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _close_connection() -> None:
    # The meter's thread asks the database for its backends over a connection of its own.
    from django.db import connection

    connection.close()


def _check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        say(f"REDIS_URL is set but Redis does not answer: {exc}")
        raise SystemExit(2) from exc


def _redis_version(url: str) -> str | None:
    import redis

    try:
        info = redis.Redis.from_url(url, socket_connect_timeout=3).info("server")
    except redis.RedisError:
        return None
    return str(info.get("redis_version"))


def _forget_redis_keys(url: str, run_id: str) -> None:
    """Delete this run's cache keys and task queue (and only those: the database may be
    shared)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    keys = list(client.scan_iter(match=f"*moonslot-bench-{run_id}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


if __name__ == "__main__":
    sys.exit(main())
