"""Start a real Celery worker (and beat) for integration tests, sharing the test database,
and a private redis-server for them to use as their broker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from django.db import connection

from config.celery import app as celery_app
from tests.conftest import missing

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def database_url_of_test_db() -> str:
    s = connection.settings_dict
    return (
        f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:"
        f"{s['PORT'] or 5432}/{s['NAME']}"
    )


def wait_for(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Bounded polling: return the probe's first truthy answer, or fail with what was seen."""
    deadline = time.monotonic() + timeout
    seen: T | None = None
    while time.monotonic() < deadline:
        seen = probe()
        if seen:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {seen!r}")


@contextmanager
def running_worker(
    broker_url: str, *, beat: bool = False, extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, object]]:
    """A worker process (optionally with embedded beat) on ``broker_url``, with this test
    process switched to send tasks there instead of running them eagerly."""
    workdir = Path(tempfile.mkdtemp(prefix="moonslot-worker-"))
    mail_dir = workdir / "mail"
    mail_dir.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": broker_url,
        "MOONSLOT_CELERY_EAGER": "false",
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "MOONSLOT_SWEEP_SECONDS": "1",
        "MOONSLOT_OUTBOX_RETRY_SECONDS": "1",
        **(extra_env or {}),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "config", "worker",
        "--pool=solo", "--concurrency=1", "--without-gossip", "--without-mingle",
        "--loglevel=INFO", f"--hostname=test-{os.getpid()}@%h",
    ]  # fmt: skip
    if beat:
        command += ["-B", f"--schedule={workdir / 'beat-schedule'}"]
    log_path = workdir / "worker.log"
    previous = {
        "broker_url": celery_app.conf.broker_url,
        "result_backend": celery_app.conf.result_backend,
        "task_always_eager": celery_app.conf.task_always_eager,
    }
    forget_celery_connections()  # made under the previous broker settings
    celery_app.conf.update(
        broker_url=broker_url, result_backend=broker_url, task_always_eager=False
    )
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"process": process, "mail_dir": mail_dir, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        forget_celery_connections()
        celery_app.conf.update(**previous)


def forget_celery_connections() -> None:
    """Drop every connection and cache Celery keeps for this process's app: the connection
    pool (``close``), the producer pool and the result backend, which it builds once and
    would otherwise keep using after the broker URL changes (a later test would publish to
    an earlier test's broker)."""
    app: Any = celery_app  # Celery has no public way to drop the last two
    app.close()
    app._backend_cache = None
    vars(app._local).pop("backend", None)
    app.amqp._producer_pool = None


def mail_files(mail_dir: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in sorted(mail_dir.glob("*.log"))]


def mails_with(mail_dir: Path, text: str) -> int:
    """How many times ``text`` appears in the e-mails written to ``mail_dir``."""
    return sum(mail.count(text) for mail in mail_files(mail_dir))


class PrivateRedis:
    """A redis-server of the test's own on a free port, keeping nothing on disk (a restart
    comes back empty, as a crashed broker without persistence does). Nobody else's worker
    can take its tasks, and a test may stop it, restart it and look inside it."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def answers() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        wait_for(answers, timeout=15, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(name="private_redis")
def private_redis_fixture(
    require_postgres: None, require_redis: str, tmp_path: Path
) -> Iterator[PrivateRedis]:
    """A started ``PrivateRedis`` (import ``private_redis_fixture`` where it is used). The
    real-worker tests belong to the PostgreSQL + Redis tier, hence its two requirements."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("the real-worker tests need the redis-server program (Debian package redis-server)")
    assert binary is not None
    server = PrivateRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
