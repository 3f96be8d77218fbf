"""Reseller webhooks, delivered to a real HTTP server the test runs on 127.0.0.1: signed
events in feed order, exactly what the feed shows, each once however often the fan-out runs,
retried with backoff and disabled after repeated failure."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from accounts.models import Organisation
from bookings import services, tasks, webhooks_out
from bookings.exceptions import BookingValidationError
from bookings.models import (
    BookingEvent,
    WaitlistEntry,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from bookings.services import Actor
from bookings.waitlist import WAITLIST_OFFERED, waitlist_join
from bookings.webhooks_out import (
    DISABLE_AFTER,
    EVENT_ID_HEADER,
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    retry_delay,
    signature_header,
    signature_verify,
    webhook_endpoint_create,
    webhook_endpoint_deliver,
    webhook_endpoint_enable,
    webhook_url_problem,
    webhooks_fan_out,
)
from tests.bookings.api_helpers import EVENTS, keyed_client
from tests.factories import OrganisationFactory, ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")


# --- a receiver on 127.0.0.1 ---------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """What the test's HTTP server answers (``statuses`` in turn, then ``default``) and what it
    was sent."""

    url: str
    default: int = 200
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else self.default


@pytest.fixture
def receiver(settings: Settings) -> Iterator[Receiver]:
    settings.MOONSLOT_WEBHOOKS_ALLOW_LOCAL = True
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            target = state["receiver"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with target.lock:
                target.received.append(Received(dict(self.headers.items()), body))
            if target.delay_s:
                time.sleep(target.delay_s)
            status = target.next_status()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- helpers ------------------------------------------------------------------------------


def hold(organisation: Organisation, mass_g: int = 1000, **kwargs: Any) -> Any:
    return services.booking_hold(
        slot_class_id=kwargs.pop("slot_class", None) or SlotClassFactory.create().pk,
        currency="JPY",
        organisation=organisation,
        channel="api",
        actor=SYSTEM,
        mass_g=mass_g,
        **kwargs,
    )


def run(endpoint: WebhookEndpoint, *, now: datetime | None = None) -> int:
    webhooks_fan_out(now=now)
    return webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=now)


def feed_events(organisation: Organisation) -> list[dict[str, Any]]:
    response = keyed_client(organisation).get(EVENTS)
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()["results"]
    return events


# --- delivery -----------------------------------------------------------------------------


def test_events_arrive_signed_in_feed_order_exactly_as_the_feed_shows_them(receiver):
    reseller = ResellerFactory.create()
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    first = hold(reseller)
    second = hold(reseller)
    services.booking_cancel(booking_id=first.pk, actor=SYSTEM)
    services.booking_confirm(booking_id=second.pk, actor=SYSTEM, on_account=True)
    hold(OrganisationFactory.create())  # another organisation's: never sent here

    assert run(endpoint) == 4

    feed = feed_events(reseller)
    assert [r.event for r in receiver.received] == feed
    assert [e["type"] for e in feed] == [
        "booking.held",
        "booking.held",
        "booking.cancelled",
        "booking.confirmed",
    ]
    for got in receiver.received:
        assert got.headers[EVENT_ID_HEADER] == got.event["id"]
        assert got.headers["Content-Type"] == "application/json"
        assert signature_verify(
            secret=endpoint.secret, body=got.body, header=got.headers[SIGNATURE_HEADER]
        )
        assert not signature_verify(
            secret="whsec_other", body=got.body, header=got.headers[SIGNATURE_HEADER]
        )
    ids = [int(r.event["id"]) for r in receiver.received]
    assert ids == sorted(ids)


def test_each_event_is_delivered_once_however_often_the_fan_out_runs(receiver):
    reseller = ResellerFactory.create()
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    hold(reseller)
    hold(reseller)

    assert webhooks_fan_out() == 2
    assert webhooks_fan_out() == 0
    assert webhook_endpoint_deliver(endpoint_id=endpoint.pk) == 2
    assert webhooks_fan_out() == 0
    assert webhook_endpoint_deliver(endpoint_id=endpoint.pk) == 0
    hold(reseller)
    assert run(endpoint) == 1

    sent = [r.event["id"] for r in receiver.received]
    assert len(sent) == len(set(sent)) == 3
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 3


def test_the_beat_task_fans_out_and_delivers_through_the_tasks(receiver):
    reseller = ResellerFactory.create()
    webhook_endpoint_create(organisation=reseller, url=receiver.url)
    hold(reseller)

    assert tasks.webhooks_fan_out_task.delay().get() == 1  # eager in tests

    assert [r.event["type"] for r in receiver.received] == ["booking.held"]


def test_a_new_endpoint_gets_the_events_written_after_it_was_registered(receiver):
    reseller = ResellerFactory.create()
    hold(reseller, now=timezone.now() - timedelta(minutes=5))
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    later = hold(reseller)

    assert run(endpoint) == 1

    assert [r.event["booking"] for r in receiver.received] == [later.reference]


def test_waitlist_offers_reach_the_reseller_with_their_deadline(receiver):
    reseller = ResellerFactory.create()
    slot_class = SlotClassFactory.create(capacity_g=5_000, max_mass_g=5_000)
    blocking = hold(OrganisationFactory.create(), 5_000, slot_class=slot_class.pk)
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    waitlist_join(
        slot_class_id=slot_class.pk,
        organisation=reseller,
        channel="api",
        actor=SYSTEM,
        currency="JPY",
        mass_g=2_000,
    )
    services.booking_cancel(booking_id=blocking.pk, actor=SYSTEM)

    assert run(endpoint) == 2

    held, offered = (r.event for r in receiver.received)
    entry = WaitlistEntry.objects.get(organisation=reseller)
    assert entry.offer_booking is not None
    assert entry.offer_booking.hold_expires_at is not None
    assert held["type"] == "booking.held"
    assert offered["type"] == WAITLIST_OFFERED
    assert offered["booking"] == entry.offer_booking.reference
    assert offered["data"]["waitlist_entry"] == entry.pk
    assert offered["data"]["hold_expires_at"] == entry.offer_booking.hold_expires_at.isoformat()


# --- failure, backoff, disabling -------------------------------------------------------------


def test_a_failing_endpoint_is_retried_with_growing_delays_and_events_wait_in_order(receiver):
    reseller = ResellerFactory.create()
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    first = hold(reseller)
    hold(reseller)
    receiver.default = 500
    now = timezone.now()
    webhooks_fan_out(now=now)
    (head, _second) = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("event__seq")

    moment = now
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=moment) == 0
        head.refresh_from_db()
        assert head.attempts == attempt
        assert head.last_status_code == 500
        if attempt < MAX_ATTEMPTS:
            assert head.status == WebhookDeliveryStatus.PENDING
            assert head.next_attempt_at == moment + retry_delay(attempt)
            # Not due before then: nothing is sent, the second event waits behind it.
            before = len(receiver.received)
            webhook_endpoint_deliver(
                endpoint_id=endpoint.pk, now=moment + retry_delay(attempt) - timedelta(seconds=1)
            )
            assert len(receiver.received) == before
            moment += retry_delay(attempt)
    assert head.status == WebhookDeliveryStatus.FAILED
    assert head.next_attempt_at is None
    # Bounded: 8 attempts within about a day.
    assert timedelta(hours=12) < moment - now < timedelta(hours=24)
    assert {r.event["booking"] for r in receiver.received} == {first.reference}
    assert len(receiver.received) == MAX_ATTEMPTS

    # Given up on, the first no longer blocks the second, which the receiver now takes.
    receiver.default = 204
    assert webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=moment) == 1
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0
    assert endpoint.is_active


def test_retry_delays_grow_exponentially_to_a_bound():
    delays = [retry_delay(n) for n in range(1, MAX_ATTEMPTS)]

    assert delays[0] == timedelta(minutes=1)
    assert all(later == earlier * 3 for earlier, later in itertools.pairwise(delays[:6]))
    assert max(delays) <= timedelta(hours=12)


def test_an_endpoint_failing_again_and_again_is_disabled_and_its_organisation_told(
    receiver, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
):
    reseller = ResellerFactory.create(notification_email="desk@reseller.example")
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    for _ in range(3):
        hold(reseller)
    receiver.default = 503
    moment = timezone.now()
    webhooks_fan_out(now=moment)

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(DISABLE_AFTER + 5):
            webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=moment)
            moment += timedelta(days=1)  # every retry is due

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert endpoint.disabled_at is not None
    assert endpoint.consecutive_failures == DISABLE_AFTER
    assert len(receiver.received) == DISABLE_AFTER  # nothing sent once disabled
    (message,) = mail.outbox
    assert message.to == ["desk@reseller.example"]
    assert receiver.url in message.body
    assert "503" in message.body

    # Re-enabled, it resumes from where it stopped, events written meanwhile included.
    receiver.default = 200
    hold(reseller)
    webhook_endpoint_enable(endpoint_id=endpoint.pk, now=moment)
    assert run(endpoint, now=moment) >= 2
    endpoint.refresh_from_db()
    assert endpoint.is_active
    assert endpoint.consecutive_failures == 0
    pending = WebhookDelivery.objects.filter(
        endpoint=endpoint, status=WebhookDeliveryStatus.PENDING
    )
    assert not pending.exists()
    delivered = WebhookDelivery.objects.filter(
        endpoint=endpoint, status=WebhookDeliveryStatus.DELIVERED
    ).count()
    assert (
        delivered
        + WebhookDelivery.objects.filter(
            endpoint=endpoint, status=WebhookDeliveryStatus.FAILED
        ).count()
        == BookingEvent.objects.filter(organisation=reseller).count()
    )


def test_a_success_resets_the_failure_count(receiver):
    reseller = ResellerFactory.create()
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    hold(reseller)
    receiver.statuses = [500, 500]
    moment = timezone.now()
    webhooks_fan_out(now=moment)
    for _ in range(2):
        webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=moment)
        moment += timedelta(hours=1)
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 2

    assert webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=moment) == 1

    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0


@pytest.mark.parametrize("status", [302, 404, 500])
def test_anything_but_a_2xx_is_a_failed_attempt(receiver, status):
    reseller = ResellerFactory.create()
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    hold(reseller)
    receiver.default = status

    assert run(endpoint) == 0

    (delivery,) = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert (delivery.status, delivery.last_status_code) == (WebhookDeliveryStatus.PENDING, status)
    assert len(receiver.received) == 1  # a redirect is not followed


def test_a_timeout_or_a_refused_connection_is_a_failed_attempt(receiver, monkeypatch):
    reseller = ResellerFactory.create()
    slow = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    closed = webhook_endpoint_create(organisation=reseller, url="http://127.0.0.1:9/hooks")
    hold(reseller)
    monkeypatch.setattr(webhooks_out, "TIMEOUT_S", 0.2)
    receiver.delay_s = 1.0

    assert run(slow) == 0
    assert webhook_endpoint_deliver(endpoint_id=closed.pk) == 0

    for endpoint in (slow, closed):
        (delivery,) = WebhookDelivery.objects.filter(endpoint=endpoint)
        assert delivery.status == WebhookDeliveryStatus.PENDING
        assert delivery.last_status_code is None
        assert delivery.last_error
        endpoint.refresh_from_db()
        assert endpoint.consecutive_failures == 1


def test_a_claimed_delivery_is_not_sent_by_a_second_worker(receiver):
    reseller = ResellerFactory.create()
    endpoint = webhook_endpoint_create(organisation=reseller, url=receiver.url)
    hold(reseller)
    now = timezone.now()
    webhooks_fan_out(now=now)
    claimed = webhooks_out._claim_head(endpoint.pk, now)  # a first worker, mid-POST
    assert claimed is not None

    assert webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=now) == 0
    assert receiver.received == []
    # Its lease runs out (the first worker died): the delivery is tried again.
    assert webhook_endpoint_deliver(endpoint_id=endpoint.pk, now=now + timedelta(minutes=3)) == 1


# --- signing and registration -----------------------------------------------------------------


def test_a_signature_is_refused_for_another_body_or_when_stale():
    body = b'{"id":"1"}'
    now = timezone.now()
    header = signature_header(secret="whsec_x", body=body, timestamp=int(now.timestamp()))

    assert signature_verify(secret="whsec_x", body=body, header=header, now=now)
    assert not signature_verify(secret="whsec_x", body=body + b" ", header=header, now=now)
    assert not signature_verify(
        secret="whsec_x", body=body, header=header, now=now + timedelta(minutes=6)
    )
    assert not signature_verify(secret="whsec_x", body=body, header="v1=abc", now=now)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/in",
        "https://127.0.0.1/in",
        "https://10.0.0.8/in",
        "https://[::1]/in",
        "https://169.254.169.254/latest",
        "https://localhost/in",
        "https://user:pw@hooks.example.com/in",
        "ftp://hooks.example.com/in",
        "https://hooks.example.com:99999/in",
        "not a url",
    ],
)
def test_only_public_https_urls_can_be_registered(url):
    assert webhook_url_problem(url) is not None
    with pytest.raises(BookingValidationError):
        webhook_endpoint_create(organisation=ResellerFactory.create(), url=url)


def test_a_public_https_url_is_registered_with_its_own_secret():
    reseller = ResellerFactory.create()

    one = webhook_endpoint_create(organisation=reseller, url="https://hooks.example.com/in")
    two = webhook_endpoint_create(organisation=reseller, url="https://hooks.example.com/in2")

    assert one.secret.startswith("whsec_")
    assert len(one.secret) > 40
    assert one.secret != two.secret


@pytest.mark.parametrize("url", ["https://localhost:8443/in", "https://127.0.0.1:8443/in"])
def test_a_host_resolving_to_a_private_address_is_not_posted_to(settings, url):
    settings.MOONSLOT_WEBHOOKS_ALLOW_LOCAL = False

    result = webhooks_out.post_event(url, b"{}", {})

    assert result.status_code is None
    assert "non-public" in result.error
