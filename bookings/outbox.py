"""The transactional outbox (STYLE.md): side effects are rows written in the transaction that
causes them, dispatched on commit and re-dispatched by a periodic sweep, processed once.

Processing claims a row with a lease (``locked_until``) in a short transaction, runs the
handler outside any transaction (handlers may send mail or call HTTP), then marks it
processed. Handlers must be safe to run again for the same row.

The lease is short (``MOONSLOT_OUTBOX_LEASE``, half a minute) and a thread beside the
handler renews it every third of that for as long as the handler runs, so a slow handler
keeps its row however long it takes, while a worker that dies (SIGKILL, a lost machine)
stops renewing and its row is handed out again by the sweep within about one lease, not
after some long timeout. A claim is owned by the ``attempts`` count it wrote: a renewal or
an error report by a worker whose lease was lost meanwhile (taken over by another claim)
matches no row and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from bookings.models import OutboxMessage
from config.db import insert_unless_conflict

logger = logging.getLogger(__name__)

Handler = Callable[[OutboxMessage], None]
HANDLERS: dict[str, Handler] = {}


def outbox_handler(topic: str) -> Callable[[Handler], Handler]:
    """Register the handler of a topic; one handler per topic."""

    def register(func: Handler) -> Handler:
        if topic in HANDLERS and HANDLERS[topic] is not func:
            raise RuntimeError(f"outbox topic {topic!r} already has a handler")
        HANDLERS[topic] = func
        return func

    return register


def outbox_write(
    *, topic: str, payload: dict[str, Any], dedupe_key: str | None = None
) -> OutboxMessage | None:
    """Record a side effect in the current transaction and try to dispatch it once the
    transaction commits. With a ``dedupe_key`` already written, nothing new is written and
    ``None`` is returned."""
    message = OutboxMessage(topic=topic, payload=payload, dedupe_key=dedupe_key)
    message_id = _insert_unless_written(message)
    if message_id is None:
        return None
    transaction.on_commit(lambda: outbox_dispatch(message_id))
    return message


def _insert_unless_written(message: OutboxMessage) -> int | None:
    """The new row's id, or None when its dedupe key was written already: one statement
    where a savepoint around an insert that may fail took three (every hold writes a
    message)."""
    if not insert_unless_conflict(message, conflict="dedupe_key"):
        return None
    return int(message.pk)


def outbox_dispatch(message_id: int) -> None:
    """Hand a row to a worker. A broker outage is logged, not raised: the row stays pending
    and the periodic sweep dispatches it when the broker is back."""
    from bookings.tasks import outbox_process_task

    try:
        outbox_process_task.delay(message_id)
    except Exception:  # the broker's own errors vary by transport
        logger.warning(
            "outbox %s: dispatch failed; the sweep will retry", message_id, exc_info=True
        )


def outbox_process(*, message_id: int) -> bool:
    """Run one row's handler once. Returns True if this call processed it; False if it was
    already processed or another worker holds its lease. Handler errors propagate after the
    row records them (the task's retry policy decides what happens next)."""
    now = timezone.now()
    lease: timedelta = settings.MOONSLOT_OUTBOX_LEASE
    with transaction.atomic():
        message = (
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(pk=message_id, processed_at__isnull=True)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
            .first()
        )
        if message is None:
            return False
        message.locked_until = now + lease
        message.attempts += 1
        message.save(update_fields=["locked_until", "attempts"])
    handler = HANDLERS.get(message.topic)
    try:
        if handler is None:
            raise LookupError(f"no outbox handler for topic {message.topic!r}")
        with _lease_renewed(message, lease=lease):
            handler(message)
    except Exception as exc:
        _claim(message).update(
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
            locked_until=timezone.now() + _backoff(message.attempts),
        )
        raise
    OutboxMessage.objects.filter(pk=message.pk, processed_at__isnull=True).update(
        processed_at=timezone.now(), locked_until=None, last_error=""
    )
    return True


def _claim(message: OutboxMessage) -> QuerySet[OutboxMessage]:
    """The row while this claim of it (the ``attempts`` it wrote) still holds."""
    return OutboxMessage.objects.filter(
        pk=message.pk, attempts=message.attempts, processed_at__isnull=True
    )


@contextmanager
def _lease_renewed(message: OutboxMessage, *, lease: timedelta) -> Iterator[None]:
    """Renew this claim's lease from a thread of its own while the body runs.

    Not inside a transaction (tests that run tasks eagerly in theirs): the claim is not
    committed there, so another connection could neither see it nor wait for it safely.
    ``MOONSLOT_DISABLE_OUTBOX_LEASE_RENEWAL`` is the fault tests' switch to show the double
    run the renewal prevents; never set it in production."""
    if (
        settings.MOONSLOT_DISABLE_OUTBOX_LEASE_RENEWAL
        or transaction.get_connection().in_atomic_block
    ):
        yield
        return
    done = threading.Event()

    def renew() -> None:
        try:
            while not done.wait(lease.total_seconds() / 3):
                if not _claim(message).update(locked_until=timezone.now() + lease):
                    logger.warning("outbox %s: lease lost; no longer renewed", message.pk)
                    return
        except Exception:  # a renewal that fails leaves the lease to lapse, as a dead worker does
            logger.warning("outbox: renewing a lease failed", exc_info=True)
        finally:
            connections.close_all()  # this thread's own connections

    renewer = threading.Thread(target=renew, name="outbox-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 10 * 2 ** min(attempts, 12)))


def outbox_pending_ids(*, now: Any = None, limit: int = 500) -> list[int]:
    """Rows still pending after the retry delay and not leased."""
    now = now or timezone.now()
    retry_after: timedelta = settings.MOONSLOT_OUTBOX_RETRY_AFTER
    return list(
        OutboxMessage.objects.filter(processed_at__isnull=True, created_at__lte=now - retry_after)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def outbox_dispatch_pending(*, now: Any = None, limit: int = 500) -> int:
    """The periodic sweep: dispatch whatever is still pending. Returns how many."""
    ids = outbox_pending_ids(now=now, limit=limit)
    for message_id in ids:
        outbox_dispatch(message_id)
    return len(ids)
