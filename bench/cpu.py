"""CPU time spent by the server's workers and the database's backends during a measurement.

Requests per second depend on everything else the machine is doing; the CPU a request costs
does not (much). Dividing the workers' and backends' CPU seconds by the requests served gives
a figure that stays put on a busy machine, and its ratio to the baseline's is a second,
steadier reading of how far a scenario is from the stack's limit. Linux only (/proc).
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last.
    return text.rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU of one process (0 once it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


def own_and_children_cpu_seconds() -> float:
    """This process (a Python client's threads) and its finished children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class CpuUse:
    app_s: float
    db_s: float
    loadgen_s: float

    def per_request_ms(self, requests: int) -> float | None:
        return (self.app_s + self.db_s) * 1000 / requests if requests else None


class CpuMeter:
    """Measures the CPU the app and database processes spend while some work runs.

    Processes come and go during a measurement (a database connection older than
    ``CONN_MAX_AGE`` is replaced by a new backend), and a process that has exited can no
    longer be read, so a background thread re-reads them every ``interval`` seconds and
    keeps the last figure seen for each: at most one interval of a vanished process's CPU
    is lost, and a process that appears counts from zero."""

    def __init__(
        self,
        app_pids: Callable[[], list[int]],
        db_pids: Callable[[], list[int]],
        *,
        interval: float = 0.5,
        on_thread_exit: Callable[[], None] | None = None,
    ) -> None:
        self.app_pids = app_pids
        self.db_pids = db_pids
        self.interval = interval
        self.on_thread_exit = on_thread_exit

    def _read(self, pids: Callable[[], list[int]], into: dict[int, float]) -> None:
        for pid in pids():
            into[pid] = max(into.get(pid, 0.0), process_cpu_seconds(pid))

    def measure(self, work: Callable[[], T]) -> tuple[T, CpuUse]:
        start_app: dict[int, float] = {}
        start_db: dict[int, float] = {}
        self._read(self.app_pids, start_app)
        self._read(self.db_pids, start_db)
        seen_app, seen_db = dict(start_app), dict(start_db)
        loadgen_before = own_and_children_cpu_seconds()
        stop = threading.Event()

        def poll() -> None:
            try:
                while not stop.wait(self.interval):
                    self._read(self.app_pids, seen_app)
                    self._read(self.db_pids, seen_db)
            finally:
                if self.on_thread_exit is not None:
                    self.on_thread_exit()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            result = work()
        finally:
            stop.set()
            poller.join()
        self._read(self.app_pids, seen_app)
        self._read(self.db_pids, seen_db)

        def spent(start: dict[int, float], seen: dict[int, float]) -> float:
            return sum(max(0.0, cpu - start.get(pid, 0.0)) for pid, cpu in seen.items())

        return result, CpuUse(
            app_s=spent(start_app, seen_app),
            db_s=spent(start_db, seen_db),
            loadgen_s=max(0.0, own_and_children_cpu_seconds() - loadgen_before),
        )


def postgres_backend_pids() -> list[int]:
    """Server processes serving the bench database, other than the harness's own connection
    (only meaningful when PostgreSQL runs on this machine, as here)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(row[0]) for row in cursor.fetchall()]
