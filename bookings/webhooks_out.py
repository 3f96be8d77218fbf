"""Reseller webhooks: every event of a reseller's events feed, POSTed to the URLs it
registered, signed, in feed order per endpoint, retried with backoff, disabled after
repeated failure.

What a reseller receives is exactly what ``GET /api/v1/events/`` shows it: the body is the
feed's event (``{"id", "type", "booking", "created_at", "data"}``, serialised by the feed's
own serializer), with two headers:

- ``Moonslot-Event-Id``: the event's ``id`` (its feed position), to drop a duplicate;
- ``Moonslot-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256 under the endpoint's
  secret of ``"<t>.<body>"`` (``signature_verify`` is the check a receiver runs).

How it runs (no network call ever happens inside a database transaction):

1. **Fan-out** (``webhooks_fan_out``, a beat job): for each active endpoint, the events of
   its organisation past the endpoint's cursor become ``WebhookDelivery`` rows. The cursor
   is the highest feed position (``seq``) already given a row, and positions are handed out
   only to committed events (``booking_events_sequence``), so an event whose transaction
   commits late gets a later position rather than a gap: none is skipped. The unique
   (endpoint, event) constraint makes a repeated or concurrent fan-out write nothing twice.
   An endpoint receives the events written since it was registered.
2. **Delivery** (``webhook_endpoint_deliver``, one task per endpoint with a due delivery):
   only the endpoint's oldest pending delivery (by feed position) may be sent, so events
   arrive in feed order, and it is claimed by a compare-and-set on ``next_attempt_at``
   (a short lease), so two workers never send it at once. The POST has a short timeout;
   a 2xx is delivered, anything else (another status, a redirect, a timeout, a refused
   connection) is retried after ``retry_delay`` (1 min, 3 min, 9 min … : 8 attempts over
   about 18 hours), then given up as ``failed`` so later events can go. Events queue behind
   a delivery being retried.
3. **Disabling**: every failed attempt counts against the endpoint; ``DISABLE_AFTER``
   failures in a row (a success resets the count) disable it, and its organisation is
   e-mailed through the outbox. Re-enabling it (admin or API) resumes from where it stopped:
   the events written meanwhile are fanned out then.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Organisation
from bookings import services
from bookings.exceptions import BookingValidationError
from bookings.locks import organisation_qs_for_update
from bookings.models import (
    BookingEvent,
    OutboxMessage,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from bookings.outbox import outbox_handler, outbox_write

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Moonslot-Signature"
EVENT_ID_HEADER = "Moonslot-Event-Id"
USER_AGENT = "Moonslot-Webhooks/1"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(minutes=1)
RETRY_FACTOR = 3
LONGEST_RETRY = timedelta(hours=12)
DISABLE_AFTER = 20
TIMEOUT_S = 10.0
# Longer than any attempt (the timeout above), so a claim outlives the POST it guards; a
# worker that dies mid-POST leaves the delivery to be tried again once the lease runs out.
LEASE = timedelta(minutes=2)
FAN_OUT_BATCH = 500
DELIVERIES_PER_RUN = 100
MAX_ENDPOINTS_PER_ORGANISATION = 5
# A receiver must refuse a signature older than this (replays); ``signature_verify`` does.
SIGNATURE_TOLERANCE = timedelta(minutes=5)


def _allow_local() -> bool:
    """Local development and the tests post to 127.0.0.1 over plain HTTP; production never
    posts to a private, loopback or link-local address (a reseller's URL must not reach
    into our network)."""
    return bool(getattr(settings, "MOONSLOT_WEBHOOKS_ALLOW_LOCAL", False))


# --- signing -----------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature_header(*, secret: str, body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def signature_verify(*, secret: str, body: bytes, header: str, now: datetime | None = None) -> bool:
    """What a receiver checks: a ``v1`` signature of this body under the secret, made within
    ``SIGNATURE_TOLERANCE`` of ``now``. Compares in constant time."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _sep, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    timestamps = parts.get("t", [])
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    timestamp = int(timestamps[0])
    moment = (now or timezone.now()).timestamp()
    if abs(moment - timestamp) > SIGNATURE_TOLERANCE.total_seconds():
        return False
    expected = signature_header(secret=secret, body=body, timestamp=timestamp).split("v1=")[1]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def event_body(event: BookingEvent) -> bytes:
    """The event exactly as the feed shows it, as compact UTF-8 JSON."""
    from bookings.api.serializers import EventSerializer  # the feed's own shape

    data = EventSerializer(event).data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# --- endpoints ---------------------------------------------------------------------------


def _blocked_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global or ip.is_multicast


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None. HTTPS only, a host name or a public
    address (the resolved addresses are checked again at every delivery)."""
    if len(url) > 500:
        return _("A URL has at most 500 characters.")
    allowed_schemes = ["https", "http"] if _allow_local() else ["https"]
    try:
        URLValidator(schemes=["https", "http", "ftp", "ftps"])(url)
        parts = urlsplit(url)
        port = parts.port
    except (ValidationError, ValueError):
        return _("Enter a valid URL.")
    del port  # read only to refuse a malformed port
    if parts.scheme not in allowed_schemes:
        return _("Use an https:// URL.")
    host = parts.hostname
    if not host or parts.username or parts.password:
        return _("Give a host name, without a user name or password.")
    if _allow_local():
        return None
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return _("The URL must be reachable on the public internet.")
    try:
        if _blocked_address(host):
            return _("The URL must be reachable on the public internet.")
    except ValueError:
        pass  # a host name: checked when it is resolved, at each delivery
    return None


def webhook_endpoint_create(
    *, organisation: Organisation, url: str, now: datetime | None = None
) -> WebhookEndpoint:
    """Register a URL for the organisation's events, with a new signing secret (returned on
    the instance; shown to the reseller once). Raises ``BookingValidationError`` on ``url``
    for an unusable URL or past ``MAX_ENDPOINTS_PER_ORGANISATION``."""
    problem = webhook_url_problem(url)
    if problem:
        raise BookingValidationError({"url": [problem]})
    with transaction.atomic():
        # Serialises registrations of one organisation, so the count below holds.
        list(organisation_qs_for_update().filter(pk=organisation.pk).values("pk"))
        if WebhookEndpoint.objects.filter(organisation=organisation).count() >= (
            MAX_ENDPOINTS_PER_ORGANISATION
        ):
            raise BookingValidationError(
                {
                    "url": [
                        _("An organisation may register at most %(n)s webhook URLs.")
                        % {"n": MAX_ENDPOINTS_PER_ORGANISATION}
                    ]
                }
            )
        return WebhookEndpoint.objects.create(
            organisation=organisation,
            url=url,
            secret=new_secret(),
            created_at=now or timezone.now(),
        )


def webhook_endpoint_enable(*, endpoint_id: int, now: datetime | None = None) -> WebhookEndpoint:
    """Re-enable an endpoint: its failure count starts again at zero and its pending
    deliveries are due at once; events written while it was disabled follow at the next
    fan-out. Enabling an active endpoint changes nothing."""
    now = now or timezone.now()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if endpoint.is_active:
            return endpoint
        endpoint.is_active = True
        endpoint.consecutive_failures = 0
        endpoint.disabled_at = None
        endpoint.save(update_fields=["is_active", "consecutive_failures", "disabled_at"])
        WebhookDelivery.objects.filter(
            endpoint=endpoint, status=WebhookDeliveryStatus.PENDING
        ).update(next_attempt_at=now)
    return endpoint


def webhook_endpoint_delete(*, endpoint_id: int) -> None:
    """Remove an endpoint and its delivery history. Deleting a deleted one does nothing."""
    WebhookEndpoint.objects.filter(pk=endpoint_id).delete()


# --- fan-out -----------------------------------------------------------------------------


def webhooks_fan_out(*, now: datetime | None = None, batch: int = FAN_OUT_BATCH) -> int:
    """Create the deliveries of events past each active endpoint's cursor (at most ``batch``
    per endpoint and run). Safe to run twice or concurrently. Returns how many were new."""
    now = now or timezone.now()
    services.booking_events_sequence()
    created = 0
    endpoints = WebhookEndpoint.objects.filter(is_active=True).values_list(
        "pk", "organisation_id", "created_at"
    )
    for endpoint_id, organisation_id, registered_at in endpoints:
        cursor = (
            WebhookDelivery.objects.filter(endpoint_id=endpoint_id).aggregate(
                last=Max("event__seq")
            )["last"]
            or 0
        )
        event_ids = list(
            BookingEvent.objects.filter(
                organisation_id=organisation_id, seq__gt=cursor, created_at__gte=registered_at
            )
            .order_by("seq")
            .values_list("pk", flat=True)[:batch]
        )
        if not event_ids:
            continue
        rows = WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint_id=endpoint_id, event_id=event_id, next_attempt_at=now, created_at=now
                )
                for event_id in event_ids
            ],
            ignore_conflicts=True,
        )
        created += len(rows)
    return created


def webhook_endpoints_due(*, now: datetime | None = None) -> list[int]:
    """Active endpoints with a pending delivery due now (the delivery task's work list)."""
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at__lte=now,
            endpoint__is_active=True,
        )
        .order_by("endpoint_id")
        .values_list("endpoint_id", flat=True)
        .distinct()
    )


# --- delivery ----------------------------------------------------------------------------


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: 1, 3, 9, 27, 81 minutes, … (at most
    ``LONGEST_RETRY``)."""
    return min(FIRST_RETRY * RETRY_FACTOR ** max(attempts - 1, 0), LONGEST_RETRY)


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: it counts as a failure (a signed POST is not
    replayed to wherever a receiver points)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _resolves_to_blocked(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = socket.getaddrinfo(parts.hostname or "", port, proto=socket.IPPROTO_TCP)
    return any(_blocked_address(str(info[4][0])) for info in addresses)


def post_event(url: str, body: bytes, headers: dict[str, str]) -> PostResult:
    """POST one event (outside any transaction). Never raises for what the network or the
    receiver does: the outcome is a status code or an error in words."""
    try:
        if not _allow_local() and _resolves_to_blocked(url):
            return PostResult(None, "refused: the host resolves to a non-public address")
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (https only; checked above)
        with _OPENER.open(request, timeout=TIMEOUT_S) as response:
            response.read(4096)  # a receiver's body is not needed; do not read a large one
            return PostResult(int(response.status), "")
    except urllib.error.HTTPError as exc:
        exc.close()
        return PostResult(int(exc.code), f"HTTP {exc.code}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, timeouts, refused connections and TLS failures are all OSErrors.
        return PostResult(None, f"{type(exc).__name__}: {exc}"[:1000])


def _claim_head(endpoint_id: int, now: datetime) -> WebhookDelivery | None:
    """The endpoint's oldest pending delivery, claimed for one attempt, or None when there
    is none, it is not due yet, or another worker claimed it first."""
    head = (
        WebhookDelivery.objects.filter(
            endpoint_id=endpoint_id, status=WebhookDeliveryStatus.PENDING
        )
        .select_related("event__booking", "endpoint")
        .order_by("event__seq", "pk")
        .first()
    )
    if head is None or (head.next_attempt_at is not None and head.next_attempt_at > now):
        return None
    claimed = WebhookDelivery.objects.filter(
        pk=head.pk, status=WebhookDeliveryStatus.PENDING, next_attempt_at=head.next_attempt_at
    ).update(next_attempt_at=now + LEASE, attempts=F("attempts") + 1)
    if not claimed:
        return None
    head.attempts += 1
    return head


def webhook_endpoint_deliver(
    *, endpoint_id: int, now: datetime | None = None, limit: int = DELIVERIES_PER_RUN
) -> int:
    """Send the endpoint's due deliveries in feed order, one at a time, until one fails, none
    is due or ``limit`` were sent. Safe to run concurrently (a claim per delivery) and again
    (a delivered event is not sent twice). Returns how many were delivered."""
    delivered = 0
    while delivered < limit:
        moment = now or timezone.now()
        endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).first()
        if endpoint is None:
            break
        delivery = _claim_head(endpoint_id, moment)
        if delivery is None:
            break
        body = event_body(delivery.event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: str(delivery.event.seq),
            SIGNATURE_HEADER: signature_header(
                secret=endpoint.secret, body=body, timestamp=int(moment.timestamp())
            ),
        }
        result = post_event(endpoint.url, body, headers)
        _record(delivery, result, now=moment)
        if not result.ok:
            break
        delivered += 1
    return delivered


def _record(delivery: WebhookDelivery, result: PostResult, *, now: datetime) -> None:
    with transaction.atomic():
        if result.ok:
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=WebhookDeliveryStatus.DELIVERED,
                delivered_at=now,
                next_attempt_at=None,
                last_status_code=result.status_code,
                last_error="",
            )
            WebhookEndpoint.objects.filter(
                pk=delivery.endpoint_id, consecutive_failures__gt=0
            ).update(consecutive_failures=0)
            return
        gave_up = delivery.attempts >= MAX_ATTEMPTS
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDeliveryStatus.FAILED if gave_up else WebhookDeliveryStatus.PENDING,
            next_attempt_at=None if gave_up else now + retry_delay(delivery.attempts),
            last_status_code=result.status_code,
            last_error=result.error,
        )
        WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(
            consecutive_failures=F("consecutive_failures") + 1
        )
        disabled = WebhookEndpoint.objects.filter(
            pk=delivery.endpoint_id, is_active=True, consecutive_failures__gte=DISABLE_AFTER
        ).update(is_active=False, disabled_at=now)
        if disabled:
            outbox_write(
                topic="webhooks.endpoint_disabled",
                payload={"endpoint_id": delivery.endpoint_id, "last_error": result.error},
                dedupe_key=f"webhooks.endpoint_disabled:{delivery.endpoint_id}:{now.isoformat()}",
            )
    if not result.ok:
        logger.info(
            "webhook delivery %s to endpoint %s failed (attempt %s): %s",
            delivery.pk,
            delivery.endpoint_id,
            delivery.attempts,
            result.error,
        )


@outbox_handler("webhooks.endpoint_disabled")
def handle_endpoint_disabled(message: OutboxMessage) -> None:
    """Tell the organisation its endpoint was disabled, and how to turn it back on."""
    endpoint = (
        WebhookEndpoint.objects.select_related("organisation")
        .filter(pk=message.payload["endpoint_id"])
        .first()
    )
    if endpoint is None or endpoint.is_active:  # deleted or re-enabled since: say nothing
        return
    recipient = endpoint.organisation.notification_email
    if not recipient:
        return
    body = _(
        "Hello,\n\n"
        "Moonslot stopped sending booking events to your webhook URL\n%(url)s\n"
        "after %(n)s failed attempts in a row. The last error: %(error)s\n\n"
        "No events are lost: fix the receiver, then enable the URL again "
        "(POST /api/v1/webhooks/%(id)s/enable/, or ask our sales team). Everything since "
        "it stopped is delivered then, in order. Meanwhile GET /api/v1/events/ shows every "
        "event.\n\n— Moonslot\n%(site)s"
    ) % {
        "url": endpoint.url,
        "n": endpoint.consecutive_failures,
        "error": message.payload.get("last_error") or "-",
        "id": endpoint.pk,
        "site": settings.SITE_URL,
    }
    EmailMessage(
        subject="[Moonslot] " + _("Your webhook URL was disabled"),
        body=body,
        to=[recipient],
        headers={"X-Moonslot-Webhook-Endpoint": str(endpoint.pk)},
    ).send()


def webhook_endpoint_stats(endpoint_ids: list[int]) -> dict[int, dict[str, int]]:
    """Pending, delivered and failed delivery counts per endpoint, in one query."""
    from django.db.models import Count

    rows = (
        WebhookDelivery.objects.filter(endpoint_id__in=endpoint_ids)
        .values("endpoint_id")
        .annotate(
            pending=Count("pk", filter=Q(status=WebhookDeliveryStatus.PENDING)),
            delivered=Count("pk", filter=Q(status=WebhookDeliveryStatus.DELIVERED)),
            failed=Count("pk", filter=Q(status=WebhookDeliveryStatus.FAILED)),
        )
    )
    return {
        row["endpoint_id"]: {k: row[k] for k in ("pending", "delivered", "failed")} for row in rows
    }


__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "event_body",
    "post_event",
    "retry_delay",
    "signature_header",
    "signature_verify",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_endpoint_deliver",
    "webhook_endpoint_enable",
    "webhook_endpoints_due",
    "webhook_url_problem",
    "webhooks_fan_out",
]
