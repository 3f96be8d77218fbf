"""Start a real Celery worker (and beat) for integration tests, sharing the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from django.db import connection

from config.celery import app as celery_app

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
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
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
