"""Test-only work for the fault tests, imported by the workers they start
(``tests.reliability.worker_settings`` lists this module in ``CELERY_IMPORTS``). Nothing
here changes how the product's own tasks run.

Both pieces do the same side effect, one e-mail "[fault] notice <key>", after writing a
"started" marker into ``$MOONSLOT_FAULT_DIR`` and waiting ``$MOONSLOT_FAULT_HOLD_SECONDS``
or until the test writes a "release" marker there (so a test can kill the worker in the
middle, before the e-mail goes, or let it finish when it chooses):

- ``slow_notice`` is an outbox handler: the protected path (a row written with the change,
  dispatched on commit and by the sweep, claimed under a lease, the task acknowledged late);
- ``naive_notice`` is a plain task with none of it: no row behind it, acknowledged when the
  worker receives it (Celery's default) — what a side effect looks like without the
  protections, which is how the tests show what they protect against.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task
from django.core.mail import EmailMessage

from bookings.models import OutboxMessage
from bookings.outbox import outbox_handler

SLOW_TOPIC = "test.slow_notice"
NAIVE_TASK = "tests.reliability.naive_notice"


def notice_subject(key: str) -> str:
    return f"[fault] notice {key}"


def release_marker(directory: Path, key: str) -> Path:
    return directory / f"release-{key}"


def _hold_then_send(key: str) -> None:
    directory = Path(os.environ["MOONSLOT_FAULT_DIR"])
    (directory / f"started-{key}-{os.getpid()}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + float(os.environ.get("MOONSLOT_FAULT_HOLD_SECONDS", "0"))
    while time.monotonic() < deadline and not release_marker(directory, key).exists():
        time.sleep(0.05)
    EmailMessage(subject=notice_subject(key), body=f"{key}\n", to=["ops@example.com"]).send()


@outbox_handler(SLOW_TOPIC)
def slow_notice(message: OutboxMessage) -> None:
    _hold_then_send(str(message.payload["key"]))


@shared_task(name=NAIVE_TASK, acks_late=False)
def naive_notice(key: str) -> None:
    _hold_then_send(key)
