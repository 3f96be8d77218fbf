"""localstripe for tests: one process per test session (the launcher of
``manage.py run_stripe_sandbox``, on a free loopback port), emptied before each test.

Use it with ``pytest.mark.usefixtures("stripe_sandbox")`` and reach it through ``sandbox()``.
The site's code talks to it over HTTP with the real ``stripe`` library, exactly as it talks
to Stripe; nothing in Python is patched. Without localstripe the tests that need it skip on
a laptop and fail with CI=true (``tests.conftest.missing``).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from tests.conftest import missing

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = "bookings.management.commands.run_stripe_sandbox"
SECRET_KEY = "sk_test_sandbox"
PUBLISHABLE_KEY = "pk_test_sandbox"
WEBHOOK_SECRET = "whsec_test_sandbox"

VISA = "4242424242424242"
THREE_D_SECURE = "4000002500003155"
DECLINED_AT_CHARGE = "4000000000000341"


@dataclass
class Sandbox:
    base_url: str

    @property
    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            SECRET_KEY,
            base_addresses={"api": self.base_url},
            max_network_retries=0,
        )

    def reset(self) -> None:
        requests.delete(f"{self.base_url}/_config/data", timeout=5).raise_for_status()

    def card_token(self, number: str = VISA) -> str:
        """What Stripe.js's createToken gives the browser for a card."""
        response = requests.post(
            f"{self.base_url}/v1/tokens",
            data={
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
                "key": PUBLISHABLE_KEY,
            },
            timeout=5,
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def authenticate(self, intent_id: str, client_secret: str, *, success: bool = True) -> str:
        """The 3-D Secure step Stripe.js runs in the browser (confirmCardPayment), as the
        sandbox's Stripe.js does it. Returns the intent's status after it."""
        response = requests.post(
            f"{self.base_url}/v1/payment_intents/{intent_id}/_authenticate",
            params={"success": "true" if success else "false"},
            json={"key": PUBLISHABLE_KEY, "client_secret": client_secret},
            timeout=5,
        )
        response.raise_for_status()
        return str(response.json()["status"])

    def intent(self, intent_id: str) -> dict[str, Any]:
        return self.client.v1.payment_intents.retrieve(intent_id).to_dict()

    def intents(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.client.v1.payment_intents.list().data]

    def refunded_total(self, intent_id: str) -> int:
        """What the fake Stripe has refunded for an intent, summed from its refunds."""
        refunds = self.client.v1.refunds.list(params={"payment_intent": intent_id})
        return sum(int(r.amount) for r in refunds.data)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """Events as the sandbox generated them (what it would post to a webhook)."""
        listed = self.client.v1.events.list(params={"type": type} if type else {})
        return [e.to_dict() for e in listed.data]


_current: Sandbox | None = None


def sandbox() -> Sandbox:
    if _current is None:
        raise RuntimeError("use the stripe_sandbox fixture")
    return _current


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            requests.get(f"{base_url}/js.stripe.com/v3/", timeout=1).raise_for_status()
            return True
        except requests.RequestException:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def _stripe_sandbox_process() -> Iterator[Sandbox | str]:
    """Yields the running sandbox, or why it could not start (each test decides to skip
    or fail on it, so a session without localstripe still runs everything else)."""
    if importlib.util.find_spec("localstripe") is None:
        yield "localstripe is not installed (pip install -e '.[dev]')"
        return
    port = _free_port()
    log = Path(tempfile.mkdtemp(prefix="localstripe-")) / "localstripe.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", LAUNCHER, "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        if _wait_until_up(base_url, process, log):
            yield Sandbox(base_url=base_url)
        else:
            yield f"localstripe did not start: {log.read_text()[-2000:]}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def stripe_sandbox(_stripe_sandbox_process: Sandbox | str, settings: Any) -> Iterator[Sandbox]:
    """The sandbox, empty, with the site's Stripe settings pointing at it."""
    global _current
    if isinstance(_stripe_sandbox_process, str):
        missing(_stripe_sandbox_process)
    assert isinstance(_stripe_sandbox_process, Sandbox)
    box = _stripe_sandbox_process
    box.reset()
    settings.STRIPE_API_BASE = box.base_url
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    _current = box
    try:
        yield box
    finally:
        _current = None


# --- webhooks, signed as Stripe signs them ----------------------------------------------


def signature_header(
    body: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> str:
    """``Stripe-Signature`` as Stripe computes it: HMAC-SHA256 of "<t>.<body>"."""
    return str(stripe.WebhookSignature.generate_signature_header(body, secret, timestamp))


def event_body(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True)


def intent_event(
    intent: dict[str, Any], type: str, *, event_id: str | None = None
) -> dict[str, Any]:
    """An event as Stripe sends it, for an intent as it stands now."""
    return {
        "id": event_id or f"evt_test_{intent['id']}_{type.rsplit('.', 1)[-1]}",
        "object": "event",
        "type": type,
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2025-03-31.basil",
        "data": {"object": intent},
    }


# --- bookings to pay ----------------------------------------------------------------------


def held_web_booking(
    *,
    price: int = 1_200_000,
    currency: str = "JPY",
    user: Any = None,
    hold_minutes: int = 20,
    now: Any = None,
    capacity_units: int = 10,
) -> Any:
    """A web hold of one unit priced ``price`` minor units, made by ``user`` (an owner of
    its organisation)."""
    from accounts.models import MemberRole
    from bookings.services import Actor, booking_hold
    from tests.factories import (
        MembershipFactory,
        OrganisationFactory,
        SlotClassFactory,
        UserFactory,
    )

    user = user or UserFactory.create()
    organisation = OrganisationFactory.create()
    MembershipFactory.create(user=user, organisation=organisation, role=MemberRole.OWNER)
    slot_class = SlotClassFactory.per_unit(
        prices={currency: price}, capacity_units=capacity_units, max_quantity=capacity_units
    )
    return booking_hold(
        slot_class_id=slot_class.pk,
        currency=currency,
        organisation=organisation,
        channel="web",
        actor=Actor.for_user(user),
        quantity=1,
        hold_minutes=hold_minutes,
        now=now,
    )
