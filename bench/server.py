"""The site under gunicorn, as production runs it, in a process group of its own so that
stopping it stops every worker whatever happened to the harness."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
READY_PATH = "/api/v1/_bench/baseline/"


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick, never 8000)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(
    host: str, port: int, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Gunicorn:
    """``gunicorn config.wsgi`` with ``workers`` sync workers on 127.0.0.1:``port``."""

    def __init__(self, *, env: dict[str, str], port: int, workers: int, log_path: Path) -> None:
        self.env = env
        self.host = "127.0.0.1"
        self.port = port
        self.workers = workers
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--workers",
            str(self.workers),
            "--worker-class",
            "sync",
            "--bind",
            f"{self.host}:{self.port}",
            # Loaded by the harness's many connections at once: the default backlog suffices,
            # but a slow first request must not kill a worker mid-measurement.
            "--timeout",
            "120",
            "--graceful-timeout",
            "5",
        ]

    def start(self, *, ready_timeout: float = 60.0) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches every worker
        )
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log_tail()}")
            try:
                if http_status(self.host, self.port, READY_PATH, timeout=2) == 200:
                    # Every worker imports the site lazily on its first request; warm both.
                    for _ in range(self.workers * 4):
                        http_status(self.host, self.port, READY_PATH, timeout=10)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn was not ready after {ready_timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        from bench.cpu import child_pids

        return child_pids(self.process.pid) if self.process is not None else []

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
