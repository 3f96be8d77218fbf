"""The waitlist on the website: join a sold-out class's waitlist from the mission page, see
"My waitlist" (each entry's status, place in the queue, and the offer hold to pay once
offered), and withdraw.

Every page needs a signed-in user and shows only entries of organisations the user belongs
to; another customer's entry answers 404, exactly like a missing one. Joining and withdrawing
need the owner or booker role, as booking does. Writes go through ``bookings.waitlist``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import MemberRole, Organisation, User
from accounts.services import personal_organisation_create
from bookings import selectors
from bookings.exceptions import (
    BookingError,
    BookingValidationError,
    ChannelNotAllowed,
    CurrencyNotOffered,
    InvalidTransition,
    SalesClosed,
)
from bookings.forms import organisation_label
from bookings.models import BookingStatus, WaitlistEntry, WaitlistStatus
from bookings.services import Actor
from bookings.validation import check_quantity
from bookings.waitlist import (
    CapacityAvailable,
    waitlist_join,
    waitlist_list_for_member,
    waitlist_withdraw,
)
from marketplace.forms import MassUnit, QuoteForm
from marketplace.models import Channel, SlotClass
from marketplace.money import Currency
from marketplace.selectors import slot_class_for_quote

LIST_PAGE_SIZE = 25
MAX_ID = 2**63 - 1  # a longer number in the URL is simply no entry
MANAGING_ROLES = (MemberRole.OWNER, MemberRole.BOOKER)
WITHDRAWABLE = (WaitlistStatus.WAITING, WaitlistStatus.OFFERED)


def _user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # login_required guards every view; this is for typing
        raise Http404
    return user


class WaitlistForm(forms.Form):
    """How much to wait for, in which currency, for which organisation. The amount is read
    with the catalogue's own fields and parsers; the class's limits are checked by
    ``check_quantity``, as the service checks them."""

    organisation = forms.ChoiceField(
        label=gettext_lazy("Wait for"),
        error_messages={"invalid_choice": gettext_lazy("You cannot book for that organisation.")},
    )
    unit = QuoteForm.base_fields["unit"]
    mass = QuoteForm.base_fields["mass"]
    quantity = QuoteForm.base_fields["quantity"]
    currency = QuoteForm.base_fields["currency"]

    clean_mass = QuoteForm.clean_mass
    clean_quantity = QuoteForm.clean_quantity

    def __init__(
        self,
        *args: Any,
        slot_class: SlotClass,
        organisations: Sequence[Organisation],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.slot_class = slot_class
        self.mass_g: int | None = None
        self.quantity_wanted: int | None = None
        self._organisations = {str(org.pk): org for org in organisations}
        organisation_field = cast(forms.ChoiceField, self.fields["organisation"])
        organisation_field.choices = [
            (str(org.pk), organisation_label(org)) for org in organisations
        ]
        if len(organisations) == 1:
            organisation_field.widget = forms.HiddenInput()
        offered = {price.currency for price in slot_class.prices.all()}
        currency_field = cast(forms.ChoiceField, self.fields["currency"])
        currency_field.choices = [(v, label) for v, label in Currency.choices if v in offered]
        self.fields["mass"].label = _("Mass you need")
        self.fields["quantity"].label = _("Number of units")
        if slot_class.is_per_unit:
            del self.fields["mass"], self.fields["unit"]
        else:
            del self.fields["quantity"]

    @property
    def organisation_choice(self) -> bool:
        return len(self._organisations) > 1

    @property
    def chosen_organisation(self) -> Organisation | None:
        key = self.cleaned_data.get("organisation") if hasattr(self, "cleaned_data") else None
        return self._organisations.get(str(key)) if key is not None else None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if {"mass", "unit", "quantity"} & set(self.errors):
            return cleaned
        mass_g, quantity, errors = check_quantity(
            self.slot_class, mass_g=cleaned.get("mass"), quantity=cleaned.get("quantity")
        )
        self.add_service_errors(errors)
        if not errors:
            self.mass_g, self.quantity_wanted = mass_g, quantity
        return cleaned

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        amount = "quantity" if self.slot_class.is_per_unit else "mass"
        for path, problems in errors.items():
            field = {"mass_g": amount, "quantity": amount, "currency": "currency"}.get(path)
            for problem in problems:
                self.add_error(field if field in self.fields else None, problem)


def _slot_class_or_404(code: str, slot_class_id: int) -> SlotClass:
    if slot_class_id > MAX_ID:
        raise Http404(_("No slot class has that number."))
    try:
        slot_class = slot_class_for_quote(slot_class_id=slot_class_id)
    except SlotClass.DoesNotExist:
        raise Http404(_("No slot class has that number.")) from None
    if slot_class.mission.code != code or not slot_class.sells_on(Channel.WEB):
        raise Http404(_("This slot class is not sold online on that mission."))
    return slot_class


def _bookable_organisations(user: User) -> list[Organisation]:
    organisations = selectors.organisations_bookable_by(user=user)
    return organisations or [personal_organisation_create(user=user)]


def _initial(request: HttpRequest, slot_class: SlotClass) -> dict[str, Any]:
    offered = [price.currency for price in slot_class.prices.all()]
    currency = request.GET.get("currency", "")
    initial: dict[str, Any] = {"currency": currency if currency in offered else offered[0]}
    if slot_class.is_per_unit:
        initial["quantity"] = request.GET.get("quantity", "")[:64] or slot_class.min_quantity
    else:
        unit = request.GET.get("unit", "")
        if unit not in MassUnit.values:
            unit = MassUnit.KG if slot_class.min_mass_g >= 1000 else MassUnit.G
        initial["unit"] = unit
        initial["mass"] = request.GET.get("mass", "")[:64]
    return initial


def _booking_url(slot_class: SlotClass, form: WaitlistForm) -> str:
    """The booking page for the same amount: where a request with room now belongs."""
    path = reverse(
        "bookings:new", kwargs={"code": slot_class.mission.code, "slot_class_id": slot_class.pk}
    )
    query = {key: form.data.get(key, "") for key in ("mass", "unit", "quantity", "currency")}
    return f"{path}?{urlencode({k: v for k, v in query.items() if v})}"


def _show_refusal(form: WaitlistForm, error: BookingError) -> None:
    if isinstance(error, BookingValidationError):
        form.add_service_errors(error.fields)
    elif isinstance(error, SalesClosed):
        form.add_error(None, _("Sales for this mission have closed: it can no longer be booked."))
    elif isinstance(error, ChannelNotAllowed):
        form.add_error(None, _("This class is not sold online. Our sales team can help."))
    elif isinstance(error, CurrencyNotOffered):
        form.add_error("currency", _("This class is not priced in that currency."))
    else:
        form.add_error(None, _("You could not join the waitlist. Please try again."))


@login_required
@require_http_methods(["GET", "POST"])
def waitlist_join_view(request: HttpRequest, code: str, slot_class_id: int) -> HttpResponse:
    slot_class = _slot_class_or_404(code, slot_class_id)
    mission = slot_class.mission
    if not mission.is_bookable(timezone.now()):
        context = {"slot_class": slot_class, "mission": mission}
        return render(request, "bookings/booking_closed.html", context)
    user = _user(request)
    organisations = _bookable_organisations(user)
    if request.method != "POST":
        form = WaitlistForm(
            slot_class=slot_class,
            organisations=organisations,
            initial={**_initial(request, slot_class), "organisation": str(organisations[0].pk)},
        )
        return _render_join(request, form)
    form = WaitlistForm(request.POST, slot_class=slot_class, organisations=organisations)
    organisation = form.chosen_organisation if form.is_valid() else None
    if organisation is None or form.mass_g is None:
        return _render_join(request, form)
    try:
        waitlist_join(
            slot_class_id=slot_class.pk,
            organisation=organisation,
            channel=Channel.WEB,
            actor=Actor.for_user(user),
            currency=form.cleaned_data["currency"],
            mass_g=None if slot_class.is_per_unit else form.mass_g,
            quantity=form.quantity_wanted,
            reuse_identical=True,
        )
    except CapacityAvailable:
        messages.info(
            request,
            _("There is room for that in this class now: you can book it straight away."),
        )
        return redirect(_booking_url(slot_class, form))
    except BookingError as error:
        _show_refusal(form, error)
        return _render_join(request, form)
    messages.success(
        request,
        _(
            "You are on the waitlist. When capacity is freed we place a hold for you and "
            "e-mail you: pay for it before it expires to book."
        ),
    )
    return redirect("bookings:waitlist")


def _render_join(request: HttpRequest, form: WaitlistForm) -> HttpResponse:
    slot_class = form.slot_class
    context = {"form": form, "slot_class": slot_class, "mission": slot_class.mission}
    return render(request, "bookings/waitlist/join.html", context)


@dataclass(frozen=True, slots=True)
class EntryRow:
    entry: WaitlistEntry
    status: str
    status_label: str
    organisation_label: str
    can_withdraw: bool
    offer_live: bool


def _row(entry: WaitlistEntry, now: datetime) -> EntryRow:
    status = str(getattr(entry, "live_status", entry.status))
    offer = entry.offer_booking
    offer_live = (
        status == WaitlistStatus.OFFERED
        and offer is not None
        and offer.status_at(now) == BookingStatus.HELD
    )
    return EntryRow(
        entry=entry,
        status=status,
        status_label=str(WaitlistStatus(status).label),
        organisation_label=organisation_label(entry.organisation),
        can_withdraw=getattr(entry, "member_role", None) in MANAGING_ROLES
        and status in WITHDRAWABLE,
        offer_live=offer_live,
    )


@login_required
@require_http_methods(["GET", "HEAD"])
def waitlist_list_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    entries = waitlist_list_for_member(user=_user(request), now=now)
    page = Paginator(entries, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [_row(entry, now) for entry in page]
    return render(request, "bookings/waitlist/list.html", {"page": page, "rows": rows})


@login_required
@require_POST
def waitlist_withdraw_view(request: HttpRequest, entry_id: int) -> HttpResponse:
    user = _user(request)
    entry = None
    if entry_id <= MAX_ID:
        entry = waitlist_list_for_member(user=user).filter(pk=entry_id).first()
    if entry is None:
        raise Http404(_("No waitlist entry has that number."))
    if getattr(entry, "member_role", None) not in MANAGING_ROLES:
        return render(request, "bookings/waitlist/forbidden.html", {"entry": entry}, status=403)
    try:
        withdrawn = waitlist_withdraw(entry_id=entry.pk, actor=Actor.for_user(user))
    except InvalidTransition:
        messages.error(request, _("This entry can no longer be withdrawn."))
        return redirect("bookings:waitlist")
    if withdrawn.offer_booking_id is not None:
        messages.success(request, _("You declined the offer; its hold is cancelled."))
    else:
        messages.success(request, _("You left the waitlist."))
    return redirect("bookings:waitlist")


__all__ = ["waitlist_join_view", "waitlist_list_view", "waitlist_withdraw_view"]
