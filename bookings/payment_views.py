"""The pay page and its two POSTs: start a card payment, and finish one after 3-D Secure.

The browser never decides whether a payment worked: after Stripe.js, it posts back and the
server asks Stripe (``payment_refresh``). Every outcome comes back to a page by redirect, with
the message for the customer in the messages framework, so a reload never posts twice.
Another organisation's booking answers 404, like a missing one; viewers may look but not pay.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.models import MemberRole, User
from bookings import gateways, payments, plans, selectors, transfers
from bookings.exceptions import BookingError, HoldExpired, InvalidTransition, TransientError
from bookings.models import REFERENCE_LENGTH, Booking, BookingStatus, Payment, PaymentStatus
from bookings.services import Actor
from marketplace.money import Money

logger = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"^tok_[A-Za-z0-9_]{1,200}$")
PAYMENT_METHOD_PATTERN = re.compile(r"^pm_[A-Za-z0-9_]{1,200}$")


def _booking_or_404(request: HttpRequest, reference: str) -> Booking:
    user = request.user
    if not isinstance(user, User) or len(reference) != REFERENCE_LENGTH:
        raise Http404(_("No booking has that reference."))
    try:
        return selectors.booking_get_for_member(user=user, reference=reference)
    except Booking.DoesNotExist:
        raise Http404(_("No booking has that reference.")) from None


def _actor(request: HttpRequest) -> Actor:
    user = request.user
    if not isinstance(user, User):  # login_required has let only users through
        raise Http404
    return Actor.for_user(user)


def _can_pay(booking: Booking) -> bool:
    return getattr(booking, "member_role", None) in (MemberRole.OWNER, MemberRole.BOOKER)


def detail_url(reference: str) -> str:
    try:
        return reverse("bookings:detail", args=[reference])
    except NoReverseMatch:
        return f"/bookings/{reference}/"


def _pay_url(reference: str) -> str:
    return reverse("payments:pay", args=[reference])


@never_cache  # the page may carry a PaymentIntent's client secret
@login_required
@require_GET
def pay(request: HttpRequest, reference: str) -> HttpResponse:
    booking = _booking_or_404(request, reference)
    now = timezone.now()
    status = booking.status_at(now)
    # On a payment plan the page pays the next instalment due (the deposit first), also
    # once the booking is confirmed; without a plan, the price of a hold.
    instalment = (
        plans.next_due_instalment(booking.instalments.all()) if booking.payment_reference else None
    )
    if status == BookingStatus.CONFIRMED and instalment is None:
        return HttpResponseRedirect(detail_url(booking.reference))
    payable = status == BookingStatus.HELD or status == BookingStatus.CONFIRMED
    amount = instalment.outstanding if instalment is not None else booking.price_amount
    refusal = payments.card_payment_refusal(booking, amount=amount)
    over_card_limit = amount > payments.STRIPE_MAX_CHARGE_MINOR
    action = None
    if payable and refusal is None:
        action = _pending_action(booking)
    context = {
        "booking": booking,
        "status": status,
        "payable": payable,
        "instalment": instalment,
        "pay_amount": Money(amount, booking.currency),
        "can_pay": _can_pay(booking),
        "refusal": refusal,
        "over_card_limit": over_card_limit,
        # Above the card limit, the transfer's details: the account and the reference.
        "bank_details": transfers.bank_details() if payable and over_card_limit else "",
        "payment_reference": (
            plans.payment_reference_ensure(booking) if payable and over_card_limit else ""
        ),
        # While 3-D Secure is pending the page finishes that first; a failure brings the
        # card form back.
        "card_form": payable and refusal is None and _can_pay(booking) and not action,
        "action": action,
        "hold_seconds": (
            max(0, int((booking.hold_expires_at - now).total_seconds()))
            if booking.hold_expires_at and status == BookingStatus.HELD
            else 0
        ),
        "stripe_js_url": gateways.stripe_js_url(),
        "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
        "detail_url": detail_url(booking.reference),
    }
    return render(request, "bookings/pay.html", context)


def _pending_action(booking: Booking) -> dict[str, object] | None:
    """The attempt waiting for 3-D Secure, with the client secret Stripe.js needs to finish
    it. The secret is fetched from Stripe when needed, never stored."""
    waiting = (
        booking.payments.filter(status=PaymentStatus.REQUIRES_ACTION)
        .exclude(stripe_payment_intent_id=None)
        .order_by("-attempt")
        .first()
    )
    if waiting is None or not _can_pay(booking):
        return None
    try:
        intent = gateways.intent_retrieve(str(waiting.stripe_payment_intent_id))
    except (TransientError, gateways.PaymentGatewayError):
        logger.warning("pay page: could not load intent of payment %s", waiting.pk)
        return None
    if intent.status != "requires_action":
        return None
    return {"payment": waiting, "client_secret": intent.client_secret}


@login_required
@require_POST
def pay_card(request: HttpRequest, reference: str) -> HttpResponse:
    booking = _booking_or_404(request, reference)
    if not _can_pay(booking):
        return HttpResponse(_("Only owners and bookers can pay."), status=403)
    token = request.POST.get("token", "")
    method = request.POST.get("payment_method", "")
    if not (TOKEN_PATTERN.match(token) or PAYMENT_METHOD_PATTERN.match(method)) or (
        token and method
    ):
        messages.error(request, _("Your card details did not reach us. Please try again."))
        return HttpResponseRedirect(_pay_url(booking.reference))
    try:
        payment = payments.payment_card_start(
            booking_id=booking.pk,
            actor=_actor(request),
            token=token if TOKEN_PATTERN.match(token) else "",
            payment_method="" if TOKEN_PATTERN.match(token) else method,
        )
    except Exception as error:  # each outcome has its own page; see _after_failure
        return _after_failure(request, booking, error)
    return _after_attempt(request, booking, payment)


@login_required
@require_POST
def pay_complete(request: HttpRequest, reference: str, payment_id: int) -> HttpResponse:
    """Stripe.js has finished 3-D Secure (or given up): ask Stripe what happened."""
    booking = _booking_or_404(request, reference)
    if not _can_pay(booking):
        return HttpResponse(_("Only owners and bookers can pay."), status=403)
    try:
        payment = booking.payments.get(pk=payment_id)
    except Payment.DoesNotExist:
        raise Http404(_("No such payment.")) from None
    try:
        payment = payments.payment_refresh(payment_id=payment.pk)
    except Exception as error:
        return _after_failure(request, booking, error)
    return _after_attempt(request, booking, payment)


def _after_attempt(request: HttpRequest, booking: Booking, payment: Payment) -> HttpResponse:
    booking.refresh_from_db(
        fields=["status", "hold_expires_at", "confirmed_at", "screening_status"]
    )
    if payment.status in (PaymentStatus.AUTHORISED, PaymentStatus.SUCCEEDED):
        if booking.status == BookingStatus.HELD and booking.screening_status == "match":
            # Denied-party screening stopped the confirmation (bookings.screening).
            messages.warning(
                request,
                _(
                    "Your card is authorised for %(amount)s but not charged yet: booking "
                    "%(ref)s needs a compliance review before it can be confirmed. It stays "
                    "held meanwhile, and our sales team will contact you."
                )
                % {"amount": payment.money, "ref": booking.reference},
            )
        elif booking.status == BookingStatus.CONFIRMED:
            messages.success(
                request,
                _(
                    "Thank you: your payment of %(amount)s went through and booking %(ref)s "
                    "is confirmed."
                )
                % {"amount": payment.money, "ref": booking.reference},
            )
        else:
            messages.error(
                request,
                _(
                    "Your hold lapsed before the payment completed, so the booking could not be "
                    "confirmed. The amount authorised on your card is released; you have not "
                    "been charged."
                ),
            )
        return HttpResponseRedirect(detail_url(booking.reference))
    if payment.status == PaymentStatus.REQUIRES_ACTION:
        # The pay page runs 3-D Secure in Stripe.js, then posts to pay_complete.
        return HttpResponseRedirect(_pay_url(booking.reference))
    if payment.status == PaymentStatus.FAILED:
        messages.error(
            request, _declined_message(payments.failure_reason(payment.failure_code), booking)
        )
    elif payment.status in (PaymentStatus.PENDING, PaymentStatus.PROCESSING):
        messages.warning(
            request,
            _("Your payment is being processed. We will e-mail you as soon as it completes."),
        )
    else:
        messages.error(request, _("The payment was cancelled. You can try again."))
    return HttpResponseRedirect(_pay_url(booking.reference))


def _declined_message(reason: str, booking: Booking) -> str:
    text = reason or _("Your card was declined.")
    if booking.status == BookingStatus.HELD and booking.hold_expires_at:
        until = timezone.localtime(booking.hold_expires_at).strftime("%H:%M %Z")
        return _(
            "%(reason)s Your booking is still held until %(until)s: you can try again or use "
            "another card."
        ) % {"reason": text, "until": until}
    return text


def _after_failure(request: HttpRequest, booking: Booking, error: Exception) -> HttpResponse:
    booking.refresh_from_db(fields=["status", "hold_expires_at"])
    if isinstance(error, gateways.PaymentDeclined):
        messages.error(
            request, _declined_message(payments.failure_reason(error.decline_code), booking)
        )
    elif isinstance(error, HoldExpired):
        messages.error(request, _("This hold has lapsed, so it can no longer be paid."))
        return HttpResponseRedirect(detail_url(booking.reference))
    elif isinstance(error, InvalidTransition):
        messages.info(request, _("This booking is no longer waiting for payment."))
        return HttpResponseRedirect(detail_url(booking.reference))
    elif isinstance(error, BookingError):
        messages.error(request, error.message)
    elif isinstance(error, TransientError):
        messages.warning(
            request,
            _(
                "We could not reach the card processor. If your card was charged, we will "
                "complete the booking automatically within a few minutes; you will never be "
                "charged twice."
            ),
        )
    elif isinstance(error, gateways.PaymentGatewayError):
        logger.error("payment of %s refused by Stripe: %s", booking.reference, error)
        messages.error(request, _("The payment could not be processed. Please contact sales."))
    else:
        raise error
    return HttpResponseRedirect(_pay_url(booking.reference))
