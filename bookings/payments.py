"""Card payments for web bookings: attempts, their outcome, capture, release and refunds.

The flow (see the README's payments section for the argument):

1. ``payment_card_start`` opens an attempt under the booking's lock (extending the hold by a
   bounded grace so the timer cannot take it mid-payment), commits, then asks Stripe to
   create and confirm a PaymentIntent with ``capture_method=manual``: the card is authorised,
   not charged. 3-D Secure leaves it ``requires_action`` for Stripe.js on the pay page.
2. Whatever reports the intent's state — the request itself, the page after 3-D Secure, a
   webhook, the reconciliation sweep — goes through ``payment_apply_intent``, which moves the
   payment forward only and settles it under the booking's lock: a live hold is confirmed
   (``booking_confirm``) and the capture queued in the same transaction; a hold that lapsed
   meanwhile gets its authorisation released instead, and the customer an e-mail. A booking
   is never confirmed over capacity: the capacity is the hold's, and a lapsed hold is not
   revived.
3. Captures, releases and refunds are outbox rows: Stripe is called after the commit, by a
   task that retries on network errors with an idempotency key, so a retry cannot charge,
   release or refund twice.

Lock order extends the booking engine's: slot class → organisation → booking → payment.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from bookings import gateways, plans
from bookings.billing import documents_queue_for_payment, documents_queue_for_refund
from bookings.events import event_write
from bookings.exceptions import (
    BookingError,
    HoldExpired,
    InvalidTransition,
    ScreeningReview,
    TransientError,
)
from bookings.gateways import IntentSnapshot, PaymentDeclined, PaymentGatewayError
from bookings.locks import booking_qs_for_update
from bookings.models import (
    PAYMENT_OPEN_STATUSES,
    PAYMENT_TRANSITIONS,
    Booking,
    BookingStatus,
    Instalment,
    InstalmentKind,
    InstalmentStatus,
    OutboxMessage,
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundReason,
    RefundStatus,
    StripeEvent,
)
from bookings.notifications import booking_recipients
from bookings.outbox import outbox_handler, outbox_write
from bookings.services import Actor, booking_cancel, booking_confirm, booking_hold_extend
from marketplace.models import Channel
from marketplace.money import STRIPE_MAX_CHARGE_MINOR, Money

logger = logging.getLogger(__name__)

STRIPE_ACTOR = Actor.system("system:stripe")
# An attempt younger than this that has not heard back from Stripe is still in flight:
# a second submit (a double click) waits for it instead of authorising the card twice.
IN_FLIGHT_SECONDS = 90

# Stripe's PaymentIntent statuses, in our terms.
INTENT_STATUS = {
    "requires_payment_method": PaymentStatus.FAILED,
    "requires_confirmation": PaymentStatus.PENDING,
    "requires_action": PaymentStatus.REQUIRES_ACTION,
    "processing": PaymentStatus.PROCESSING,
    "requires_capture": PaymentStatus.AUTHORISED,
    "succeeded": PaymentStatus.SUCCEEDED,
    "canceled": PaymentStatus.CANCELED,
}
PAID_STATUSES = (PaymentStatus.AUTHORISED, PaymentStatus.SUCCEEDED)
# A refund of a bank transfer, recorded for sales to pay out by transfer.
REFUND_TO_PAY_OUT = "payment.refund_to_pay_out"


class PaymentNotAllowed(BookingError):
    """This booking cannot be paid by card now; ``message`` says why, for the customer."""

    code = "payment_not_allowed"


class RefundNotAllowed(BookingError):
    code = "refund_not_allowed"


# --- what the pay page may offer ------------------------------------------------------


def card_payment_refusal(booking: Booking, amount: int | None = None) -> str | None:
    """Why a card cannot pay ``amount`` (minor units: the next instalment's outstanding on
    a payment plan, the price by default) of this booking, for the customer; None if it can.
    Above Stripe's per-charge limit the answer is a bank transfer (``bookings.transfers``)."""
    amount = booking.price_amount if amount is None else amount
    if booking.completion_token and booking.contract_accepted_at is None:
        # An enterprise hold (bookings.enterprise) could not be confirmed by the payment.
        return _(
            "Accept the contract terms first, through the link our sales team sent you; "
            "the deposit is paid after that."
        )
    if amount > STRIPE_MAX_CHARGE_MINOR:
        return _(
            "This amount is above what a single card payment can carry, so it is paid by "
            "bank transfer, to the account below, quoting your payment reference. Our sales "
            "team can extend your hold while the transfer is arranged."
        )
    if amount <= 0:
        return _("There is nothing to pay for this booking.")
    if not gateways.is_configured():
        return _("Card payments are not available at the moment. Please contact sales.")
    return None


@dataclass(frozen=True)
class PaymentSummary:
    """What the booking page shows about money: what was paid by card, what went back,
    and the attempt still under way, if any. Two queries, whatever the history."""

    payments: list[Payment]
    refunds: list[Refund]
    paid: Money
    refunded: Money
    capturing: bool
    in_progress: Payment | None
    last_failure: str
    over_card_limit: bool


def failure_reason(code: str) -> str:
    """A failed payment's reason in the reader's language, from Stripe's code. Stripe's own
    message is English (and for lost or stolen cards says more than a customer should
    read), so only the code is trusted; anything unknown reads as a plain decline."""
    reasons = {
        "insufficient_funds": _("Your card has insufficient funds."),
        "expired_card": _("Your card has expired."),
        "incorrect_cvc": _("The card's security code is incorrect."),
        "incorrect_number": _("The card number is incorrect."),
        "processing_error": _("Your bank could not process the card. Please try again."),
        "authentication_required": _("Your bank asks for authentication (3-D Secure)."),
        "payment_intent_authentication_failure": _(
            "The card's authentication (3-D Secure) did not succeed."
        ),
    }
    return str(reasons.get(code, _("Your card was declined.")))


def booking_payment_summary(booking: Booking) -> PaymentSummary:
    attempts = list(booking.payments.prefetch_related("refunds").order_by("attempt"))
    refunds = [refund for payment in attempts for refund in payment.refunds.all()]
    paid = sum(p.amount for p in attempts if p.status == PaymentStatus.SUCCEEDED)
    refunded = sum(r.amount for r in refunds if r.status == RefundStatus.SUCCEEDED)
    last = attempts[-1] if attempts else None
    return PaymentSummary(
        payments=attempts,
        refunds=refunds,
        paid=Money(paid, booking.currency),
        refunded=Money(refunded, booking.currency),
        capturing=any(p.status == PaymentStatus.AUTHORISED for p in attempts),
        in_progress=last if last is not None and last.status in PAYMENT_OPEN_STATUSES else None,
        last_failure=failure_reason(last.failure_code)
        if last is not None and last.status == PaymentStatus.FAILED
        else "",
        over_card_limit=booking.price_amount > STRIPE_MAX_CHARGE_MINOR,
    )


# --- starting an attempt ----------------------------------------------------------------


def _open_attempt(*, booking_id: int, actor: Actor, now: datetime) -> Payment:
    """Extend the hold and write a pending attempt, in one transaction under the booking's
    lock (the extension takes it), so two submits cannot both open one. On a payment plan
    the attempt is for the next instalment due (the deposit first), for what it still owes;
    a confirmed plan booking pays its later instalments without any hold to extend."""
    with transaction.atomic():
        head = Booking.objects.only("status", "payment_reference").get(pk=booking_id)
        if not (head.status == BookingStatus.CONFIRMED and head.payment_reference):
            booking_hold_extend(
                booking_id=booking_id,
                by=settings.STRIPE_PAYMENT_GRACE,
                at_most=settings.STRIPE_PAYMENT_GRACE_MAX,
                actor=actor,
                reason="Card payment started.",
                now=now,
            )
        booking = booking_qs_for_update().get(pk=booking_id)
        instalment = _instalment_to_pay(booking)
        refusal = card_payment_refusal(
            booking, amount=instalment.outstanding if instalment else None
        )
        if refusal:
            raise PaymentNotAllowed(refusal)
        attempts = list(booking.payments.order_by("attempt"))
        if instalment is not None:
            # Duplicates, attempts in flight and the attempt limit count per instalment.
            attempts = [p for p in attempts if p.instalment_id == instalment.pk]
            if any(p.status == PaymentStatus.AUTHORISED for p in attempts):
                raise PaymentNotAllowed(
                    _("A payment of this instalment is already being completed.")
                )
        elif any(p.status in PAID_STATUSES for p in attempts):
            raise PaymentNotAllowed(_("This booking has already been paid."))
        in_flight = [
            p
            for p in attempts
            if p.status in (PaymentStatus.PENDING, PaymentStatus.PROCESSING)
            and (now - p.updated_at).total_seconds() < IN_FLIGHT_SECONDS
        ]
        if in_flight:
            raise PaymentNotAllowed(
                _("A payment for this booking is already being processed. Please wait a moment.")
            )
        if len(attempts) >= settings.STRIPE_MAX_ATTEMPTS:
            raise PaymentNotAllowed(
                _("Too many payment attempts for this booking. Please contact sales.")
            )
        # An attempt left waiting for 3-D Secure is abandoned for the new one.
        for stale in attempts:
            if stale.status == PaymentStatus.REQUIRES_ACTION:
                _queue_release(stale)
        number = (booking.payments.aggregate(n=Max("attempt"))["n"] or 0) + 1
        return Payment.objects.create(
            booking=booking,
            provider=PaymentProvider.STRIPE,
            attempt=number,
            instalment=instalment,
            amount=instalment.outstanding if instalment else booking.price_amount,
            currency=booking.currency,
            status=PaymentStatus.PENDING,
            # Derived from the booking and the attempt, with a random part so that a
            # reset development database cannot replay another booking's Stripe reply.
            idempotency_key=f"moonslot:{booking.reference}:{number}:{secrets.token_hex(4)}",
            created_by=actor.user,
            created_at=now,
        )


def _instalment_to_pay(booking: Booking) -> Instalment | None:
    """The instalment a payment of ``booking`` (locked) goes to: the next one due, locked
    (lock order: booking, then its instalments). None for a booking paid in full (no query
    without a payment reference). Raises ``PaymentNotAllowed`` when a plan is fully paid,
    ``InvalidTransition`` when the booking owes nothing any more (cancelled, expired)."""
    if not booking.payment_reference:
        return None
    rows = list(Instalment.objects.select_for_update().filter(booking=booking).order_by("position"))
    if not rows:
        return None
    if booking.status not in (BookingStatus.HELD, BookingStatus.CONFIRMED):
        raise InvalidTransition(from_status=booking.status, to_status=booking.status)
    upcoming = plans.next_due_instalment(rows)
    if upcoming is None:
        raise PaymentNotAllowed(_("Every instalment of this booking has been paid."))
    return upcoming


def _intent_metadata(payment: Payment) -> dict[str, str]:
    metadata = {
        "booking_reference": payment.booking.reference,
        "payment_id": str(payment.pk),
        "attempt": str(payment.attempt),
    }
    if payment.instalment_id:
        metadata["instalment_id"] = str(payment.instalment_id)
    return metadata


def payment_card_start(
    *,
    booking_id: int,
    actor: Actor,
    token: str = "",
    payment_method: str = "",
    now: datetime | None = None,
) -> Payment:
    """Pay a held web booking by card: a Stripe.js card ``token`` (or a PaymentMethod id)
    is authorised for the booking's price. Returns the attempt, settled as far as Stripe
    allowed: ``authorised``/``succeeded`` with the booking confirmed, ``requires_action``
    (3-D Secure: the pay page finishes it), or released if the hold lapsed meanwhile.

    Raises ``PaymentDeclined`` (the hold is kept), ``PaymentNotAllowed``, ``HoldExpired``,
    ``InvalidTransition`` (not a hold), ``TransientError`` (Stripe unreachable: the attempt
    stays pending and the reconciliation sweep finishes it with the same idempotency key),
    ``PaymentGatewayError``.
    """
    if bool(token) == bool(payment_method):
        raise ValueError("give exactly one of token and payment_method")
    now = now or timezone.now()
    payment = _open_attempt(booking_id=booking_id, actor=actor, now=now)
    try:
        if token:
            payment_method = gateways.payment_method_from_token(
                token, idempotency_key=f"{payment.idempotency_key}:pm"
            )
        Payment.objects.filter(pk=payment.pk).update(stripe_payment_method_id=payment_method)
        payment.stripe_payment_method_id = payment_method
        intent = _create_intent(payment)
    except PaymentDeclined as declined:
        _record_decline(payment, declined)
        raise
    except PaymentGatewayError as error:
        _record_failure(payment, code=error.code or "gateway_error", message=str(error))
        raise
    return payment_apply_intent(payment_id=payment.pk, intent=intent)


def _create_intent(payment: Payment) -> IntentSnapshot:
    return gateways.intent_create_and_confirm(
        amount=payment.amount,
        currency=payment.currency,
        payment_method=payment.stripe_payment_method_id,
        metadata=_intent_metadata(payment),
        idempotency_key=payment.idempotency_key,
    )


def _record_decline(payment: Payment, declined: PaymentDeclined) -> None:
    with transaction.atomic():
        locked = Payment.objects.select_for_update().get(pk=payment.pk)
        if declined.payment_intent_id and not locked.stripe_payment_intent_id:
            locked.stripe_payment_intent_id = declined.payment_intent_id
        _move(locked, PaymentStatus.FAILED)
        locked.failure_code = declined.decline_code or "card_declined"
        locked.failure_message = declined.message
        locked.save()


def _record_failure(payment: Payment, *, code: str, message: str) -> None:
    with transaction.atomic():
        locked = Payment.objects.select_for_update().get(pk=payment.pk)
        if _move(locked, PaymentStatus.FAILED):
            locked.failure_code = code[:100]
            locked.failure_message = message
            locked.save()


def _move(payment: Payment, status: str, *, now: datetime | None = None) -> bool:
    """Move ``payment`` (locked) to ``status`` if the map allows it; never backwards."""
    if payment.status == status:
        return False
    if status not in PAYMENT_TRANSITIONS[payment.status]:
        logger.info("payment %s: ignoring %s → %s", payment.pk, payment.status, status)
        return False
    now = now or timezone.now()
    payment.status = status
    if status == PaymentStatus.AUTHORISED and payment.authorised_at is None:
        payment.authorised_at = now
    elif status == PaymentStatus.SUCCEEDED:
        payment.succeeded_at = payment.succeeded_at or now
        payment.authorised_at = payment.authorised_at or now
    elif status == PaymentStatus.CANCELED:
        payment.canceled_at = now
    return True


# --- applying what Stripe says -----------------------------------------------------------


def payment_apply_intent(
    *, payment_id: int, intent: IntentSnapshot, now: datetime | None = None
) -> Payment:
    """Bring a payment up to its PaymentIntent's state and settle the booking: confirm a
    live hold and queue the capture; release or refund a payment whose hold is gone, or
    a second payment for a booking already paid. Idempotent and order-proof: the same or an
    older state changes nothing, and a succeeded or cancelled payment never moves again.

    Raises ``PaymentGatewayError`` if the intent is not this payment's (amount, currency or
    metadata differ).
    """
    now = now or timezone.now()
    booking_id = Payment.objects.values_list("booking_id", flat=True).get(pk=payment_id)
    with transaction.atomic():
        booking = booking_qs_for_update().get(pk=booking_id)
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        _check_intent_matches(payment, booking, intent)
        if not payment.stripe_payment_intent_id:
            payment.stripe_payment_intent_id = intent.id
        status = INTENT_STATUS.get(intent.status)
        if status is None:
            logger.warning("payment %s: unknown intent status %r", payment.pk, intent.status)
            payment.save()
            return payment
        moved = _move(payment, status, now=now)
        if moved and status == PaymentStatus.FAILED:
            payment.failure_code = intent.error_code or "payment_failed"
            payment.failure_message = intent.error_message or _(
                "The payment was not completed. Please try again or use another card."
            )
        payment.save()
        if moved and status in PAID_STATUSES:
            _settle(booking, payment, now=now)
        if moved and status == PaymentStatus.SUCCEEDED and not payment.amount_refunded:
            # Kept (not given back): its receipt (bookings.billing), with the change.
            documents_queue_for_payment(payment)
    return payment


def _check_intent_matches(payment: Payment, booking: Booking, intent: IntentSnapshot) -> None:
    mismatch = (
        (payment.stripe_payment_intent_id and payment.stripe_payment_intent_id != intent.id)
        or intent.amount != payment.amount
        or intent.currency != payment.currency
        or intent.metadata.get("payment_id", str(payment.pk)) != str(payment.pk)
        or intent.metadata.get("booking_reference", booking.reference) != booking.reference
    )
    if mismatch:
        logger.error("payment %s does not match intent %s", payment.pk, intent.id)
        raise PaymentGatewayError(f"intent {intent.id} is not payment {payment.pk}")


def _settle(booking: Booking, payment: Payment, *, now: datetime) -> None:
    """The payment just became authorised or captured (both locked by the caller)."""
    if payment.instalment_id is not None:
        instalment = Instalment.objects.select_for_update().get(pk=payment.instalment_id)
        if not _instalment_takes(instalment, payment, now=now):
            return
        if instalment.kind != InstalmentKind.DEPOSIT and booking.status != BookingStatus.HELD:
            _capture_or_done(payment)
            return
        paid_before = False
    else:
        paid_before = (
            booking.payments.exclude(pk=payment.pk).filter(status__in=PAID_STATUSES).exists()
        )
    if paid_before:
        # A second attempt that also went through (two tabs): give it back.
        _give_back(payment, reason=RefundReason.DUPLICATE, now=now)
        return
    if booking.status == BookingStatus.HELD:
        try:
            booking_confirm(
                booking_id=booking.pk,
                actor=STRIPE_ACTOR,
                reason=f"Card payment {payment.stripe_payment_intent_id} authorised.",
                now=now,
            )
        except ScreeningReview:
            # Held for a denied-party review: the authorisation stays as it is, neither
            # captured nor released, until sales clear (capture) or deny (release) it.
            return
        except (HoldExpired, InvalidTransition):
            _give_back(payment, reason=RefundReason.HOLD_LAPSED, now=now)
            return
        booking.refresh_from_db(fields=["status", "confirmed_at"])
    if booking.status == BookingStatus.CONFIRMED or booking.confirmed_at is not None:
        # Confirmed (or confirmed and cancelled since, which the cancellation refund
        # settles): take the money.
        _capture_or_done(payment)
        return
    # Expired, or cancelled before it was ever confirmed: the customer gets it all back.
    _give_back(payment, reason=RefundReason.HOLD_LAPSED, now=now)


def _capture_or_done(payment: Payment) -> None:
    if payment.status == PaymentStatus.AUTHORISED:
        outbox_write(
            topic="payment.capture",
            payload={"payment_id": payment.pk},
            dedupe_key=f"payment.capture:{payment.pk}",
        )


def _instalment_takes(instalment: Instalment, payment: Payment, *, now: datetime) -> bool:
    """Whether a card payment that just became authorised or captured goes to its
    instalment (locked). An authorisation is given back as a duplicate when the instalment
    is already covered (money received plus other authorisations under way), or when the
    instalment is no longer owed (the booking ended); a capture is counted on the
    instalment (``plans.instalment_apply``), or given back if it came too late."""
    if instalment.status == InstalmentStatus.CANCELLED:
        _give_back(payment, reason=RefundReason.HOLD_LAPSED, now=now)
        return False
    if payment.status == PaymentStatus.AUTHORISED:
        authorised_elsewhere = (
            Payment.objects.filter(instalment=instalment, status=PaymentStatus.AUTHORISED)
            .exclude(pk=payment.pk)
            .aggregate(total=Sum("amount"))["total"]
            or 0
        )
        if instalment.amount_paid + authorised_elsewhere >= instalment.amount:
            _give_back(payment, reason=RefundReason.DUPLICATE, now=now)
            return False
        return True
    # Captured: the money has arrived.
    if instalment.status == InstalmentStatus.PAID:
        _give_back(payment, reason=RefundReason.DUPLICATE, now=now)
        return False
    plans.instalment_apply(instalment, payment, now=now)
    return True


def _give_back(payment: Payment, *, reason: str, now: datetime) -> None:
    """Release an authorisation, or refund a capture in full (payment locked)."""
    if payment.status == PaymentStatus.AUTHORISED:
        _queue_release(payment, notify=True, reason=reason)
        return
    if payment.status == PaymentStatus.SUCCEEDED and payment.refundable_amount > 0:
        _refund_locked(
            payment,
            amount=payment.refundable_amount,
            reason=reason,
            actor=STRIPE_ACTOR,
            note="",
            now=now,
        )


def _queue_release(payment: Payment, *, notify: bool = False, reason: str = "") -> None:
    outbox_write(
        topic="payment.release",
        payload={"payment_id": payment.pk, "notify": notify, "reason": reason},
        dedupe_key=f"payment.release:{payment.pk}",
    )


def payment_refresh(*, payment_id: int) -> Payment:
    """Ask Stripe for the attempt's intent and apply it (the pay page after 3-D Secure, the
    reconciliation sweep). A pending attempt that never heard back is re-sent with its
    idempotency key, so Stripe answers with what it did the first time."""
    payment = Payment.objects.select_related("booking").get(pk=payment_id)
    if payment.stripe_payment_intent_id:
        intent = gateways.intent_retrieve(payment.stripe_payment_intent_id)
    elif payment.status == PaymentStatus.PENDING and payment.stripe_payment_method_id:
        try:
            intent = _create_intent(payment)
        except PaymentDeclined as declined:
            _record_decline(payment, declined)
            return Payment.objects.get(pk=payment_id)
    else:
        if payment.status == PaymentStatus.PENDING:
            # The card never reached Stripe (its single-use token is gone with the request).
            _record_failure(
                payment,
                code="not_submitted",
                message=_("The payment did not reach the card processor; nothing was charged."),
            )
        return Payment.objects.get(pk=payment_id)
    return payment_apply_intent(payment_id=payment.pk, intent=intent)


# --- capture and release (outbox handlers) ------------------------------------------------


def _event(booking: Booking, *, type: str, reason: str, data: dict[str, object]) -> None:
    event_write(booking, type=type, actor=STRIPE_ACTOR, reason=reason, data=data)


@outbox_handler("payment.capture")
def handle_payment_capture(message: OutboxMessage) -> None:
    """Capture an authorised payment of a confirmed booking, once."""
    payment = Payment.objects.select_related("booking").get(pk=message.payload["payment_id"])
    if payment.status != PaymentStatus.AUTHORISED or not payment.stripe_payment_intent_id:
        return
    try:
        intent = gateways.intent_capture(
            payment.stripe_payment_intent_id,
            idempotency_key=f"{payment.idempotency_key}:capture",
        )
    except PaymentGatewayError as error:
        # The authorisation is gone (expired or cancelled at Stripe): the booking stays
        # confirmed, and sales must collect the money another way.
        intent = gateways.intent_retrieve(payment.stripe_payment_intent_id)
        payment = payment_apply_intent(payment_id=payment.pk, intent=intent)
        if payment.status != PaymentStatus.SUCCEEDED:
            logger.error("payment %s: capture failed: %s", payment.pk, error)
            with transaction.atomic():
                _record_failure(payment, code="capture_failed", message=str(error))
                _event(
                    payment.booking,
                    type="payment.capture_failed",
                    reason=str(error),
                    data={"payment_id": payment.pk},
                )
        return
    payment_apply_intent(payment_id=payment.pk, intent=intent)


@outbox_handler("payment.release")
def handle_payment_release(message: OutboxMessage) -> None:
    """Cancel an attempt's PaymentIntent, releasing any authorisation; if it turns out to
    have been captured meanwhile, applying that state refunds it instead."""
    payment = Payment.objects.select_related("booking").get(pk=message.payload["payment_id"])
    if payment.status in (PaymentStatus.CANCELED, PaymentStatus.SUCCEEDED):
        return
    if not payment.stripe_payment_intent_id:
        with transaction.atomic():
            locked = Payment.objects.select_for_update().get(pk=payment.pk)
            if _move(locked, PaymentStatus.CANCELED):
                locked.save()
        return
    intent = gateways.intent_cancel(
        payment.stripe_payment_intent_id, idempotency_key=f"{payment.idempotency_key}:cancel"
    )
    payment = payment_apply_intent(payment_id=payment.pk, intent=intent)
    if payment.status == PaymentStatus.CANCELED and message.payload.get("notify"):
        reason = str(message.payload.get("reason") or RefundReason.HOLD_LAPSED)
        with transaction.atomic():
            _event(
                payment.booking,
                type="payment.released",
                reason=str(RefundReason(reason).label),
                data={"payment_id": payment.pk, "amount": payment.money.as_dict()},
            )
            outbox_write(
                topic="payment.notify",
                payload={"payment_id": payment.pk, "kind": "released", "reason": reason},
                dedupe_key=f"payment.notify:released:{payment.pk}",
            )


# --- refunds ------------------------------------------------------------------------------


def payment_refund(
    *, payment_id: int, amount: int, reason: str, actor: Actor, note: str = ""
) -> Refund:
    """Refund ``amount`` (minor units) of a captured card payment: full or partial, never
    more than what is left. The refund is recorded pending under the payment's row lock
    (and counted in ``amount_refunded`` at once, so concurrent refunds cannot overshoot);
    Stripe is called after the commit by the outbox, for exactly that amount.

    Raises ``RefundNotAllowed`` (not captured, or more than is left), ``ValueError`` for an
    unknown reason. A second cancellation or lapsed-hold refund of one payment raises
    ``RefundNotAllowed`` too (the first one stands).
    """
    if reason not in RefundReason.values:
        raise ValueError(f"unknown refund reason {reason!r}")
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        return _refund_locked(
            payment, amount=amount, reason=reason, actor=actor, note=note, now=timezone.now()
        )


def _refund_locked(
    payment: Payment, *, amount: int, reason: str, actor: Actor, note: str, now: datetime
) -> Refund:
    if payment.status != PaymentStatus.SUCCEEDED:
        raise RefundNotAllowed(_("Only a completed payment can be refunded."))
    left = payment.amount - payment.amount_refunded
    if amount <= 0 or amount > left:
        raise RefundNotAllowed(
            _("A refund must be between 1 and %(left)s.") % {"left": Money(left, payment.currency)}
        )
    try:
        with transaction.atomic():
            refund = Refund.objects.create(
                payment=payment,
                amount=amount,
                currency=payment.currency,
                reason=reason,
                note=note,
                actor=actor.label,
                actor_user=actor.user,
                created_at=now,
            )
    except IntegrityError:
        raise RefundNotAllowed(_("This payment has already been refunded for that.")) from None
    payment.amount_refunded += amount
    payment.save(update_fields=["amount_refunded", "updated_at"])
    if payment.provider != PaymentProvider.STRIPE:
        # Stripe cannot send back money it never took: the refund waits, pending, for sales
        # to pay it out by bank transfer and record that (bookings.transfers).
        _event(
            payment.booking,
            type=REFUND_TO_PAY_OUT,
            reason=note or str(RefundReason(reason).label),
            data={"payment_id": payment.pk, "refund_id": refund.pk, "amount": amount},
        )
        return refund
    _event(
        payment.booking,
        type="payment.refund_requested",
        reason=note or str(RefundReason(reason).label),
        data={"payment_id": payment.pk, "refund_id": refund.pk, "amount": amount},
    )
    outbox_write(
        topic="payment.refund",
        payload={"refund_id": refund.pk},
        dedupe_key=f"payment.refund:{refund.pk}",
    )
    return refund


@outbox_handler("payment.refund")
def handle_payment_refund(message: OutboxMessage) -> None:
    refund = Refund.objects.select_related("payment__booking").get(pk=message.payload["refund_id"])
    if refund.status != RefundStatus.PENDING or refund.stripe_refund_id:
        return
    payment = refund.payment
    if payment.provider != PaymentProvider.STRIPE:
        return  # paid out by sales (bookings.transfers.refund_record_paid_out)
    try:
        result = gateways.refund_create(
            intent_id=str(payment.stripe_payment_intent_id),
            amount=refund.amount,
            currency=refund.currency,
            idempotency_key=f"{payment.idempotency_key}:refund:{refund.pk}",
            metadata={
                "booking_reference": payment.booking.reference,
                "payment_id": str(payment.pk),
                "refund_id": str(refund.pk),
            },
        )
    except PaymentGatewayError as error:
        logger.error("refund %s failed: %s", refund.pk, error)
        refund_mark_failed(refund_id=refund.pk, message=str(error))
        return
    if result.status == "failed":
        Refund.objects.filter(pk=refund.pk).update(stripe_refund_id=result.id)
        refund_mark_failed(refund_id=refund.pk, message="Stripe reported the refund failed.")
        return
    with transaction.atomic():
        Payment.objects.select_for_update().get(pk=payment.pk)  # lock order: payment, refund
        locked = Refund.objects.select_for_update().get(pk=refund.pk)
        locked.stripe_refund_id = result.id
        # Stripe's "pending" is accepted and on its way; a later failure arrives as an event.
        locked.status = RefundStatus.SUCCEEDED
        locked.completed_at = timezone.now()
        locked.save(update_fields=["stripe_refund_id", "status", "completed_at"])
        _event(
            payment.booking,
            type="payment.refunded",
            reason=str(RefundReason(locked.reason).label),
            data={"payment_id": payment.pk, "refund_id": locked.pk, "amount": locked.amount},
        )
        outbox_write(
            topic="payment.notify",
            payload={"payment_id": payment.pk, "kind": "refunded", "refund_id": locked.pk},
            dedupe_key=f"payment.notify:refunded:{locked.pk}",
        )
        # The credit note for the money sent back (bookings.billing), queued with the change.
        documents_queue_for_refund(locked)


def refund_mark_failed(*, refund_id: int, message: str) -> None:
    """A refund Stripe refused or later failed: give its amount back to what is refundable."""
    with transaction.atomic():
        payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        refund = Refund.objects.select_for_update().get(pk=refund_id)
        if refund.status == RefundStatus.FAILED:
            return
        refund.status = RefundStatus.FAILED
        refund.failure_message = message
        refund.completed_at = timezone.now()
        refund.save(update_fields=["status", "failure_message", "completed_at"])
        payment.amount_refunded -= refund.amount
        payment.save(update_fields=["amount_refunded", "updated_at"])


# --- cancellation -------------------------------------------------------------------------


def booking_cancel_and_refund(
    *, booking_id: int, actor: Actor, reason: str = "", now: datetime | None = None
) -> Booking:
    """Cancel a booking (``booking_cancel``) and pay back what its policy gives
    (``Booking.refund_amount``) to the card that paid it. The refund is queued in the same
    transaction as the cancellation, so it cannot be lost; cancelling twice refunds once.
    Raises what ``booking_cancel`` raises."""
    with transaction.atomic():
        booking = booking_cancel(booking_id=booking_id, actor=actor, reason=reason, now=now)
        if booking.status == BookingStatus.CANCELLED and booking.refund_amount:
            outbox_write(
                topic="payment.cancellation_refund",
                payload={"booking_id": booking.pk},
                dedupe_key=f"payment.cancellation_refund:{booking.pk}",
            )
    return booking


def booking_refund_cancellation(*, booking_id: int) -> int:
    """Refund a cancelled booking's policy amount across its payments, less what
    cancellation refunds already cover: card payments first (Stripe sends them back), then
    bank transfers, whose refunds are recorded pending for sales to pay out by transfer
    (``_refund_locked``). Safe to run again (the sweep does). Returns the amount newly
    refunded. Raises ``TransientError`` while a capture is still under way."""
    booking = Booking.objects.get(pk=booking_id)
    if booking.status != BookingStatus.CANCELLED or not booking.refund_amount:
        return 0
    payments = sorted(
        booking.payments.filter(
            provider__in=[PaymentProvider.STRIPE, PaymentProvider.BANK_TRANSFER]
        ),
        key=lambda p: (p.provider != PaymentProvider.STRIPE, p.attempt),
    )
    if any(p.status == PaymentStatus.AUTHORISED for p in payments):
        raise TransientError("a capture is still under way; refund after it")
    covered = (
        Refund.objects.filter(payment__booking=booking, reason=RefundReason.CANCELLATION)
        .exclude(status=RefundStatus.FAILED)
        .aggregate(total=Sum("amount"))["total"]
        or 0
    )
    due = booking.refund_amount - covered
    refunded = 0
    for payment in payments:
        if due <= 0:
            break
        if payment.status != PaymentStatus.SUCCEEDED:
            continue
        with transaction.atomic():
            locked = Payment.objects.select_for_update().get(pk=payment.pk)
            amount = min(due, locked.refundable_amount)
            if amount <= 0:
                continue
            try:
                _refund_locked(
                    locked,
                    amount=amount,
                    reason=RefundReason.CANCELLATION,
                    actor=STRIPE_ACTOR,
                    note="Refund due under the cancellation policy.",
                    now=timezone.now(),
                )
            except RefundNotAllowed:
                continue
        due -= amount
        refunded += amount
    return refunded


@outbox_handler("payment.cancellation_refund")
def handle_cancellation_refund(message: OutboxMessage) -> None:
    booking_refund_cancellation(booking_id=message.payload["booking_id"])


# --- webhooks -----------------------------------------------------------------------------


def stripe_event_receive(event: dict[str, object]) -> StripeEvent:
    """Record a verified webhook once and queue its processing in the same transaction.
    A redelivery of a processed event changes nothing; of an unprocessed one, queues it
    again (its handlers are idempotent)."""
    stripe_id, event_type = str(event["id"]), str(event["type"])
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeEvent.objects.create(
                    stripe_id=stripe_id, type=event_type, payload=event
                )
        except IntegrityError:
            record = StripeEvent.objects.select_for_update().get(stripe_id=stripe_id)
            if record.processed_at is not None:
                return record
        outbox_write(topic="stripe.event", payload={"stripe_event_id": record.pk})
    return record


def _intent_event(payload: dict[str, object]) -> None:
    """Any PaymentIntent event: find our attempt and apply the intent's current state
    (asked of Stripe, so events that arrive late or out of order cannot move it back)."""
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        logger.warning("stripe event %s has no intent", payload.get("id"))
        return
    intent_id = obj["id"]
    payment = Payment.objects.filter(stripe_payment_intent_id=intent_id).first()
    if payment is None:
        # The request that created the intent died before recording it: the intent's
        # metadata names the attempt, and must name its booking too.
        metadata = obj.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        payment_id = str(metadata.get("payment_id", ""))
        if payment_id.isdigit():
            payment = Payment.objects.filter(
                pk=int(payment_id),
                stripe_payment_intent_id__isnull=True,
                booking__reference=str(metadata.get("booking_reference", "")),
            ).first()
    if payment is None:
        logger.info("stripe event for intent %s: not one of ours", intent_id)
        return
    try:
        payment_apply_intent(payment_id=payment.pk, intent=gateways.intent_retrieve(intent_id))
    except PaymentGatewayError:
        # Not this payment's intent after all (logged by the check): retrying cannot help.
        return


def _refund_event(payload: dict[str, object]) -> None:
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or obj.get("status") != "failed":
        return
    refund = Refund.objects.filter(stripe_refund_id=obj.get("id")).first()
    if refund is not None:
        refund_mark_failed(refund_id=refund.pk, message=str(obj.get("failure_reason") or ""))


STRIPE_EVENT_HANDLERS = {
    "payment_intent.succeeded": _intent_event,
    "payment_intent.amount_capturable_updated": _intent_event,
    "payment_intent.payment_failed": _intent_event,
    "payment_intent.canceled": _intent_event,
    "payment_intent.requires_action": _intent_event,
    "payment_intent.processing": _intent_event,
    "refund.updated": _refund_event,
    "refund.failed": _refund_event,
    "charge.refund.updated": _refund_event,
}


@outbox_handler("stripe.event")
def handle_stripe_event(message: OutboxMessage) -> None:
    record = StripeEvent.objects.get(pk=message.payload["stripe_event_id"])
    if record.processed_at is not None:
        return
    handler = STRIPE_EVENT_HANDLERS.get(record.type)
    if handler is not None:
        handler(record.payload)
    StripeEvent.objects.filter(pk=record.pk, processed_at__isnull=True).update(
        processed_at=timezone.now()
    )


# --- reconciliation -----------------------------------------------------------------------


@dataclass
class ReconcileReport:
    refreshed: int = 0
    released: int = 0
    refunded_bookings: int = 0
    errors: int = 0


def payments_reconcile(*, now: datetime | None = None) -> ReconcileReport:
    """The beat sweep for webhooks that never came: attempts still open (or authorised but
    unsettled) some minutes after their last change are asked of Stripe and applied as the
    webhook would have; attempts still waiting for 3-D Secure after their hold lapsed are
    released; cancelled bookings still owed their policy refund get it. Each item on its
    own, so one failure does not stop the rest."""
    now = now or timezone.now()
    report = ReconcileReport()
    cutoff = now - settings.STRIPE_RECONCILE_AFTER
    stale = (
        Payment.objects.filter(provider=PaymentProvider.STRIPE, updated_at__lte=cutoff)
        .filter(status__in=PAYMENT_OPEN_STATUSES)
        .values_list("pk", flat=True)
        .order_by("pk")[:500]
    )
    for payment_id in list(stale):
        try:
            payment = payment_refresh(payment_id=payment_id)
            report.refreshed += 1
            if payment.status == PaymentStatus.REQUIRES_ACTION and (
                payment.booking.status_at(now) != BookingStatus.HELD
            ):
                with transaction.atomic():
                    _queue_release(payment)
                report.released += 1
        except Exception:  # one bad row must not stop the sweep
            report.errors += 1
            logger.exception("reconcile: payment %s", payment_id)
    owed = (
        Booking.objects.filter(
            status=BookingStatus.CANCELLED,
            refund_amount__gt=0,
            payments__status=PaymentStatus.SUCCEEDED,
        )
        .exclude(
            payments__refunds__reason=RefundReason.CANCELLATION,
            payments__refunds__status__in=[RefundStatus.PENDING, RefundStatus.SUCCEEDED],
        )
        .values_list("pk", flat=True)
        .distinct()[:500]
    )
    for booking_id in list(owed):
        try:
            if booking_refund_cancellation(booking_id=booking_id):
                report.refunded_bookings += 1
        except Exception:
            report.errors += 1
            logger.exception("reconcile: cancellation refund of booking %s", booking_id)
    return report


# --- e-mail -------------------------------------------------------------------------------


def _language(booking: Booking) -> str:
    if booking.channel == Channel.WEB and booking.created_by is not None:
        return booking.created_by.preferred_language or "en"
    return "en"


@outbox_handler("payment.notify")
def handle_payment_notify(message: OutboxMessage) -> None:
    payment = Payment.objects.select_related("booking__organisation", "booking__created_by").get(
        pk=message.payload["payment_id"]
    )
    booking = payment.booking
    recipients = booking_recipients(booking)
    if not recipients:
        return
    kind = message.payload["kind"]
    with translation.override(_language(booking)):
        if kind == "released" and message.payload.get("reason") == RefundReason.DUPLICATE:
            subject = _("Booking %(ref)s: second payment released") % {"ref": booking.reference}
            body = _(
                "Booking %(ref)s was already paid, so we have released the second "
                "authorisation of %(amount)s on your card: you have not been charged twice."
            ) % {"ref": booking.reference, "amount": payment.money}
        elif kind == "released":
            subject = _("Booking %(ref)s was not confirmed") % {"ref": booking.reference}
            body = _(
                "Your hold %(ref)s lapsed before your card payment completed, and the "
                "capacity is no longer held for you. We have released the authorisation of "
                "%(amount)s on your card: you have not been charged.\n\nYou are welcome to "
                "book again."
            ) % {"ref": booking.reference, "amount": payment.money}
        elif kind == "refunded":
            refund = Refund.objects.get(pk=message.payload["refund_id"])
            subject = _("Booking %(ref)s: refund of %(amount)s") % {
                "ref": booking.reference,
                "amount": refund.money,
            }
            body = _(
                "We have refunded %(amount)s to the card that paid booking %(ref)s "
                "(%(reason)s). Depending on your bank it takes 5–10 days to appear."
            ) % {
                "amount": refund.money,
                "ref": booking.reference,
                "reason": RefundReason(refund.reason).label,
            }
        else:
            logger.warning("payment.notify: unknown kind %r", kind)
            return
    EmailMessage(
        subject=f"[Moonslot] {subject}",
        body=f"{body}\n\n{settings.SITE_URL}\n",
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": f"payment.{kind}"},
    ).send()


__all__ = [
    "PaymentNotAllowed",
    "RefundNotAllowed",
    "booking_cancel_and_refund",
    "booking_payment_summary",
    "booking_refund_cancellation",
    "card_payment_refusal",
    "payment_apply_intent",
    "payment_card_start",
    "payment_refresh",
    "payment_refund",
    "payments_reconcile",
    "refund_mark_failed",
    "stripe_event_receive",
]
