"""The one table and the JSON file a run leaves behind.

``bench/results/<timestamp>.json`` (and ``latest.json``) hold ``RESULT_KEYS`` at the top
level; each entry of ``scenarios`` holds ``ROW_KEYS``. ``ratio`` is the scenario's rate
divided by the baseline's requests/s measured in the same run, on the same server;
``cpu_ms`` is what the server's processes (gunicorn workers, and PostgreSQL's backends when
the database is on this machine) spent per request, and ``cpu_ratio`` the baseline's
``cpu_ms`` divided by the scenario's: the same question asked in CPU, which other load on
the machine disturbs far less than requests/s.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1
RESULT_KEYS = (
    "schema",
    "started_at",
    "finished_at",
    "ok",
    "options",
    "machine",
    "stack",
    "baseline_rps",
    "scenarios",
    "checks",
)
ROW_KEYS = (
    "name",
    "title",
    "status",
    "unit",
    "rate",
    "p50_ms",
    "p99_ms",
    "errors",
    "ratio",
    "cpu_ms",
    "cpu_ratio",
    "target",
    "note",
    "details",
)
SKIPPED_NOT_BUILT = "skipped (not built yet)"


@dataclass
class Row:
    name: str
    title: str
    status: str = "ok"  # ok | failed | skipped
    unit: str = "req/s"
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    ratio: float | None = None
    cpu_ms: float | None = None  # server CPU (app workers + database) per request
    cpu_ratio: float | None = None  # baseline's cpu_ms / this cpu_ms
    target: str = ""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in ROW_KEYS}


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def format_table(rows: list[Row]) -> str:
    header = (
        "scenario",
        "rate",
        "p50 ms",
        "p99 ms",
        "errors",
        "ratio",
        "CPU ms/req",
        "CPU ratio",
        "target",
        "note",
    )
    lines = []
    for row in rows:
        if row.status == "skipped":
            lines.append((row.title, row.note or "skipped", *[""] * 6, row.target, ""))
            continue
        rate = f"{_number(row.rate)} {row.unit}" if row.rate is not None else "—"
        note = ("FAILED: " if row.status == "failed" else "") + row.note
        lines.append(
            (
                row.title,
                rate,
                _number(row.p50_ms),
                _number(row.p99_ms),
                "—" if row.errors is None else str(row.errors),
                _ratio(row.ratio),
                _number(row.cpu_ms, 2),
                _ratio(row.cpu_ratio),
                row.target,
                note,
            )
        )
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    widths[-1] = 0  # the note runs on

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths[:-1]) + "  ----"
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def write_results(result: dict[str, Any], *, directory: Path = RESULTS_DIR) -> Path:
    """Write the run as ``<timestamp>.json`` and ``latest.json``; returns the first path."""
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    directory.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9T]", "", str(result["started_at"]))[:15] or "run"
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n"
    path = directory / f"{stamp}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    import django

    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
    }
