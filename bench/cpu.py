"""CPU time spent by the server's workers and the database's backends during a measurement.

Requests per second depend on everything else the machine is doing; the CPU a request costs
does not (much). Dividing the workers' and backends' CPU seconds by the requests served gives
a figure that stays put on a busy machine, and its ratio to the baseline's is a second,
steadier reading of how far a scenario is from the stack's limit. Linux only (/proc).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class CpuSample:
    app: dict[int, float] = field(default_factory=dict)
    db: dict[int, float] = field(default_factory=dict)
    loadgen_s: float = 0.0


@dataclass(frozen=True)
class CpuUse:
    app_s: float
    db_s: float
    loadgen_s: float

    def per_request_ms(self, requests: int) -> float | None:
        return (self.app_s + self.db_s) * 1000 / requests if requests else None


class CpuMeter:
    """Samples the CPU of the given app and database processes; ``between`` turns two samples
    into what was spent (a process that appeared in between counts from zero)."""

    def __init__(self, app_pids: Callable[[], list[int]], db_pids: Callable[[], list[int]]):
        self.app_pids = app_pids
        self.db_pids = db_pids

    def sample(self) -> CpuSample:
        return CpuSample(
            app={pid: process_cpu_seconds(pid) for pid in self.app_pids()},
            db={pid: process_cpu_seconds(pid) for pid in self.db_pids()},
            loadgen_s=own_and_children_cpu_seconds(),
        )

    def between(self, before: CpuSample, after: CpuSample) -> CpuUse:
        def spent(a: dict[int, float], b: dict[int, float]) -> float:
            return sum(max(0.0, b[pid] - a.get(pid, 0.0)) for pid in b)

        return CpuUse(
            app_s=spent(before.app, after.app),
            db_s=spent(before.db, after.db),
            loadgen_s=max(0.0, after.loadgen_s - before.loadgen_s),
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
