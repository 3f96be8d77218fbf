"""The booking pages of the website: place a hold, see it (the countdown, the payment link, the
history), list my bookings, cancel.

Every page needs a signed-in user and shows only bookings of organisations the user belongs
to; another customer's booking answers 404 on every page and verb, exactly like a missing
one. Writes go through ``bookings.services``; domain errors become messages a person reads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import get_language, ngettext
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.models import MemberRole, Organisation, User
from accounts.services import personal_organisation_create
from bookings import plans, selectors, transfers
from bookings.exceptions import (
    BookingError,
    BookingValidationError,
    ChannelNotAllowed,
    CurrencyNotOffered,
    HoldLimitExceeded,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
)
from bookings.forms import AMOUNT_FIELDS, BookingForm, CancelForm, organisation_label
from bookings.models import (
    REFERENCE_LENGTH,
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    HazardType,
    PayloadDeclaration,
)
from bookings.payments import booking_cancel_and_refund, booking_payment_summary
from bookings.services import Actor, booking_hold, refund_due, refund_tier
from marketplace.forms import MassUnit
from marketplace.models import Channel, SlotClass
from marketplace.money import STRIPE_MAX_CHARGE_MINOR, Currency, Money, format_mass
from marketplace.selectors import slot_class_for_quote

# One-time form tokens: issued with each booking form, kept in the session, and spent by the
# hold they place, so a double click or a resubmitted page cannot hold twice.
SESSION_TOKENS = "bookings.form_tokens"
MAX_TOKENS = 20  # a person may have a few booking tabs open; older forms simply expire
CLAIM_PENDING = "pending"
CLAIM_TIMEOUT = 10 * 60  # a hold takes well under a second; the claim outlives any request
RESULT_TIMEOUT = 24 * 60 * 60

LIST_PAGE_SIZE = 25
CANCELLABLE = (BookingStatus.HELD, BookingStatus.CONFIRMED)


def _user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # login_required guards every view; this is for typing
        raise Http404
    return user


# --- placing a hold ----------------------------------------------------------------------


def _slot_class_or_404(code: str, slot_class_id: int) -> SlotClass:
    try:
        slot_class = slot_class_for_quote(slot_class_id=slot_class_id)
    except SlotClass.DoesNotExist:
        raise Http404(_("No slot class has that number.")) from None
    # A class is booked from its own mission's page; one sold only by sales or resellers has
    # no web booking page at all.
    if slot_class.mission.code != code or not slot_class.sells_on(Channel.WEB):
        raise Http404(_("This slot class is not sold online on that mission."))
    return slot_class


def _bookable_organisations(user: User) -> list[Organisation]:
    organisations = selectors.organisations_bookable_by(user=user)
    if not organisations:
        # Sign-up creates it; an account made another way (by sales, say) gets it now.
        organisations = [personal_organisation_create(user=user)]
    return organisations


def _initial(
    request: HttpRequest, slot_class: SlotClass, organisations: list[Organisation]
) -> dict[str, Any]:
    """Start from what the catalogue's quote carried over (mass, unit, quantity, currency)."""
    query = request.GET
    offered = [price.currency for price in slot_class.prices.all()]
    preferred = Currency.JPY if (get_language() or "").startswith("ja") else Currency.USD
    currency = query.get("currency", "")
    if currency not in offered:
        currency = preferred if preferred in offered else (offered[0] if offered else "")
    initial: dict[str, Any] = {"currency": currency, "organisation": str(organisations[0].pk)}
    if slot_class.is_per_unit:
        initial["quantity"] = query.get("quantity", "")[:64] or str(slot_class.min_quantity or 1)
    else:
        unit = query.get("unit", "")
        if unit not in MassUnit.values:
            unit = MassUnit.KG if slot_class.min_mass_g >= 1000 else MassUnit.G
        initial["unit"] = unit
        initial["mass"] = query.get("mass", "")[:64]
    return initial


def _issue_token(request: HttpRequest) -> str:
    tokens: dict[str, str] = request.session.get(SESSION_TOKENS, {})
    token = uuid.uuid4().hex
    tokens[token] = ""
    while len(tokens) > MAX_TOKENS:
        tokens.pop(next(iter(tokens)))
    request.session[SESSION_TOKENS] = tokens
    return token


def _spend_token(request: HttpRequest, token: str, reference: str) -> None:
    tokens: dict[str, str] = request.session.get(SESSION_TOKENS, {})
    tokens[token] = reference
    request.session[SESSION_TOKENS] = tokens
    cache.set(_claim_key(token), reference, RESULT_TIMEOUT)


def _claim_key(token: str) -> str:
    return f"bookings:form-token:{token}"


def _capacity_message(slot_class: SlotClass, error: InsufficientCapacity) -> str:
    if error.available_units is not None:
        if error.available_units < (slot_class.min_quantity or 1):
            return _("This class is sold out.")
        return ngettext(
            "Only %(available)s unit is still available in this class.",
            "Only %(available)s units are still available in this class.",
            error.available_units,
        ) % {"available": f"{error.available_units:,}"}
    if error.available_g < slot_class.min_mass_g:
        return _("This class is sold out.")
    return _("Only %(available)s is still available in this class.") % {
        "available": format_mass(error.available_g)
    }


def _show_domain_error(form: BookingForm, error: BookingError) -> None:
    """Put a refusal of ``booking_hold`` where the person will look for it."""
    amount_field = "quantity" if form.slot_class.is_per_unit else "mass"
    if isinstance(error, BookingValidationError):
        form.add_service_errors(error.fields)
    elif isinstance(error, InsufficientCapacity):
        form.add_error(amount_field, _capacity_message(form.slot_class, error))
    elif isinstance(error, SalesClosed):
        form.add_error(None, _("Sales for this mission have closed: it can no longer be booked."))
    elif isinstance(error, ChannelNotAllowed):
        form.add_error(None, _("This class is not sold online. Our sales team can help."))
    elif isinstance(error, CurrencyNotOffered):
        form.add_error("currency", _("This class is not priced in that currency."))
    elif isinstance(error, HoldLimitExceeded):
        form.add_error(
            None,
            _(
                "This account already holds as much unpaid capacity as it may. Pay for or "
                "cancel a hold first, or book less."
            ),
        )
    else:
        form.add_error(None, _("This booking could not be placed. Please try again."))


def _render_form(
    request: HttpRequest, form: BookingForm, token: str, *, status: int = 200
) -> HttpResponse:
    slot_class = form.slot_class
    context = {
        "form": form,
        "token": token,
        "slot_class": slot_class,
        "mission": slot_class.mission,
    }
    return render(request, "bookings/booking_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def booking_new(request: HttpRequest, code: str, slot_class_id: int) -> HttpResponse:
    slot_class = _slot_class_or_404(code, slot_class_id)
    if not slot_class.mission.is_bookable(timezone.now()):
        context = {"slot_class": slot_class, "mission": slot_class.mission}
        return render(request, "bookings/booking_closed.html", context)
    user = _user(request)
    organisations = _bookable_organisations(user)
    if request.method != "POST":
        initial = _initial(request, slot_class, organisations)
        form = BookingForm(slot_class=slot_class, organisations=organisations, initial=initial)
        _price_initial_amount(form, initial)
        return _render_form(request, form, _issue_token(request))

    form = BookingForm(request.POST, slot_class=slot_class, organisations=organisations)
    token = request.POST.get("token", "")
    tokens: dict[str, str] = request.session.get(SESSION_TOKENS, {})
    if request.POST.get("action") == "price":
        form.is_valid()
        form.keep_errors_only_for(AMOUNT_FIELDS)
        return _render_form(request, form, token if token in tokens else _issue_token(request))
    if token not in tokens:
        form.is_valid()
        form.add_error(
            None, _("This form has expired. Check the details and place the hold again.")
        )
        return _render_form(request, form, _issue_token(request))
    if tokens[token]:
        messages.info(request, _("This booking was already placed; here it is."))
        return redirect("bookings:detail", reference=tokens[token])
    return _place_hold(request, form, token, user)


def _place_hold(request: HttpRequest, form: BookingForm, token: str, user: User) -> HttpResponse:
    claim = _claim_key(token)
    if not cache.add(claim, CLAIM_PENDING, CLAIM_TIMEOUT):
        # The same form is being (or was just) submitted by another request: a double click.
        placed = cache.get(claim)
        if placed and placed != CLAIM_PENDING:
            messages.info(request, _("This booking was already placed; here it is."))
            return redirect("bookings:detail", reference=placed)
        messages.info(request, _("Your booking is being placed; it appears in this list."))
        return redirect("bookings:list")
    booking: Booking | None = None
    try:
        organisation = form.chosen_organisation if form.is_valid() else None
        if organisation is not None and form.mass_g is not None:
            booking = booking_hold(
                slot_class_id=form.slot_class.pk,
                currency=form.cleaned_data["currency"],
                organisation=organisation,
                channel=Channel.WEB,
                actor=Actor.for_user(user),
                mass_g=None if form.slot_class.is_per_unit else form.mass_g,
                quantity=form.quantity_booked,
                payload=form.payload_input(),
                terms_version=form.terms_version,
            )
    except BookingError as error:
        _show_domain_error(form, error)
    finally:
        if booking is None:  # refused or failed: the same form may be sent again
            cache.delete(claim)
    if booking is None:
        return _render_form(request, form, token)
    _spend_token(request, token, booking.reference)
    messages.success(
        request,
        _("Your hold %(reference)s is placed. Pay before it expires to confirm the booking.")
        % {"reference": booking.reference},
    )
    return redirect("bookings:detail", reference=booking.reference)


def _price_initial_amount(form: BookingForm, initial: dict[str, Any]) -> None:
    """Price the amount the quote carried over, if it is one the class sells, so the page
    opens with it: the amount runs through the form's own checks, errors unshown."""
    probe = BookingForm(
        {key: initial.get(key, "") for key in AMOUNT_FIELDS},
        slot_class=form.slot_class,
        organisations=[],
    )
    probe.is_valid()
    form.price, form.rate = probe.price, probe.rate
    form.mass_g, form.quantity_booked = probe.mass_g, probe.quantity_booked


# --- the booking page --------------------------------------------------------------------


def _member_booking_or_404(
    request: HttpRequest, reference: str, now: datetime, *, for_cancel: bool = False
) -> Booking:
    if len(reference) != REFERENCE_LENGTH:
        raise Http404(_("No booking has that reference."))
    try:
        return selectors.booking_get_for_member(
            user=_user(request), reference=reference, now=now, for_cancel=for_cancel
        )
    except Booking.DoesNotExist:
        raise Http404(_("No booking has that reference.")) from None


def _can_manage(booking: Booking) -> bool:
    return getattr(booking, "member_role", None) in (MemberRole.OWNER, MemberRole.BOOKER)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    when: datetime
    what: str
    who: str
    reason: str
    detail: str = ""


def actor_in_words(event: BookingEvent, viewer: User) -> str:
    if event.actor_user_id is not None and event.actor_user_id == viewer.pk:
        return _("You")
    if event.actor.startswith("staff:"):
        return _("Moonslot sales team")
    if event.actor_user is not None:
        return event.actor_user.get_full_name()
    if event.actor.startswith("api:"):
        return _("Reseller, through the API")
    if event.actor.startswith("user:"):
        return _("A member of your organisation")
    return _("Moonslot, automatically")


def _event_label(event_type: str) -> str:
    if event_type in EventType.values:
        return str(EventType(event_type).label)
    # Events the payment flow writes beside the booking's own transitions.
    other = {
        "booking.hold_extended": _("Hold extended while paying"),
        "payment.capture_failed": _("Card payment could not be taken"),
        "payment.released": _("Card authorisation released"),
        "payment.refund_requested": _("Refund requested"),
        "payment.refunded": _("Refunded"),
        # An enterprise hold's completion link (bookings.enterprise).
        "booking.completion_link_sent": _("Completion link sent"),
        "booking.contract_accepted": _("Contract terms accepted"),
        "booking.customer_joined": _("Joined the organisation through the completion link"),
    }
    return other.get(event_type, event_type)


def _timeline(booking: Booking, viewer: User, now: datetime) -> list[TimelineEntry]:
    entries = []
    for event in booking.events.select_related("actor_user"):
        detail = ""
        refund = event.data.get("refund") if isinstance(event.data, dict) else None
        if event.type == EventType.BOOKING_CANCELLED and isinstance(refund, dict):
            amount, currency = refund.get("amount"), refund.get("currency")
            if isinstance(amount, int) and isinstance(currency, str):
                detail = _("Refund due: %(refund)s") % {"refund": Money(amount, currency)}
        entries.append(
            TimelineEntry(
                when=event.created_at,
                what=_event_label(event.type),
                who=actor_in_words(event, viewer),
                reason=event.reason,
                detail=detail,
            )
        )
    if booking.status_at(now) != booking.status and booking.hold_expires_at is not None:
        # Lapsed, but the sweep has not written it yet: the reader sees it anyway.
        entries.append(
            TimelineEntry(
                when=booking.hold_expires_at,
                what=_event_label(EventType.BOOKING_EXPIRED),
                who=_("Moonslot, automatically"),
                reason=_("The hold lapsed before it was paid."),
            )
        )
    return entries


def hazards_in_words(hazards: list[dict[str, Any]]) -> list[str]:
    """A declaration's hazards as a reader says them: "Lithium battery: 50 Wh"."""
    words = []
    for hazard in hazards:
        kind = hazard.get("type")
        label = str(HazardType(kind).label) if kind in HazardType.values else str(kind)
        if kind == HazardType.LITHIUM_BATTERY:
            words.append(f"{label}: {hazard.get('energy_wh')} Wh")
        elif kind == HazardType.PRESSURE_VESSEL:
            words.append(f"{label}: {hazard.get('meop_kpa')} kPa")
        elif kind == HazardType.PROPELLANT:
            words.append(f"{label}: {format_mass(int(hazard.get('mass_g') or 0))}")
        elif hazard.get("description"):
            words.append(f"{label}: {hazard['description']}")
        else:
            words.append(label)
    return words


def hold_clock(seconds: int) -> str:
    """Time left on a hold as a clock (mm:ss, h:mm:ss, or days and hh:mm:ss). The same
    format as static/js/countdown.js, which takes over from it in the browser."""
    seconds = max(0, seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        label = ngettext("%(days)s day", "%(days)s days", days) % {"days": days}
        return f"{label} {hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


@login_required
@require_http_methods(["GET", "HEAD"])
def booking_detail(request: HttpRequest, reference: str) -> HttpResponse:
    now = timezone.now()
    booking = _member_booking_or_404(request, reference, now)
    try:
        payload: PayloadDeclaration | None = booking.payload  # joined by the selector
    except PayloadDeclaration.DoesNotExist:
        payload = None
    status = booking.effective_status
    remaining = 0
    if status == BookingStatus.HELD and booking.hold_expires_at is not None:
        remaining = int((booking.hold_expires_at - now).total_seconds())
    context = {
        "booking": booking,
        "status": status,
        "status_label": BookingStatus(status).label,
        "mission": booking.slot_class.mission,
        "organisation_label": organisation_label(booking.organisation),
        "payload": payload,
        "hazards": hazards_in_words(payload.hazards if payload else []),
        "timeline": _timeline(booking, _user(request), now),
        # Shown by bookings/includes/payment_status.html (the payment flow's panel).
        "payment_summary": booking_payment_summary(booking),
        **_plan_context(booking, status, now),
        "remaining_seconds": remaining,
        "remaining_clock": hold_clock(remaining),
        "can_cancel": _can_manage(booking) and status in CANCELLABLE,
        "can_pay": _can_manage(booking) and status == BookingStatus.HELD,
        "day_one": ngettext("%(days)s day", "%(days)s days", 1),
        "day_other": ngettext("%(days)s day", "%(days)s days", 2),
    }
    return render(request, "bookings/booking_detail.html", context)


def _plan_context(booking: Booking, status: str, now: datetime) -> dict[str, Any]:
    """The payment plan's panel (bookings/includes/payment_plan.html) and, where a bank
    transfer applies (an amount above the card limit), how to pay it. Nothing is read for a
    booking without a payment reference, unless its price is above the card limit; a plan
    costs three queries, whatever its number of instalments."""
    live = status in (BookingStatus.HELD, BookingStatus.CONFIRMED)
    over_limit = booking.price_amount > STRIPE_MAX_CHARGE_MINOR
    if not booking.payment_reference and not (over_limit and status == BookingStatus.HELD):
        return {"money": None}
    money = plans.booking_money_summary(booking, now=now)
    next_amount = money.next_due.outstanding if money.next_due else money.outstanding.amount
    transfer = live and next_amount > STRIPE_MAX_CHARGE_MINOR
    return {
        "money": money if money.has_plan else None,
        "now": now,
        "can_pay_plan": live and _can_manage(booking),
        "transfer_amount": Money(next_amount, booking.currency),
        "bank_details": transfers.bank_details() if transfer else "",
        "payment_reference": plans.payment_reference_ensure(booking) if transfer else "",
    }


# --- my bookings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookingRow:
    booking: Booking
    status: str
    status_label: str
    organisation_label: str


@login_required
@require_http_methods(["GET", "HEAD"])
def booking_list(request: HttpRequest) -> HttpResponse:
    bookings = selectors.booking_list_for_member(user=_user(request))
    page = Paginator(bookings, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = []
    for booking in page:
        status = booking.effective_status
        rows.append(
            BookingRow(
                booking=booking,
                status=status,
                status_label=str(BookingStatus(status).label),
                organisation_label=organisation_label(booking.organisation),
            )
        )
    return render(request, "bookings/booking_list.html", {"page": page, "rows": rows})


# --- cancelling --------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def booking_cancel_view(request: HttpRequest, reference: str) -> HttpResponse:
    now = timezone.now()
    booking = _member_booking_or_404(request, reference, now, for_cancel=True)
    if not _can_manage(booking):
        return render(request, "bookings/booking_forbidden.html", {"booking": booking}, status=403)
    status = booking.effective_status
    detail_url = reverse("bookings:detail", kwargs={"reference": booking.reference})
    if status not in CANCELLABLE:
        if request.method == "POST":
            messages.info(request, _("This booking can no longer be cancelled."))
            return HttpResponseRedirect(detail_url)
        context: dict[str, Any] = {"booking": booking, "status": status, "cancellable": False}
        return render(request, "bookings/booking_cancel.html", context)

    form = CancelForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        return _cancel(request, booking, form.cleaned_data["reason"], detail_url)
    tiers = sorted(booking.slot_class.cancellation_tiers.all(), key=lambda t: -t.days_before_launch)
    context = {
        "booking": booking,
        "status": status,
        "organisation_label": organisation_label(booking.organisation),
        "cancellable": True,
        "form": form,
        "refund": refund_due(booking, now=now),
        "tier": refund_tier(booking, now=now),
        "tiers": tiers,
        "days_before_launch": (booking.slot_class.mission.launch_window_start - now).days,
    }
    return render(request, "bookings/booking_cancel.html", context)


def _cancel(request: HttpRequest, booking: Booking, reason: str, detail_url: str) -> HttpResponse:
    try:
        # Cancels (``services.booking_cancel``) and queues the policy's refund to the card
        # that paid, in the same transaction.
        cancelled = booking_cancel_and_refund(
            booking_id=booking.pk, actor=Actor.for_user(_user(request)), reason=reason
        )
    except InvalidTransition:
        messages.error(request, _("This booking can no longer be cancelled."))
        return HttpResponseRedirect(detail_url)
    if cancelled.status != BookingStatus.CANCELLED:  # it lapsed a moment before
        messages.info(request, _("The hold had already expired; nothing was charged."))
    elif cancelled.refund_amount:
        messages.success(
            request,
            _("Booking %(reference)s is cancelled. Refund due: %(refund)s.")
            % {"reference": cancelled.reference, "refund": cancelled.refund},
        )
    else:
        messages.success(
            request,
            _("Booking %(reference)s is cancelled and its capacity released.")
            % {"reference": cancelled.reference},
        )
    return HttpResponseRedirect(detail_url)


__all__ = [
    "booking_cancel_view",
    "booking_detail",
    "booking_list",
    "booking_new",
    "hold_clock",
]
