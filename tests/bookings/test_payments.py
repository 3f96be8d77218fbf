"""Paying a web booking by card, through the pay page, against localstripe: amounts, 3-D
Secure, declines, lapsed holds, refunds and cancellations, tenancy and CSRF."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MemberRole, User
from bookings import payments, services
from bookings.gateways import PaymentDeclined
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundReason,
    RefundStatus,
)
from bookings.services import Actor
from marketplace.models import SlotClass
from marketplace.money import STRIPE_MAX_CHARGE_MINOR
from tests.factories import MembershipFactory, UserFactory
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    DECLINED_AT_CHARGE,
    THREE_D_SECURE,
    VISA,
    _stripe_sandbox_process,
    held_web_booking,
    sandbox,
    stripe_sandbox,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_sandbox")]


def pay_url(booking: Booking) -> str:
    return reverse("payments:pay", args=[booking.reference])


def card_url(booking: Booking) -> str:
    return reverse("payments:card", args=[booking.reference])


def complete_url(booking: Booking, payment: Payment) -> str:
    return reverse("payments:complete", args=[booking.reference, payment.pk])


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def flash(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def subjects() -> list[str]:
    """The booking and payment e-mails; the receipts and credit notes that also go out are
    asserted in test_billing.py."""
    return [str(m.subject) for m in mail.outbox if "X-Moonslot-Document" not in m.extra_headers]


def pay_by_card(client: Client, booking: Booking, number: str = VISA, capture: Any = None) -> Any:
    token = sandbox().card_token(number)
    with capture(execute=True):
        return client.post(card_url(booking), {"token": token})


# --- amounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "currency", "stripe_amount", "stripe_currency"),
    [(1_200_000, "JPY", 1_200_000, "jpy"), (1_200_00, "USD", 120_000, "usd")],
    ids=["yen-1.2M", "dollars-1200.00"],
)
def test_card_payment_charges_the_exact_minor_units_and_confirms_the_booking(
    django_capture_on_commit_callbacks, price, currency, stripe_amount, stripe_currency
) -> None:
    booking = held_web_booking(price=price, currency=currency)
    user = booking.created_by
    mail.outbox.clear()

    response = pay_by_card(logged_in(user), booking, capture=django_capture_on_commit_callbacks)

    assert response.status_code == 302
    assert response["Location"] == f"/bookings/{booking.reference}/"
    payment = Payment.objects.get(booking=booking)
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    assert (intent["amount"], intent["currency"]) == (stripe_amount, stripe_currency)
    assert intent["status"] == "succeeded"  # authorised, then captured after the confirmation
    assert intent["capture_method"] == "manual"
    assert intent["metadata"]["booking_reference"] == booking.reference
    assert intent["metadata"]["payment_id"] == str(payment.pk)
    assert (payment.status, payment.amount, payment.currency) == ("succeeded", price, currency)
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert subjects() == [f"[Moonslot] Booking {booking.reference} is confirmed"]
    assert any("confirmed" in m for m in flash(response))


def test_pay_page_shows_the_amount_the_countdown_and_the_card_form(
    django_assert_max_num_queries,
) -> None:
    booking = held_web_booking(price=1_200_000, currency="JPY")
    client = logged_in(booking.created_by)
    with django_assert_max_num_queries(8):
        response = client.get(pay_url(booking))
    page = response.content.decode()
    assert response.status_code == 200
    assert "¥1,200,000" in page
    assert 'id="card-form"' in page
    assert f'src="{sandbox().base_url}/js.stripe.com/v3/"' in page
    seconds = int(re.search(r'data-remaining="(\d+)"', page).group(1))  # type: ignore[union-attr]
    assert 19 * 60 < seconds <= 20 * 60
    assert response["Cache-Control"].startswith("max-age=0")


# --- declines and 3-D Secure ------------------------------------------------------------


def test_a_declined_card_is_told_clearly_and_the_hold_is_kept_for_another_try(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    expiry = booking.hold_expires_at
    client = logged_in(booking.created_by)

    response = pay_by_card(client, booking, DECLINED_AT_CHARGE, django_capture_on_commit_callbacks)

    assert response.status_code == 302
    assert response["Location"] == pay_url(booking)
    (message,) = flash(response)
    assert message.startswith("Your card was declined.")
    assert "still held until" in message
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD
    assert booking.hold_expires_at is not None
    assert expiry is not None
    assert booking.hold_expires_at >= expiry
    failed = Payment.objects.get(booking=booking)
    assert (failed.status, failed.failure_code) == ("failed", "generic_decline")
    assert sandbox().intent(str(failed.stripe_payment_intent_id))["status"] == (
        "requires_payment_method"
    )

    # The page offers the form again, and another card goes through.
    assert 'id="card-form"' in client.get(pay_url(booking)).content.decode()
    pay_by_card(client, booking, VISA, django_capture_on_commit_callbacks)
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert list(booking.payments.values_list("attempt", "status")) == [
        (1, "failed"),
        (2, "succeeded"),
    ]


def test_three_d_secure_hands_the_client_secret_to_the_browser_and_completes(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(price=1_200_00, currency="USD")
    client = logged_in(booking.created_by)

    response = pay_by_card(client, booking, THREE_D_SECURE, django_capture_on_commit_callbacks)

    assert response["Location"] == pay_url(booking)
    payment = Payment.objects.get(booking=booking)
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    assert intent["status"] == "requires_action"
    page = client.get(pay_url(booking)).content.decode()
    assert f'data-client-secret="{intent["client_secret"]}"' in page
    assert 'id="card-form"' not in page  # 3-D Secure first
    assert complete_url(booking, payment) in page
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD

    # What Stripe.js does in the browser, then the page posts back.
    assert sandbox().authenticate(intent["id"], intent["client_secret"]) == "requires_capture"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(complete_url(booking, payment))

    assert response["Location"] == f"/bookings/{booking.reference}/"
    booking.refresh_from_db()
    payment.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert payment.status == PaymentStatus.SUCCEEDED
    assert sandbox().intent(intent["id"])["status"] == "succeeded"


def test_failed_three_d_secure_keeps_the_hold_and_explains(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking()
    client = logged_in(booking.created_by)
    pay_by_card(client, booking, THREE_D_SECURE, django_capture_on_commit_callbacks)
    payment = Payment.objects.get(booking=booking)
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    sandbox().authenticate(intent["id"], intent["client_secret"], success=False)

    response = client.post(complete_url(booking, payment))

    assert response["Location"] == pay_url(booking)
    assert "authentication (3-D Secure) did not succeed" in flash(response)[0]
    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert booking.status == BookingStatus.HELD


def test_starting_a_payment_extends_the_hold_by_a_bounded_grace(settings) -> None:
    settings.STRIPE_PAYMENT_GRACE = timedelta(minutes=10)
    settings.STRIPE_PAYMENT_GRACE_MAX = timedelta(minutes=15)
    start = timezone.now()
    booking = held_web_booking(hold_minutes=2, now=start)
    original = start + timedelta(minutes=2)
    actor = Actor.for_user(booking.created_by)

    with pytest.raises(PaymentDeclined):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=actor,
            payment_method="pm_card_chargeCustomerFail",
            now=start + timedelta(minutes=1),
        )
    booking.refresh_from_db()
    assert booking.hold_expires_at == start + timedelta(minutes=11)
    with pytest.raises(PaymentDeclined):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=actor,
            payment_method="pm_card_chargeCustomerFail",
            now=start + timedelta(minutes=10),
        )
    booking.refresh_from_db()
    # Never more than the cap past the hold's own expiry, however many attempts.
    assert booking.hold_expires_at == original + timedelta(minutes=15)
    events = BookingEvent.objects.filter(booking=booking, type=services.HOLD_EXTENDED)
    assert [e.data["to"] for e in events] == [
        (start + timedelta(minutes=11)).isoformat(),
        (original + timedelta(minutes=15)).isoformat(),
    ]
    assert events[0].actor == actor.label


def test_a_second_submit_while_the_first_is_in_flight_is_refused() -> None:
    booking = held_web_booking()
    Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        idempotency_key="in-flight",
    )
    with pytest.raises(payments.PaymentNotAllowed, match="already being processed"):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=Actor.for_user(booking.created_by),
            payment_method="pm_card_visa",
        )
    assert sandbox().intents() == []


# --- the hold lapsed while paying -------------------------------------------------------


def test_payment_after_the_hold_lapsed_and_the_capacity_went_is_released_not_confirmed(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(capacity_units=1)
    client = logged_in(booking.created_by)
    pay_by_card(client, booking, THREE_D_SECURE, django_capture_on_commit_callbacks)
    payment = Payment.objects.get(booking=booking)
    intent = sandbox().intent(str(payment.stripe_payment_intent_id))
    # The customer takes too long in 3-D Secure: the hold (and its grace) lapses, and
    # someone else takes the only unit.
    Booking.objects.filter(pk=booking.pk).update(
        hold_expires_at=timezone.now() - timedelta(seconds=1)
    )
    rival = held_web_booking_in(booking.slot_class)
    mail.outbox.clear()

    sandbox().authenticate(intent["id"], intent["client_secret"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(complete_url(booking, payment))

    assert response["Location"] == f"/bookings/{booking.reference}/"
    assert "not been charged" in flash(response)[0]
    booking.refresh_from_db()
    payment.refresh_from_db()
    assert booking.status == BookingStatus.EXPIRED
    assert payment.status == PaymentStatus.CANCELED
    assert sandbox().intent(intent["id"])["status"] == "canceled"
    slot_class = SlotClass.objects.get(pk=booking.slot_class_id)
    assert (slot_class.taken_units, slot_class.capacity_units) == (1, 1)
    assert Booking.objects.get(pk=rival.pk).status == BookingStatus.HELD
    assert subjects() == [f"[Moonslot] Booking {booking.reference} was not confirmed"]
    assert "you have not been charged" in mail.outbox[0].body


def held_web_booking_in(slot_class: SlotClass) -> Booking:
    user = UserFactory.create()
    organisation = MembershipFactory.create(user=user, role=MemberRole.OWNER).organisation
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=organisation,
        channel="web",
        actor=Actor.for_user(user),
        quantity=1,
    )


def test_an_expired_hold_cannot_start_a_payment(django_capture_on_commit_callbacks) -> None:
    booking = held_web_booking(now=timezone.now() - timedelta(minutes=30))
    response = pay_by_card(
        logged_in(booking.created_by), booking, VISA, django_capture_on_commit_callbacks
    )
    assert response["Location"] == f"/bookings/{booking.reference}/"
    assert "lapsed" in flash(response)[0]
    assert not Payment.objects.exists()
    assert sandbox().intents() == []


# --- what a card cannot carry -----------------------------------------------------------


def test_amounts_above_the_card_limit_are_offered_by_bank_transfer_only(
    django_capture_on_commit_callbacks,
) -> None:
    booking = held_web_booking(price=STRIPE_MAX_CHARGE_MINOR + 1, currency="JPY")
    client = logged_in(booking.created_by)

    page = client.get(pay_url(booking)).content.decode()
    assert 'id="card-form"' not in page
    assert "js.stripe.com" not in page
    assert "bank transfer" in page

    response = pay_by_card(client, booking, VISA, django_capture_on_commit_callbacks)
    assert response["Location"] == pay_url(booking)
    assert "bank transfer" in flash(response)[0]
    assert not Payment.objects.exists()
    assert sandbox().intents() == []
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD


def test_the_card_limit_itself_is_still_paid_by_card(django_capture_on_commit_callbacks) -> None:
    booking = held_web_booking(price=STRIPE_MAX_CHARGE_MINOR, currency="JPY")
    pay_by_card(logged_in(booking.created_by), booking, VISA, django_capture_on_commit_callbacks)
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert sandbox().intents()[0]["amount"] == 99_999_999


# --- tenancy and CSRF -------------------------------------------------------------------


def test_another_customers_booking_is_not_found_on_every_payment_url() -> None:
    booking = held_web_booking()
    payment = Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        idempotency_key="theirs",
    )
    stranger = logged_in(UserFactory.create())
    assert stranger.get(pay_url(booking)).status_code == 404
    assert stranger.post(card_url(booking), {"payment_method": "pm_card_visa"}).status_code == 404
    assert stranger.post(complete_url(booking, payment)).status_code == 404
    # A member of another booking cannot reach this booking's payment through their own.
    own = held_web_booking()
    own_client = logged_in(own.created_by)
    assert own_client.post(complete_url(own, payment)).status_code == 404
    assert sandbox().intents() == []


def test_viewers_may_look_but_not_pay() -> None:
    booking = held_web_booking()
    viewer = UserFactory.create()
    MembershipFactory.create(user=viewer, organisation=booking.organisation, role=MemberRole.VIEWER)
    client = logged_in(viewer)
    page = client.get(pay_url(booking)).content.decode()
    assert 'id="card-form"' not in page
    assert client.post(card_url(booking), {"payment_method": "pm_card_visa"}).status_code == 403
    assert sandbox().intents() == []


def test_payment_posts_need_the_csrf_token() -> None:
    booking = held_web_booking()
    client = Client(enforce_csrf_checks=True)
    client.force_login(booking.created_by)
    assert client.post(card_url(booking), {"payment_method": "pm_card_visa"}).status_code == 403
    page = client.get(pay_url(booking)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    response = client.post(
        card_url(booking), {"payment_method": "pm_card_visa", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert Payment.objects.filter(booking=booking).count() == 1


def test_anonymous_visitors_are_sent_to_log_in() -> None:
    booking = held_web_booking()
    response = Client().get(pay_url(booking))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_garbage_instead_of_a_card_token_is_refused_without_calling_stripe() -> None:
    booking = held_web_booking()
    client = logged_in(booking.created_by)
    for data in ({}, {"token": "x" * 5000}, {"token": "tok_1\x00"}, {"payment_method": "pi_1"}):
        response = client.post(card_url(booking), data)
        assert response.status_code == 302
    assert not Payment.objects.exists()
    assert sandbox().intents() == []


# --- refunds ----------------------------------------------------------------------------


def paid_booking(capture: Any, *, price: int = 1_200_000, currency: str = "JPY") -> Booking:
    booking = held_web_booking(price=price, currency=currency)
    with capture(execute=True):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=Actor.for_user(booking.created_by),
            payment_method="pm_card_visa",
        )
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    return booking


def test_partial_then_full_refunds_never_exceed_what_was_paid(
    django_capture_on_commit_callbacks,
) -> None:
    booking = paid_booking(django_capture_on_commit_callbacks)
    payment = booking.payments.get()
    staff = Actor.system("staff:sales@moonslot.example")
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_refund(
            payment_id=payment.pk, amount=200_000, reason=RefundReason.GOODWILL, actor=staff
        )
    with pytest.raises(payments.RefundNotAllowed):
        payments.payment_refund(
            payment_id=payment.pk, amount=1_000_001, reason=RefundReason.GOODWILL, actor=staff
        )
    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_refund(
            payment_id=payment.pk, amount=1_000_000, reason=RefundReason.GOODWILL, actor=staff
        )
    with pytest.raises(payments.RefundNotAllowed):
        payments.payment_refund(
            payment_id=payment.pk, amount=1, reason=RefundReason.GOODWILL, actor=staff
        )

    payment.refresh_from_db()
    assert payment.amount_refunded == 1_200_000
    assert sandbox().refunded_total(str(payment.stripe_payment_intent_id)) == 1_200_000
    assert list(Refund.objects.values_list("amount", "status")) == [
        (200_000, "succeeded"),
        (1_000_000, "succeeded"),
    ]
    assert subjects() == [
        f"[Moonslot] Booking {booking.reference}: refund of ¥200,000",
        f"[Moonslot] Booking {booking.reference}: refund of ¥1,000,000",
    ]


def test_the_database_refuses_refunds_past_the_amount_paid(
    django_capture_on_commit_callbacks,
) -> None:
    payment = paid_booking(django_capture_on_commit_callbacks).payments.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(amount_refunded=payment.amount + 1)


def test_an_unpaid_attempt_cannot_be_refunded() -> None:
    booking = held_web_booking()
    with pytest.raises(PaymentDeclined):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=Actor.for_user(booking.created_by),
            payment_method="pm_card_chargeCustomerFail",
        )
    with pytest.raises(payments.RefundNotAllowed):
        payments.payment_refund(
            payment_id=booking.payments.get().pk,
            amount=1,
            reason=RefundReason.GOODWILL,
            actor=Actor.system("test"),
        )


def test_cancelling_a_card_paid_booking_refunds_the_policy_amount_once(
    django_capture_on_commit_callbacks,
) -> None:
    booking = paid_booking(django_capture_on_commit_callbacks, price=1_200_00, currency="USD")
    payment = booking.payments.get()
    assert booking.created_by is not None
    user_actor = Actor.for_user(booking.created_by)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        cancelled = payments.booking_cancel_and_refund(
            booking_id=booking.pk, actor=user_actor, reason="Plans changed."
        )
        payments.booking_cancel_and_refund(booking_id=booking.pk, actor=user_actor)

    # Launch is 400 days away: the factory's policy gives 90% back.
    assert cancelled.refund_amount == 108_000
    assert sandbox().refunded_total(str(payment.stripe_payment_intent_id)) == 108_000
    refund = Refund.objects.get()
    assert (refund.amount, refund.reason, refund.status) == (
        108_000,
        RefundReason.CANCELLATION,
        RefundStatus.SUCCEEDED,
    )
    assert subjects() == [
        f"[Moonslot] Booking {booking.reference} is cancelled",
        f"[Moonslot] Booking {booking.reference}: refund of $1,080.00",
    ]
    # Running the cancellation refund again (the sweep does) pays nothing more.
    assert payments.booking_refund_cancellation(booking_id=booking.pk) == 0
    assert sandbox().refunded_total(str(payment.stripe_payment_intent_id)) == 108_000


def test_cancelling_an_unpaid_hold_refunds_nothing(django_capture_on_commit_callbacks) -> None:
    booking = held_web_booking()
    with django_capture_on_commit_callbacks(execute=True):
        payments.booking_cancel_and_refund(booking_id=booking.pk, actor=Actor.system("test"))
    assert not Refund.objects.exists()
    assert sandbox().intents() == []


def test_the_booking_pages_payment_panel_shows_what_was_paid_and_refunded(
    django_capture_on_commit_callbacks, django_assert_num_queries
) -> None:
    booking = paid_booking(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_refund(
            payment_id=booking.payments.get().pk,
            amount=200_000,
            reason=RefundReason.GOODWILL,
            actor=Actor.system("staff:sales"),
        )
    with django_assert_num_queries(2):
        summary = payments.booking_payment_summary(booking)
    html = render_to_string(
        "bookings/includes/payment_status.html",
        {"booking": booking, "status": "confirmed", "payment_summary": summary},
    )
    assert "Paid by card: <strong>¥1,200,000</strong>" in html
    assert "¥200,000 — Goodwill or correction by sales — refunded" in html
    assert "Refunded in total: ¥200,000." in html
    # Without a summary in the context the panel stays out of the page.
    assert (
        render_to_string(
            "bookings/includes/payment_status.html", {"booking": booking, "status": "confirmed"}
        ).strip()
        == ""
    )
