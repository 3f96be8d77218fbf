"""Faults injected into a real worker and a real broker (PostgreSQL + Redis tier): the broker
going away while bookings are committed, and a worker killed with SIGKILL in the middle of a
task. Each test runs the protected path and, beside it, the same side effect without the
protection (``fault_tasks.naive_notice``), to show the loss the protection prevents.

Every test starts its own redis-server on a free port (never the shared one), so it can stop
and restart the broker, and look inside it, without touching anyone else's queues. The
workers share the PostgreSQL test database with the test (``tests.worker``).

The figures (bookings committed, side effects delivered, deliveries) go to
``artifacts/reliability/faults.json``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from bookings import services
from bookings.models import Booking, OutboxMessage
from bookings.outbox import outbox_dispatch, outbox_write
from bookings.services import Actor
from config.celery import app as celery_app
from tests.conftest import missing
from tests.factories import ResellerFactory, SlotClassFactory
from tests.reliability.fault_tasks import NAIVE_TASK, SLOW_TOPIC, notice_subject
from tests.worker import database_url_of_test_db, mail_files, running_worker, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "artifacts" / "reliability" / "faults.json"
WORKER_SETTINGS = "tests.reliability.worker_settings"
FIGURES: dict[str, dict[str, Any]] = {}


class PrivateRedis:
    """A redis-server of the test's own on a free port, keeping nothing on disk (a restart
    comes back empty, as a crashed broker without persistence does)."""

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


@pytest.fixture
def private_redis(
    require_postgres: None, require_redis: str, tmp_path: Path
) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("the fault tests need the redis-server program (Debian package redis-server)")
    assert binary is not None
    server = PrivateRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "faults"
    directory.mkdir()
    return directory


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def worker_env(fault_dir: Path, *, hold_seconds: float) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": WORKER_SETTINGS,
        "MOONSLOT_FAULT_DIR": str(fault_dir),
        "MOONSLOT_FAULT_HOLD_SECONDS": str(hold_seconds),
    }


def notices(mail_dir: Path, key: str) -> int:
    subject = f"Subject: {notice_subject(key)}\n"
    return sum(mail.count(subject) for mail in mail_files(mail_dir))


def held_mails(mail_dir: Path, reference: str) -> int:
    subject = f"Booking {reference} is held"
    return sum(mail.count(subject) for mail in mail_files(mail_dir))


def started(fault_dir: Path, key: str) -> list[Path]:
    return sorted(fault_dir.glob(f"started-{key}-*"))


@contextmanager
def fault_worker(server: PrivateRedis, fault_dir: Path, **options: Any) -> Iterator[dict[str, Any]]:
    """``running_worker`` on the private broker, with the fault tasks loaded, once it has
    said it is ready. This process sends tasks without waiting for results: the result
    backend's listener would spend its own reconnection budget (twenty seconds) on every
    send while the broker is down. Celery caches the backend per app, so it is dropped on
    the way in and out, for the next user to build from the settings then in force, and
    so is the producer pool (``running_worker`` drops the connection pool only, so a second
    broker URL in one process would still be published to through the first one's pool)."""
    hold = options.pop("hold_seconds", 0)
    with running_worker(
        server.url, extra_env=worker_env(fault_dir, hold_seconds=hold), **options
    ) as worker:
        celery_app.conf.update(result_backend=None)
        _forget_connections()
        try:
            wait_for(
                lambda: " ready." in Path(str(worker["log"])).read_text(errors="replace"),
                timeout=60,
                what=f"the worker to start ({worker['log']})",
            )
            yield worker
        finally:
            _forget_connections()


def _forget_connections() -> None:
    app: Any = celery_app  # Celery has no public way to drop these caches
    app._backend_cache = None
    vars(app._local).pop("backend", None)
    app.amqp._producer_pool = None


def received_ids(log: Path, task: str) -> list[str]:
    pattern = re.compile(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] received")
    return pattern.findall(log.read_text(errors="replace"))


def succeeded_with(log: Path, task: str, result: str) -> list[str]:
    """Ids of ``task`` runs the log shows finishing with ``result``."""
    pattern = re.compile(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] succeeded in [0-9.]+s: {result}")
    return pattern.findall(log.read_text(errors="replace"))


def broker_mentions(server: PrivateRedis, text: str) -> int:
    """Messages in the broker (queued or delivered but unacknowledged) that mention
    ``text``: what could still be delivered one day."""
    client = server.client()
    queued = [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
    # An unacknowledged entry is [message, exchange, routing key].
    unacked = [json.loads(raw)[0] for raw in client.hvals("unacked")]
    return sum(text in base64.b64decode(message["body"]).decode() for message in queued + unacked)


def _hold(slot_class_id: int, organisation: Any) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class_id,
        organisation=organisation,
        channel="api",
        actor=Actor.system("fault-test"),
        currency="JPY",
        mass_g=1000,
    )


# --- the broker goes away ---------------------------------------------------------------

BOOKINGS_DURING_OUTAGE = 5


def test_side_effects_committed_while_the_broker_is_down_arrive_once_it_is_back(
    private_redis: PrivateRedis, fault_dir: Path
) -> None:
    slot_class = SlotClassFactory.create()
    reseller = ResellerFactory.create(notification_email="desk@reseller.example")
    with fault_worker(private_redis, fault_dir, beat=True) as worker:
        mail_dir: Path = worker["mail_dir"]
        # The unprotected path works while the broker is up (so its losses below are the
        # outage's doing).
        celery_app.send_task(NAIVE_TASK, args=["before-the-outage"], ignore_result=True)
        wait_for(lambda: notices(mail_dir, "before-the-outage"), what="the control notice")

        private_redis.stop()
        bookings, naive_refused = [], 0
        for _n in range(BOOKINGS_DURING_OUTAGE):
            booking = _hold(slot_class.pk, reseller)  # its on-commit dispatch fails
            bookings.append(booking)
            try:  # the same news without the outbox: straight to the broker after commit
                celery_app.send_task(NAIVE_TASK, args=[booking.reference], ignore_result=True)
            except BrokerUnavailable:
                naive_refused += 1
        rows = OutboxMessage.objects.filter(
            topic="booking.notify", payload__booking_id__in=[b.pk for b in bookings]
        )
        assert rows.count() == BOOKINGS_DURING_OUTAGE
        assert not rows.filter(processed_at__isnull=False).exists()
        assert naive_refused == BOOKINGS_DURING_OUTAGE

        private_redis.start()  # the same port, empty: whatever it held is gone
        wait_for(
            lambda: not rows.filter(processed_at__isnull=True).exists(),
            timeout=120,
            what=f"the sweep to re-dispatch every pending row (log: {worker['log']})",
        )
        wait_for(
            lambda: all(held_mails(mail_dir, b.reference) for b in bookings),
            timeout=30,
            what="one e-mail per booking",
        )
        deliveries = len(received_ids(worker["log"], "bookings.tasks.outbox_process"))

    for booking in bookings:
        assert held_mails(mail_dir, booking.reference) == 1, booking.reference
        # Lost for good: never sent, and nothing in the broker can bring it back.
        assert notices(mail_dir, booking.reference) == 0
        assert broker_mentions(private_redis, booking.reference) == 0
    assert list(rows.values_list("attempts", flat=True)) == [1] * BOOKINGS_DURING_OUTAGE
    FIGURES["broker_outage"] = {
        "bookings_committed_during_outage": BOOKINGS_DURING_OUTAGE,
        "outbox_side_effects_delivered": BOOKINGS_DURING_OUTAGE,
        "outbox_side_effects_duplicated": 0,
        "outbox_task_deliveries_seen": deliveries,
        "unprotected_side_effects_lost": naive_refused,
    }


# --- a worker killed in the middle of a task --------------------------------------------


@contextmanager
def victim_worker(server: PrivateRedis, fault_dir: Path) -> Iterator[dict[str, Any]]:
    """A worker as production runs it (prefork pool, one child), in a process group of its
    own so the test can SIGKILL all of it at once; its handlers wait ten minutes before the
    side effect, so the kill lands in the middle. This process publishes to the same broker
    meanwhile (as ``running_worker`` arranges)."""
    log_path = fault_dir / "victim.log"
    env = {
        **os.environ,
        **worker_env(fault_dir, hold_seconds=600),
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": server.url,
        "MOONSLOT_CELERY_EAGER": "false",
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(fault_dir / "victim-mail"),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=prefork",
        "--concurrency=1", "--without-gossip", "--without-mingle", "--loglevel=INFO",
        f"--hostname=victim-{os.getpid()}@%h",
    ]  # fmt: skip
    previous = {
        key: celery_app.conf[key] for key in ("broker_url", "result_backend", "task_always_eager")
    }
    celery_app.close()
    celery_app.conf.update(broker_url=server.url, result_backend=None, task_always_eager=False)
    _forget_connections()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = {"process": process, "log": log_path, "mail_dir": fault_dir / "victim-mail"}
    try:
        wait_for(
            lambda: " ready." in log_path.read_text(errors="replace"),
            timeout=60,
            what=f"the worker to start ({log_path})",
        )
        yield worker
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        celery_app.close()
        celery_app.conf.update(**previous)
        _forget_connections()


def _kill(worker: dict[str, Any]) -> None:
    """SIGKILL the worker and its pool child together: no shutdown, no acknowledgement."""
    process: subprocess.Popen[bytes] = worker["process"]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _as_if_an_hour_passed(server: PrivateRedis, message_id: int) -> None:
    """Move the clock past the dead worker's outbox lease (bookings.outbox.LEASE, five
    minutes) and the broker's visibility timeout (CELERY_VISIBILITY_TIMEOUT, an hour), as
    ``tests.bookings.api_helpers.lapse`` moves a hold's expiry: by rewriting the
    timestamps, not the settings."""
    OutboxMessage.objects.filter(pk=message_id).update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )
    client = server.client()
    for tag in client.zrange("unacked_index", 0, -1):
        client.zadd("unacked_index", {str(tag): 1})


def test_an_outbox_task_killed_mid_handler_runs_again_exactly_once(
    private_redis: PrivateRedis, fault_dir: Path
) -> None:
    key = "killed-mid-handler"
    with victim_worker(private_redis, fault_dir) as first:
        with transaction.atomic():
            message = outbox_write(topic=SLOW_TOPIC, payload={"key": key})
        assert message is not None
        wait_for(lambda: started(fault_dir, key), what=f"the handler to start ({first['log']})")
        _kill(first)
        (original,) = received_ids(first["log"], "bookings.tasks.outbox_process")
    row = OutboxMessage.objects.get(pk=message.pk)
    assert row.processed_at is None
    assert row.attempts == 1
    assert row.locked_until is not None
    assert row.locked_until > timezone.now()  # the dead worker's lease
    assert private_redis.client().hlen("unacked") == 1  # late ack: the broker kept it
    assert notices(first["mail_dir"], key) == 0

    _as_if_an_hour_passed(private_redis, message.pk)
    with fault_worker(private_redis, fault_dir, beat=True) as second:
        wait_for(
            lambda: OutboxMessage.objects.filter(
                pk=message.pk, processed_at__isnull=False
            ).exists(),
            timeout=60,
            what=f"the row to be processed again ({second['log']})",
        )
        # The broker hands the original message back too; the outbox makes it a no-op.
        wait_for(
            lambda: (
                original in received_ids(second["log"], "bookings.tasks.outbox_process")
                and not private_redis.client().hlen("unacked")
            ),
            timeout=60,
            what=f"the broker to redeliver task {original} ({second['log']})",
        )
        wait_for(lambda: notices(second["mail_dir"], key), what="the notice")
        # One more delivery of the same row, as a sweep racing in another process would
        # send: the claim turns it into a no-op.
        outbox_dispatch(message.pk)
        task = "bookings.tasks.outbox_process"

        def all_finished() -> bool:
            ran = succeeded_with(second["log"], task, "True")
            refused = succeeded_with(second["log"], task, "False")
            received = received_ids(second["log"], task)
            return len(ran) == 1 and len(refused) >= 1 and len(ran) + len(refused) == len(received)

        wait_for(all_finished, what=f"every delivery to finish ({second['log']})")
        deliveries = len(received_ids(second["log"], "bookings.tasks.outbox_process"))
    row.refresh_from_db()
    assert row.attempts == 2  # the killed run, then one run to completion
    assert notices(second["mail_dir"], key) == 1
    assert len(started(fault_dir, key)) == 2
    FIGURES["worker_killed_protected"] = {
        "handler_runs_started": 2,
        "side_effects": 1,
        "deliveries_after_restart": deliveries,
    }


def test_without_late_ack_and_outbox_a_task_killed_mid_run_is_lost(
    private_redis: PrivateRedis, fault_dir: Path
) -> None:
    key = "naive-killed-mid-run"
    with victim_worker(private_redis, fault_dir) as first:
        celery_app.send_task(NAIVE_TASK, args=[key], ignore_result=True)
        wait_for(lambda: started(fault_dir, key), what=f"the task to start ({first['log']})")
        _kill(first)
    # Acknowledged on receipt: the broker holds nothing that could bring it back, however
    # long one waits.
    assert broker_mentions(private_redis, key) == 0
    with fault_worker(private_redis, fault_dir, beat=True) as second:
        # Bounded proof that the new worker consumes: a protected notice gets through.
        with transaction.atomic():
            outbox_write(topic=SLOW_TOPIC, payload={"key": "after-restart"})
        wait_for(lambda: notices(second["mail_dir"], "after-restart"), what="a later notice")
    assert notices(second["mail_dir"], key) == 0
    assert len(started(fault_dir, key)) == 1
    FIGURES["worker_killed_unprotected"] = {"handler_runs_started": 1, "side_effects": 0}
