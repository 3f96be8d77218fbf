"""The one module that talks to Stripe.

Everything else speaks in the project's terms: integer minor units plus an upper-case
currency, and the snapshots below instead of Stripe objects. Stripe's errors come out as
``PaymentDeclined`` (the customer's card said no: show the message), ``TransientError``
(network, rate limit, Stripe's 5xx: retry later) or ``PaymentGatewayError`` (a request Stripe
refused: a bug or a state we did not expect; not worth retrying).

No call is made inside a database transaction: a slow Stripe must never hold row locks, and
a rolled-back transaction cannot take back a charge. ``_outside_transaction`` enforces it.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from bookings.exceptions import BookingError, TransientError
from marketplace.money import STRIPE_MAX_CHARGE_MINOR, minor_unit_exponent

logger = logging.getLogger(__name__)

STRIPE_JS_URL = "https://js.stripe.com/v3/"
WEBHOOK_TOLERANCE_SECONDS = 300
# Stripe's minor unit for each currency we sell in must be ours, or amounts would be off by
# a factor of a hundred. marketplace.money knows the zero-decimal ones; Stripe agrees for these.
STRIPE_EXPONENTS = {"JPY": 0, "USD": 2}


class PaymentDeclined(BookingError):
    """The card was declined or failed authentication; ``message`` is for the customer."""

    code = "payment_declined"

    def __init__(
        self, message: str, *, decline_code: str = "", payment_intent_id: str | None = None
    ) -> None:
        self.decline_code = decline_code
        self.payment_intent_id = payment_intent_id
        super().__init__(message)


class PaymentGatewayError(Exception):
    """Stripe refused a request for a reason that retrying will not change."""

    def __init__(self, message: str, *, code: str = "") -> None:
        self.code = code
        super().__init__(message)


class InvalidWebhook(Exception):
    """A webhook body or signature that does not verify."""


@dataclass(frozen=True)
class IntentSnapshot:
    """What we need of a PaymentIntent, whichever way it reached us."""

    id: str
    status: str
    amount: int
    currency: str  # upper case, as the rest of the project writes it
    client_secret: str = ""
    payment_method: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""

    @classmethod
    def from_stripe(cls, data: Any) -> IntentSnapshot:
        if hasattr(data, "to_dict"):
            data = data.to_dict()
        error = data.get("last_payment_error") or {}
        method = data.get("payment_method") or ""
        if isinstance(method, dict):
            method = method.get("id", "")
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            amount=int(data["amount"]),
            currency=str(data["currency"]).upper(),
            client_secret=str(data.get("client_secret") or ""),
            payment_method=str(method),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            error_code=str(error.get("code") or ""),
            error_message=str(error.get("message") or ""),
        )


@dataclass(frozen=True)
class RefundSnapshot:
    id: str
    status: str
    amount: int
    currency: str


# --- configuration ------------------------------------------------------------------------


def is_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_PUBLISHABLE_KEY)


def stripe_js_url() -> str:
    """Stripe.js: Stripe's own in production, the sandbox's fake one when pointed there."""
    base = settings.STRIPE_API_BASE
    return f"{base.rstrip('/')}/js.stripe.com/v3/" if base else STRIPE_JS_URL


@functools.lru_cache(maxsize=4)
def _client_for(api_key: str, api_base: str) -> stripe.StripeClient:
    addresses: dict[str, str] = {"api": api_base} if api_base else {}
    # The library retries network failures itself, reusing our idempotency key, so a retry
    # can never charge twice.
    return stripe.StripeClient(
        api_key,
        base_addresses=addresses,  # type: ignore[arg-type]
        max_network_retries=2,
    )


def _client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise ImproperlyConfigured("STRIPE_SECRET_KEY is not set; card payments are off.")
    return _client_for(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def _outside_transaction() -> None:
    # Test cases wrap each test in atomic blocks of their own; those do not count.
    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        raise RuntimeError("Stripe must not be called inside a database transaction")


def stripe_amount(amount: int, currency: str) -> int:
    """Our minor units are Stripe's (¥1,200,000 → 1200000; $1,200.00 → 120000); refuse what a
    card cannot carry rather than let Stripe round or reject it later."""
    code = currency.upper()
    if STRIPE_EXPONENTS.get(code) != minor_unit_exponent(code):
        raise PaymentGatewayError(f"{code} is not set up for card payments")
    if not 0 < amount <= STRIPE_MAX_CHARGE_MINOR:
        raise PaymentGatewayError(f"{amount} {code} is outside what one card charge can carry")
    return amount


def _translate(exc: stripe.StripeError) -> Exception:
    if isinstance(exc, stripe.CardError):
        error = exc.error
        intent = getattr(error, "payment_intent", None) if error is not None else None
        intent_id = getattr(intent, "id", None) if intent is not None else None
        return PaymentDeclined(
            exc.user_message or "Your card was declined.",
            decline_code=str(getattr(error, "decline_code", "") or exc.code or ""),
            payment_intent_id=str(intent_id) if intent_id else None,
        )
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return TransientError(f"Stripe unreachable: {exc}")
    status = exc.http_status or 0
    if isinstance(exc, stripe.APIError) or status >= 500 or status == 409:
        # 409: a concurrent request with the same idempotency key is still running.
        return TransientError(f"Stripe error {status}: {exc}")
    return PaymentGatewayError(str(exc.user_message or exc), code=str(exc.code or ""))


def _call(what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    _outside_transaction()
    try:
        return func(*args, **kwargs)
    except stripe.StripeError as exc:
        translated = _translate(exc)
        logger.info("stripe %s failed: %s", what, translated)
        raise translated from exc


# --- PaymentIntents -------------------------------------------------------------------------


def payment_method_from_token(token: str, *, idempotency_key: str) -> str:
    """A card PaymentMethod from a Stripe.js card token (Stripe's documented bridge from
    ``stripe.createToken`` to PaymentIntents)."""
    method = _call(
        "payment method",
        _client().v1.payment_methods.create,
        params={"type": "card", "card": {"token": token}},
        options={"idempotency_key": idempotency_key},
    )
    return str(method.id)


def intent_create_and_confirm(
    *,
    amount: int,
    currency: str,
    payment_method: str,
    metadata: dict[str, str],
    idempotency_key: str,
) -> IntentSnapshot:
    """Create a card PaymentIntent and confirm it at once, authorising only
    (``capture_method=manual``): the booking is confirmed under its lock first, then the
    money is captured, or the authorisation is released if the hold has gone.

    Returns the intent (``requires_capture``, ``requires_action`` for 3-D Secure, …).
    Raises ``PaymentDeclined``, ``TransientError``, ``PaymentGatewayError``."""
    intent = _call(
        "create intent",
        _client().v1.payment_intents.create,
        params={
            "amount": stripe_amount(amount, currency),
            "currency": currency.lower(),
            "payment_method": payment_method,
            # Card only: no redirect-based methods, so no return_url is needed and 3-D Secure
            # runs in Stripe.js on our page.
            "payment_method_types": ["card"],
            "capture_method": "manual",
            "confirm": True,
            "metadata": metadata,
        },
        options={"idempotency_key": idempotency_key},
    )
    return IntentSnapshot.from_stripe(intent)


def intent_retrieve(intent_id: str) -> IntentSnapshot:
    return IntentSnapshot.from_stripe(
        _call("retrieve intent", _client().v1.payment_intents.retrieve, intent_id)
    )


def intent_capture(intent_id: str, *, idempotency_key: str) -> IntentSnapshot:
    """Capture the whole authorised amount."""
    intent = _call(
        "capture intent",
        _client().v1.payment_intents.capture,
        intent_id,
        options={"idempotency_key": idempotency_key},
    )
    return IntentSnapshot.from_stripe(intent)


def intent_cancel(intent_id: str, *, idempotency_key: str) -> IntentSnapshot:
    """Release an authorisation (or abandon an unfinished attempt). An intent that is
    already cancelled is returned as it is."""
    try:
        intent = _call(
            "cancel intent",
            _client().v1.payment_intents.cancel,
            intent_id,
            options={"idempotency_key": idempotency_key},
        )
    except PaymentGatewayError:
        current = intent_retrieve(intent_id)
        if current.status in ("canceled", "succeeded"):
            return current  # nothing left to cancel; the caller decides what follows
        raise
    return IntentSnapshot.from_stripe(intent)


def refund_create(
    *, intent_id: str, amount: int, currency: str, idempotency_key: str, metadata: dict[str, str]
) -> RefundSnapshot:
    """Refund ``amount`` of a captured intent. The amount is always explicit: the caller
    has worked out what is left, and "refund the rest" is never left to the provider."""
    refund = _call(
        "refund",
        _client().v1.refunds.create,
        params={
            "payment_intent": intent_id,
            "amount": stripe_amount(amount, currency),
            "metadata": metadata,
        },
        options={"idempotency_key": idempotency_key},
    )
    return RefundSnapshot(
        id=str(refund.id),
        status=str(refund.status),
        amount=int(refund.amount),
        currency=str(refund.currency).upper(),
    )


# --- webhooks ---------------------------------------------------------------------------------


def webhook_event(payload: bytes, signature: str | None) -> dict[str, Any]:
    """Verify a webhook the way Stripe signs it and return the event as a dict with at least
    a string ``id`` and ``type``. Raises ``InvalidWebhook`` for anything else: a missing,
    forged or stale signature, a tampered or malformed body."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.error("STRIPE_WEBHOOK_SECRET is not set; refusing webhooks")
        raise InvalidWebhook("no webhook secret configured")
    if not signature:
        raise InvalidWebhook("no Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
        stripe.Webhook.construct_event(text, signature, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS)
        # The verified bytes, as plain data (the library's objects are not needed here).
        data = json.loads(text)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(str(exc)) from exc
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # Malformed JSON, or JSON that is not an event object (a list, a string…).
        raise InvalidWebhook(f"malformed body: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise InvalidWebhook("not an event")
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not event_id:
        raise InvalidWebhook("not an event")
    if len(event_id) > 255 or len(event_type) > 100:
        raise InvalidWebhook("not an event")
    return data


__all__ = [
    "IntentSnapshot",
    "InvalidWebhook",
    "PaymentDeclined",
    "PaymentGatewayError",
    "RefundSnapshot",
    "intent_cancel",
    "intent_capture",
    "intent_create_and_confirm",
    "intent_retrieve",
    "is_configured",
    "payment_method_from_token",
    "refund_create",
    "stripe_amount",
    "stripe_js_url",
    "webhook_event",
]
