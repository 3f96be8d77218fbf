"""Faults injected into a real worker and a real broker (PostgreSQL + Redis tier): the broker
going away while bookings are committed, and a worker killed with SIGKILL in the middle of a
task. Each protection is shown beside the same work without it, to show the loss or the
duplicate it prevents: the outbox and late acknowledgement against a plain early-acked task
(``fault_tasks.naive_notice``), the renewal of outbox leases against the same workers with
renewal switched off (``MOONSLOT_DISABLE_OUTBOX_LEASE_RENEWAL``, test-only).

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
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from bookings import services
from bookings.manifest_pdf import font_available
from bookings.manifests import DELIVER_TOPIC, REBUILD_TOPIC, REBUILD_WINDOW, RENDER_TOPIC
from bookings.models import Booking, ManifestDelivery, ManifestVersion, OutboxMessage
from bookings.outbox import outbox_dispatch, outbox_write
from bookings.services import Actor
from config.celery import app as celery_app
from marketplace.models import MissionContact
from tests.conftest import missing
from tests.factories import ResellerFactory, SlotClassFactory
from tests.reliability.fault_tasks import NAIVE_TASK, SLOW_TOPIC, notice_subject, release_marker
from tests.worker import (  # noqa: F401 (fixture)
    PrivateRedis,
    database_url_of_test_db,
    forget_celery_connections,
    mail_files,
    mails_with,
    private_redis_fixture,
    running_worker,
    wait_for,
)

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "artifacts" / "reliability" / "faults.json"
WORKER_SETTINGS = "tests.reliability.worker_settings"
FIGURES: dict[str, dict[str, Any]] = {}
# The workers' outbox lease (MOONSLOT_OUTBOX_LEASE_SECONDS): renewed every second while a
# handler runs, lapsed three seconds after its worker died.
LEASE = timedelta(seconds=3)
OUTBOX_TASK = "bookings.tasks.outbox_process"
SWEEP_TASK = "bookings.tasks.outbox_dispatch_pending"


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


def worker_env(fault_dir: Path, *, hold_seconds: float, renew_leases: bool) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": WORKER_SETTINGS,
        "MOONSLOT_FAULT_DIR": str(fault_dir),
        "MOONSLOT_FAULT_HOLD_SECONDS": str(hold_seconds),
        "MOONSLOT_OUTBOX_LEASE_SECONDS": str(int(LEASE.total_seconds())),
        "MOONSLOT_TEST_DISABLE_OUTBOX_LEASE_RENEWAL": "false" if renew_leases else "true",
    }


def notices(mail_dir: Path, key: str) -> int:
    return mails_with(mail_dir, f"Subject: {notice_subject(key)}\n")


def started(fault_dir: Path, key: str) -> list[Path]:
    return sorted(fault_dir.glob(f"started-{key}-*"))


@contextmanager
def fault_worker(
    server: PrivateRedis,
    fault_dir: Path,
    *,
    hold_seconds: float = 0,
    renew_leases: bool = True,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """``running_worker`` on the private broker, with the fault tasks loaded, once it has
    said it is ready. This process sends tasks without waiting for results: the result
    backend's listener would spend its own reconnection budget (twenty seconds) on every
    send while the broker is down. Celery caches the backend per app, so it is dropped on
    the way in and out, for the next user to build from the settings then in force."""
    env = worker_env(fault_dir, hold_seconds=hold_seconds, renew_leases=renew_leases)
    with running_worker(server.url, extra_env=env, **options) as worker:
        celery_app.conf.update(result_backend=None)
        forget_celery_connections()
        try:
            wait_for(
                lambda: " ready." in Path(str(worker["log"])).read_text(errors="replace"),
                timeout=60,
                what=f"the worker to start ({worker['log']})",
            )
            yield worker
        finally:
            forget_celery_connections()


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


def unacked_task_ids(server: PrivateRedis) -> set[str]:
    """Tasks delivered to a worker and not acknowledged: the broker hands them out again
    once its visibility timeout has passed."""
    return {json.loads(raw)[0]["headers"]["id"] for raw in server.client().hvals("unacked")}


def _hold(slot_class_id: int, organisation: Any, *, now: datetime | None = None) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class_id,
        organisation=organisation,
        channel="api",
        actor=Actor.system("fault-test"),
        currency="JPY",
        mass_g=1000,
        now=now,
    )


# --- the broker goes away ---------------------------------------------------------------

BOOKINGS_DURING_OUTAGE = 5


def test_side_effects_committed_while_the_broker_is_down_arrive_once_it_is_back(
    private_redis: PrivateRedis, fault_dir: Path
) -> None:
    """Bookings held and confirmed while the broker is down: each one's two e-mails (held,
    confirmed) and the mission's manifest (one new version with all of them, rendered and
    delivered to the mission's contact) all happen once the broker is back, each once."""
    if not font_available():
        missing(
            "the manifest PDF needs fonts-ipafont-gothic (apt-get install fonts-ipafont-gothic)"
        )
    slot_class = SlotClassFactory.create()
    mission = slot_class.mission
    MissionContact.objects.create(mission=mission, name="Ops", email="ops@lander.example")
    reseller = ResellerFactory.create(notification_email="desk@reseller.example")
    with fault_worker(private_redis, fault_dir, beat=True) as worker:
        mail_dir: Path = worker["mail_dir"]
        # The unprotected path works while the broker is up (so its losses below are the
        # outage's doing).
        celery_app.send_task(NAIVE_TASK, args=["before-the-outage"], ignore_result=True)
        wait_for(lambda: notices(mail_dir, "before-the-outage"), what="the control notice")

        private_redis.stop()
        # Held and confirmed by a clock two debounce windows back, so the manifest rebuild
        # each confirmation asks for is already due when the broker returns (rather than
        # at the end of the current window, up to a minute later).
        then = timezone.now() - 2 * REBUILD_WINDOW
        bookings, naive_refused = [], 0
        for _n in range(BOOKINGS_DURING_OUTAGE):
            booking = _hold(slot_class.pk, reseller, now=then)  # its on-commit dispatch fails
            services.booking_confirm(
                booking_id=booking.pk, actor=Actor.system("fault-test"), now=then
            )
            bookings.append(booking)
            try:  # the same news without the outbox: straight to the broker after commit
                celery_app.send_task(NAIVE_TASK, args=[booking.reference], ignore_result=True)
            except BrokerUnavailable:
                naive_refused += 1
        notify = OutboxMessage.objects.filter(
            topic="booking.notify", payload__booking_id__in=[b.pk for b in bookings]
        )
        manifest_work = OutboxMessage.objects.filter(
            topic__in=[REBUILD_TOPIC, RENDER_TOPIC, DELIVER_TOPIC]
        )
        assert notify.count() == 2 * BOOKINGS_DURING_OUTAGE  # held, confirmed
        assert manifest_work.filter(topic=REBUILD_TOPIC).count() == BOOKINGS_DURING_OUTAGE
        assert not notify.filter(processed_at__isnull=False).exists()
        assert not manifest_work.filter(processed_at__isnull=False).exists()
        assert not ManifestVersion.objects.filter(mission=mission).exists()
        assert naive_refused == BOOKINGS_DURING_OUTAGE

        private_redis.start()  # the same port, empty: whatever it held is gone
        back = timezone.now()
        wait_for(
            lambda: ManifestDelivery.objects.filter(version__mission=mission).exists(),
            timeout=120,
            what=f"the manifest to be rebuilt, rendered and delivered (log: {worker['log']})",
        )
        wait_for(
            lambda: (
                not (
                    notify.filter(processed_at__isnull=True).exists()
                    or manifest_work.filter(processed_at__isnull=True).exists()
                )
            ),
            timeout=120,
            what=f"the sweep to re-dispatch every pending row (log: {worker['log']})",
        )
        wait_for(
            lambda: all(mails_with(mail_dir, f"{b.reference} is confirmed") for b in bookings),
            timeout=30,
            what="the e-mails of every booking",
        )
        deliveries = len(received_ids(worker["log"], OUTBOX_TASK))

    for booking in bookings:
        assert mails_with(mail_dir, f"Booking {booking.reference} is held") == 1
        assert mails_with(mail_dir, f"Booking {booking.reference} is confirmed") == 1
        # Lost for good: never sent, and nothing in the broker can bring it back.
        assert notices(mail_dir, booking.reference) == 0
        assert broker_mentions(private_redis, booking.reference) == 0
    assert list(notify.values_list("attempts", flat=True)) == [1] * 2 * BOOKINGS_DURING_OUTAGE
    (version,) = ManifestVersion.objects.filter(mission=mission)
    assert version.created_at >= back
    assert {line["reference"] for line in version.content["lines"]} == {
        b.reference for b in bookings
    }
    assert list(ManifestDelivery.objects.values_list("recipient", flat=True)) == [
        "ops@lander.example"
    ]
    assert mails_with(mail_dir, f"Subject: [Moonslot] Manifest {mission.code} v") == 1
    FIGURES["broker_outage"] = {
        "bookings_committed_during_outage": BOOKINGS_DURING_OUTAGE,
        "outbox_side_effects_delivered": 2 * BOOKINGS_DURING_OUTAGE + 1,
        "outbox_side_effects_duplicated": 0,
        "manifest_versions_built": 1,
        "outbox_task_deliveries_seen": deliveries,
        "unprotected_side_effects_lost": naive_refused,
    }


# --- a worker killed in the middle of a task --------------------------------------------


@contextmanager
def victim_worker(
    server: PrivateRedis, fault_dir: Path, *, renew_leases: bool = True
) -> Iterator[dict[str, Any]]:
    """A worker as production runs it (prefork pool, one child), in a process group of its
    own so the test can SIGKILL all of it at once; its handlers wait ten minutes (or for
    the test's release marker) before the side effect, so the kill lands in the middle.
    This process publishes to the same broker meanwhile (as ``running_worker`` arranges)."""
    log_path = fault_dir / "victim.log"
    env = {
        **os.environ,
        **worker_env(fault_dir, hold_seconds=600, renew_leases=renew_leases),
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
    forget_celery_connections()
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
        forget_celery_connections()


def _kill(worker: dict[str, Any]) -> None:
    """SIGKILL the worker and its pool child together: no shutdown, no acknowledgement."""
    process: subprocess.Popen[bytes] = worker["process"]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _started_by_the_victim(fault_dir: Path, key: str) -> OutboxMessage:
    """Write a slow row with the victim worker up, and wait for its handler to start."""
    with transaction.atomic():
        message = outbox_write(topic=SLOW_TOPIC, payload={"key": key})
    assert message is not None
    wait_for(lambda: started(fault_dir, key), what=f"the victim to start the handler ({key})")
    return message


def test_a_worker_killed_mid_handler_has_its_row_run_again_promptly_and_once(
    private_redis: PrivateRedis, fault_dir: Path
) -> None:
    """While its worker lives, a handler renews its lease, so a second worker's sweeps leave
    its row alone however many leases go by; once the worker is SIGKILLed nobody renews it,
    the lease lapses and the second worker runs the row, once. No clock is moved, and
    nothing waits for the broker's visibility timeout (an hour)."""
    key = "killed-mid-handler"
    with victim_worker(private_redis, fault_dir) as first:
        message = _started_by_the_victim(fault_dir, key)
        (original,) = received_ids(first["log"], OUTBOX_TASK)
        row = OutboxMessage.objects.filter(pk=message.pk)
        first_term = row.values_list("locked_until", flat=True).get()
        assert first_term is not None
        with fault_worker(private_redis, fault_dir, beat=True) as second:

            def renewed_past(term: datetime) -> bool:
                return bool(row.filter(locked_until__gt=term).exists())

            def sweeps() -> int:
                return len(succeeded_with(second["log"], SWEEP_TASK, r"\d+"))

            wait_for(lambda: renewed_past(first_term + LEASE), what="a renewal past the first term")
            swept = sweeps()
            wait_for(
                lambda: sweeps() >= swept + 3 and renewed_past(first_term + 3 * LEASE),
                timeout=60,
                what=f"three leases and three sweeps to go by ({second['log']})",
            )
            assert len(started(fault_dir, key)) == 1
            assert row.get().attempts == 1

            _kill(first)
            assert original in unacked_task_ids(private_redis)  # late ack: the broker kept it
            wait_for(
                lambda: row.filter(processed_at__isnull=False).exists(),
                timeout=60,
                what=f"the row to be processed again ({second['log']})",
            )
            wait_for(lambda: notices(second["mail_dir"], key), what="the notice")
            # One more delivery of the same row, as the broker's redelivery of the killed
            # task (after its visibility timeout) or a sweep racing in another process
            # would send: the claim turns it into a no-op.
            outbox_dispatch(message.pk)

            def all_finished() -> bool:
                ran = succeeded_with(second["log"], OUTBOX_TASK, "True")
                refused = succeeded_with(second["log"], OUTBOX_TASK, "False")
                received = received_ids(second["log"], OUTBOX_TASK)
                return (
                    len(ran) == 1 and len(refused) >= 1 and len(ran) + len(refused) == len(received)
                )

            wait_for(all_finished, what=f"every delivery to finish ({second['log']})")
            deliveries = len(received_ids(second["log"], OUTBOX_TASK))
    assert row.get().attempts == 2  # the killed run, then one run to completion
    assert notices(first["mail_dir"], key) == 0
    assert notices(second["mail_dir"], key) == 1
    assert len(started(fault_dir, key)) == 2
    assert original in unacked_task_ids(private_redis)  # still there for the broker to give back
    FIGURES["worker_killed_protected"] = {
        "handler_runs_started": 2,
        "side_effects": 1,
        "deliveries_to_the_surviving_worker": deliveries,
    }


def test_without_lease_renewal_a_slow_handler_is_run_twice(
    private_redis: PrivateRedis, fault_dir: Path
) -> None:
    """The same two workers with renewal switched off: the short lease lapses while the
    first worker, alive and well, is still running the handler, the second worker's sweep
    hands the row out again, and the side effect happens twice. (Without renewal, the only
    other choice is a lease longer than the slowest handler, which is how long a dead
    worker's row then waits.)"""
    key = "lease-not-renewed"
    with victim_worker(private_redis, fault_dir, renew_leases=False) as first:
        message = _started_by_the_victim(fault_dir, key)
        with fault_worker(private_redis, fault_dir, beat=True, renew_leases=False) as second:
            wait_for(
                lambda: len(started(fault_dir, key)) == 2,
                timeout=60,
                what=f"the second worker to take the row over ({second['log']})",
            )
            assert first["process"].poll() is None  # the first worker never died
            wait_for(lambda: notices(second["mail_dir"], key), what="the second run's notice")
            release_marker(fault_dir, key).touch()  # the first run finishes too
            wait_for(lambda: notices(first["mail_dir"], key), what="the first run's notice")
    assert OutboxMessage.objects.get(pk=message.pk).processed_at is not None
    assert notices(first["mail_dir"], key) + notices(second["mail_dir"], key) == 2
    FIGURES["lease_not_renewed_unprotected"] = {"handler_runs_started": 2, "side_effects": 2}


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
