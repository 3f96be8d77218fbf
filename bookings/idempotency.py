"""``Idempotency-Key`` for the reseller API's writes (shared/API.md, "Idempotency").

A key is scoped to the API key and the request path (without the query string). The body is
compared as parsed JSON: ``json.dumps(sort_keys=True)`` of it, hashed with SHA-256 (a
body-less request counts as ``{}``).

How one keyed write runs:

1. **Claim**, in its own committed transaction: insert an ``in_progress`` record. The unique
   constraint on (API key, key, path) decides between concurrent duplicates; the loser reads
   the existing row and answers from it:

   - completed, same body, younger than ``MOONSLOT_IDEMPOTENCY_TTL``: the stored status and
     body again, with ``Idempotent-Replayed: true``; nothing runs;
   - a different body: 409 ``idempotency_key_reused``;
   - still ``in_progress``: 409 ``idempotency_key_in_use``;
   - older than the TTL, or ``in_progress`` for longer than ``ABANDONED_AFTER`` (the process
     that claimed it died): the row is deleted (conditionally, so only one request does it)
     and the claim is tried again.

2. **Run**, in one transaction: run the handler (its errors become their error response
   through the view's ``handle_exception``), and store a 2xx or 4xx response in the row *in
   the same transaction* as the service's writes. So a booking exists if and only if its
   response was stored: a crash in between rolls both back, and the retry runs once. The
   store is an UPDATE conditional on the claim still being this request's and in progress:
   if a takeover (below) deleted it meanwhile, nothing is stored, the handler's writes roll
   back and the answer is 409 ``idempotency_key_in_use``, so exactly one of the two runs
   counts. (A lock taken on the claim before the handler would cost a query on every write
   to guard against a request running for ``ABANDONED_AFTER``, which gunicorn never lets
   happen.)

3. A 5xx, a 429 or an exception that escapes (a bug) is not stored: the claim is deleted so
   a retry can run.

Failures before the claim (no valid key, a malformed ``Idempotency-Key``, a body that is not
JSON) are not stored: nothing ran, and the same request gets the same refusal again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey
from bookings.models import IdempotencyRecord, IdempotencyState
from config.api import ApiError
from config.db import insert_unless_conflict

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# No request runs this long (gunicorn's worker timeout is far shorter), so a claim this old
# that is still in progress belongs to a process that died before it could finish or clean
# up. Without this the key would answer idempotency_key_in_use for the whole TTL.
ABANDONED_AFTER = timedelta(minutes=5)
_PATH_COLUMN_LENGTH = IdempotencyRecord._meta.get_field("path").max_length or 500
_CLAIM_ATTEMPTS = 3


def idempotency_key_from(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, or None without one. Raises ``ValidationError``
    (400 ``invalid`` on the header's name) for an empty, over-long or unprintable key."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    problem = None
    if not key:
        problem = _("An Idempotency-Key must not be empty.")
    elif len(key) > MAX_KEY_LENGTH:
        problem = _("An Idempotency-Key has at most %(max)s characters (this one has %(n)s).") % {
            "max": MAX_KEY_LENGTH,
            "n": len(key),
        }
    elif not key.isprintable():
        problem = _("An Idempotency-Key must contain printable characters only.")
    if problem:
        raise exceptions.ValidationError({IDEMPOTENCY_HEADER: [problem]})
    return key


def request_digest(data: Any) -> str:
    """SHA-256 of the parsed JSON body in canonical form: the same JSON, spelt with other
    whitespace or key order, gives the same digest."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _record_path(path: str) -> str:
    # A path longer than the column or with characters PostgreSQL refuses (a garbage
    # reference, %00) is kept as its digest, so it can neither fail the insert nor share a
    # record with another such path.
    if len(path) <= _PATH_COLUMN_LENGTH and path.isprintable():
        return path
    return "sha256:" + hashlib.sha256(path.encode(errors="surrogatepass")).hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    return Response(
        data=record.response_body,
        status=record.response_status,
        headers={REPLAYED_HEADER: "true"},
    )


def _claim(*, api_key: ApiKey, key: str, path: str, digest: str) -> IdempotencyRecord | Response:
    """Insert the in-progress claim, or answer from the record already there."""
    ttl: timedelta = settings.MOONSLOT_IDEMPOTENCY_TTL
    for _attempt in range(_CLAIM_ATTEMPTS):
        now = timezone.now()
        claim = IdempotencyRecord(
            api_key=api_key,
            key=key,
            path=path,
            request_digest=digest,
            state=IdempotencyState.IN_PROGRESS,
            created_at=now,
        )
        # One statement, committed at once outside a transaction (a request); a lost race is
        # an answer, not an error, so inside one (a test's) it needs no savepoint either.
        if insert_unless_conflict(claim, conflict=("api_key", "key", "path")):
            return claim
        existing = IdempotencyRecord.objects.filter(api_key=api_key, key=key, path=path).first()
        if existing is None:
            continue  # released by a failed first attempt a moment ago: claim it now
        if _is_stale(existing, now=now, ttl=ttl):
            # Conditional on what was read, so of several requests finding the same stale
            # row only one deletes it; the others lose the next insert and re-read.
            IdempotencyRecord.objects.filter(
                pk=existing.pk, state=existing.state, created_at=existing.created_at
            ).delete()
            continue
        if existing.request_digest != digest:
            raise ApiError(
                status_code=409,
                code="idempotency_key_reused",
                detail=_(
                    "This Idempotency-Key was already used with a different body; "
                    "use a new key for a new request."
                ),
            )
        if existing.state == IdempotencyState.IN_PROGRESS:
            raise ApiError(
                status_code=409,
                code="idempotency_key_in_use",
                detail=_(
                    "A request with this Idempotency-Key is still running; "
                    "retry once it has finished."
                ),
            )
        return _replay(existing)
    raise ApiError(
        status_code=409,
        code="idempotency_key_in_use",
        detail=_("Other requests with this Idempotency-Key are running; retry in a moment."),
    )


def _is_stale(record: IdempotencyRecord, *, now: datetime, ttl: timedelta) -> bool:
    if record.created_at <= now - ttl:
        return True
    return (
        record.state == IdempotencyState.IN_PROGRESS and record.created_at <= now - ABANDONED_AFTER
    )


def _storable(status_code: int) -> bool:
    return status_code < 500 and status_code != 429


def _release(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, state=IdempotencyState.IN_PROGRESS).delete()


def run_idempotently(
    request: Request,
    *,
    api_key: ApiKey,
    handler: Callable[[], Response],
    handle_exception: Callable[[Exception], Response],
) -> Response:
    """Run a write under the request's ``Idempotency-Key`` (see the module docstring); without
    the header, just run it. ``handle_exception`` is the view's: it turns the handler's errors
    into their error response (or re-raises what is not an API error)."""
    key = idempotency_key_from(request)
    if key is None:
        return handler()
    outcome = _claim(
        api_key=api_key,
        key=key,
        path=_record_path(request.path),
        digest=request_digest(request.data),
    )
    if isinstance(outcome, Response):
        return outcome
    record = outcome
    try:
        with transaction.atomic():
            try:
                response = handler()
            except Exception as exc:
                response = handle_exception(exc)
            if _storable(response.status_code) and not _store(record, response):
                raise _TakenOver  # taken over as abandoned while this request ran
    except _TakenOver:
        raise ApiError(
            status_code=409,
            code="idempotency_key_in_use",
            detail=_("Another request with this Idempotency-Key took over; retry."),
        ) from None
    except BaseException:
        _release(record)
        raise
    if not _storable(response.status_code):
        _release(record)
    return response


def _store(record: IdempotencyRecord, response: Response) -> bool:
    """Store the response on the claim if it is still this request's (in progress); False
    when it was taken over. One hand-written UPDATE: every keyed write runs it while its
    row locks are held, and compiling the ORM's ``update()`` cost more than running it."""
    meta = IdempotencyRecord._meta
    quote = connection.ops.quote_name
    body = meta.get_field("response_body")
    with connection.cursor() as cursor:
        cursor.execute(
            # The table name comes from model metadata, values are parameters.
            f"UPDATE {quote(meta.db_table)} "  # noqa: S608
            "SET state = %s, response_status = %s, response_body = %s "
            "WHERE id = %s AND state = %s",
            [
                IdempotencyState.COMPLETED,
                response.status_code,
                body.get_db_prep_save(response.data, connection),
                record.pk,
                IdempotencyState.IN_PROGRESS,
            ],
        )
        return bool(cursor.rowcount)


class _TakenOver(Exception):
    """Rolls a request's writes back when its claim was taken over while it ran."""


def idempotency_records_purge(*, now: datetime | None = None) -> int:
    """Delete records past the TTL (they can no longer answer a replay). For a periodic job;
    an expired record is also replaced when its key is used again. Returns how many."""
    now = now or timezone.now()
    ttl: timedelta = settings.MOONSLOT_IDEMPOTENCY_TTL
    deleted, _by_model = IdempotencyRecord.objects.filter(created_at__lte=now - ttl).delete()
    return deleted
