"""Load generators, always in processes of their own and only against 127.0.0.1.

``wrk`` (Debian's package) drives the read scenarios: it is written in C, so on two cores it
takes far less CPU from the server than any Python client would. When it is missing and we
are root it is installed with apt-get; if it cannot be had, ``python_load`` (threads with
``http.client``) stands in, and the report says so.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^\s*([0-9.]+)(us|ms|s|m|h)\s*$")


@dataclass
class LoadResult:
    """One measured run: throughput, latency percentiles and every kind of failure."""

    tool: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    percentiles_ms: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def parse_duration_ms(text: str) -> float:
    """wrk's latency figures (``812.00us``, ``5.52ms``, ``1.02s``) in milliseconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk_output(text: str) -> LoadResult:
    """The figures of ``wrk --latency``'s report. Raises ``ValueError`` if it is not one."""
    requests = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    if requests is None or rps is None:
        raise ValueError("no wrk summary in the output:\n" + text[-2000:])
    percentiles = {
        f"p{label}": parse_duration_ms(value)
        for label, value in re.findall(
            r"^\s+(50|75|90|99)(?:\.0+)?%\s+([0-9.]+(?:us|ms|s|m|h))\s*$", text, re.MULTILINE
        )
    }
    socket_errors: dict[str, int] = {}
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if sockets:
        for name, value in zip(
            ("connect", "read", "write", "timeout"), sockets.groups(), strict=True
        ):
            if int(value):
                socket_errors[name] = int(value)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if int(requests[1]) == 0:  # wrk prints 0.00us percentiles when nothing completed
        percentiles = {}
    return LoadResult(
        tool="wrk",
        requests=int(requests[1]),
        duration_s=parse_duration_ms(requests[2] + requests[3]) / 1000,
        rps=float(rps[1]),
        p50_ms=percentiles.get("p50"),
        p99_ms=percentiles.get("p99"),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=socket_errors,
        percentiles_ms=percentiles,
    )


def ensure_wrk(say: Callable[[str], None]) -> str | None:
    """The path of ``wrk``, installing Debian's package first if we may. None if unavailable."""
    found = shutil.which("wrk")
    if found or os.environ.get("BENCH_NO_INSTALL"):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("wrk is not installed (apt-get install wrk); using the Python load generator")
        return None
    say("wrk is not installed: installing Debian's package with apt-get (once per machine)…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh machine may have no package lists yet: fetch them, then try once more.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=False)
    found = shutil.which("wrk")
    if found is None:
        say("could not install wrk; using the Python load generator")
    return found


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer": the name and version.
    words = (result.stdout or result.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 2,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    seconds = max(1, round(duration_s))
    command = [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        *[arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")],
        url,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    return parse_wrk_output(result.stdout)


# --- the Python stand-in -----------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


@dataclass
class Sample:
    started: float
    latency_s: float
    status: int  # 0: no response (socket error)


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def send(conn: http.client.HTTPConnection, request: Request) -> tuple[int, bytes]:
    """One request on a connection that reopens itself when the server closed it."""
    conn.request(request.method, request.path, body=request.body, headers=request.headers)
    response = conn.getresponse()
    return response.status, response.read()


def python_load(
    host: str,
    port: int,
    make_request: Callable[[], Request],
    *,
    connections: int,
    duration_s: float,
) -> LoadResult:
    """``connections`` threads, each sending requests back to back until the time is up."""
    samples: list[Sample] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine: list[Sample] = []
        while (started := time.perf_counter()) < stop_at:
            try:
                status, _ = send(conn, make_request())
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
            mine.append(Sample(started, time.perf_counter() - started, status))
        conn.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise(samples, tool="python", wall_s=time.perf_counter() - began)


def summarise(samples: list[Sample], *, tool: str, wall_s: float) -> LoadResult:
    latencies = sorted(s.latency_s * 1000 for s in samples)
    return LoadResult(
        tool=tool,
        requests=len(samples),
        duration_s=wall_s,
        rps=len(samples) / wall_s if wall_s > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        non_2xx=sum(1 for s in samples if s.status and not 200 <= s.status < 300),
        socket_errors={"python": n} if (n := sum(1 for s in samples if not s.status)) else {},
        percentiles_ms={
            f"p{int(q * 100)}": v
            for q in (0.5, 0.75, 0.9, 0.99)
            if (v := percentile(latencies, q)) is not None
        },
    )
