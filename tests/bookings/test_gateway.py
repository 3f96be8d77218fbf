"""The Stripe gateway against localstripe over HTTP: amounts in Stripe's minor units, our
idempotency keys, and Stripe's errors in the project's terms."""

from __future__ import annotations

import pytest
from django.db import transaction

from bookings import gateways
from bookings.exceptions import TransientError
from marketplace.money import STRIPE_MAX_CHARGE_MINOR
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    DECLINED_AT_CHARGE,
    THREE_D_SECURE,
    _stripe_sandbox_process,
    sandbox,
    stripe_sandbox,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_sandbox")]


def authorise(amount: int, currency: str, key: str, method: str = "pm_card_visa") -> str:
    return gateways.intent_create_and_confirm(
        amount=amount,
        currency=currency,
        payment_method=method,
        metadata={"booking_reference": "ABCDEF", "payment_id": "1"},
        idempotency_key=key,
    ).id


def test_yen_are_sent_as_whole_yen_and_dollars_as_cents() -> None:
    yen = authorise(1_200_000, "JPY", "k-yen")
    dollars = authorise(120_000, "USD", "k-usd")
    stored_yen, stored_dollars = sandbox().intent(yen), sandbox().intent(dollars)
    assert (stored_yen["amount"], stored_yen["currency"]) == (1_200_000, "jpy")
    assert (stored_dollars["amount"], stored_dollars["currency"]) == (120_000, "usd")
    # Authorised only: the money is taken once the booking is confirmed.
    assert stored_yen["status"] == stored_dollars["status"] == "requires_capture"
    assert stored_yen["metadata"] == {"booking_reference": "ABCDEF", "payment_id": "1"}


def test_retrying_with_the_same_key_authorises_once() -> None:
    first = authorise(50_000, "USD", "same-attempt")
    second = authorise(50_000, "USD", "same-attempt")
    assert first == second
    assert [i["id"] for i in sandbox().intents()] == [first]


def test_amounts_a_card_cannot_carry_are_refused_before_calling_stripe() -> None:
    with pytest.raises(gateways.PaymentGatewayError):
        authorise(STRIPE_MAX_CHARGE_MINOR + 1, "JPY", "too-big")
    with pytest.raises(gateways.PaymentGatewayError):
        authorise(0, "USD", "nothing")
    assert sandbox().intents() == []


def test_a_declined_card_is_a_payment_declined_with_the_banks_message() -> None:
    with pytest.raises(gateways.PaymentDeclined) as declined:
        authorise(10_000, "USD", "declined", method="pm_card_chargeCustomerFail")
    assert declined.value.message == "Your card was declined."
    intent = sandbox().intent(str(declined.value.payment_intent_id))
    assert intent["status"] == "requires_payment_method"


def test_a_token_from_stripe_js_becomes_a_payment_method() -> None:
    token = sandbox().card_token(THREE_D_SECURE)
    method = gateways.payment_method_from_token(token, idempotency_key="pm-1")
    intent = gateways.intent_create_and_confirm(
        amount=5_000,
        currency="USD",
        payment_method=method,
        metadata={},
        idempotency_key="k-3ds",
    )
    assert intent.status == "requires_action"
    assert intent.client_secret.startswith(intent.id)


def test_capture_takes_the_whole_authorisation_and_refunds_take_the_exact_amount() -> None:
    intent_id = authorise(120_000, "USD", "k-cap")
    assert gateways.intent_capture(intent_id, idempotency_key="cap").status == "succeeded"
    refund = gateways.refund_create(
        intent_id=intent_id, amount=20_000, currency="USD", idempotency_key="r1", metadata={}
    )
    assert (refund.amount, refund.currency, refund.status) == (20_000, "USD", "succeeded")
    assert sandbox().refunded_total(intent_id) == 20_000


def test_cancel_releases_an_authorisation_and_tolerates_a_second_cancel() -> None:
    intent_id = authorise(120_000, "USD", "k-void")
    assert gateways.intent_cancel(intent_id, idempotency_key="c1").status == "canceled"
    assert gateways.intent_cancel(intent_id, idempotency_key="c2").status == "canceled"


def test_stripe_is_never_called_inside_a_transaction() -> None:
    with transaction.atomic(), pytest.raises(RuntimeError, match="inside a database transaction"):
        authorise(1_000, "USD", "in-txn")
    assert sandbox().intents() == []


def test_an_unreachable_stripe_is_a_transient_error(settings) -> None:
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    with pytest.raises(TransientError):
        gateways.intent_retrieve("pi_whatever")


def test_stripe_js_comes_from_the_sandbox_when_pointed_there(settings) -> None:
    assert gateways.stripe_js_url() == f"{sandbox().base_url}/js.stripe.com/v3/"
    settings.STRIPE_API_BASE = ""
    assert gateways.stripe_js_url() == "https://js.stripe.com/v3/"
