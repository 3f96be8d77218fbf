"""The customer's pages for schedule changes and rebooking (``bookings.reaccommodation``):

- ``/bookings/<reference>/schedule-change/``: the booking's open re-accommodation offer, its
  choices (stay; move to another mission's class with room, free; cancel with a full refund)
  and the outcome of earlier offers;
- ``/bookings/<reference>/rebook/``: move a confirmed booking to a later mission with room,
  for the class's rebooking fee, when the payload will not be ready.

Like every booking page, only members of the booking's organisation see them (another
customer's booking answers 404 on every verb); only owners and bookers may answer (403 for
the others). Answers are POSTed forms (CSRF-protected) that redirect to the booking page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from accounts.models import MemberRole, User
from bookings import selectors
from bookings.exceptions import BookingError, BookingValidationError, InsufficientCapacity
from bookings.models import REFERENCE_LENGTH, Booking, BookingStatus, OfferStatus
from bookings.reaccommodation import (
    MOVABLE_MISSION_STATUSES,
    OfferChoice,
    OfferSummary,
    booking_rebook,
    move_targets,
    offer_answer,
    offer_summaries,
    rebooking_fee,
)
from bookings.services import Actor
from marketplace.models import SlotClass


def _user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # login_required guards every view; this is for typing
        raise Http404
    return user


def _member_booking_or_404(request: HttpRequest, reference: str, now: datetime) -> Booking:
    if len(reference) != REFERENCE_LENGTH:
        raise Http404(_("No booking has that reference."))
    try:
        return selectors.booking_get_for_member(user=_user(request), reference=reference, now=now)
    except Booking.DoesNotExist:
        raise Http404(_("No booking has that reference.")) from None


def _can_answer(booking: Booking) -> bool:
    return getattr(booking, "member_role", None) in (MemberRole.OWNER, MemberRole.BOOKER)


def _forbidden(request: HttpRequest, booking: Booking) -> HttpResponse:
    return render(request, "bookings/booking_forbidden.html", {"booking": booking}, status=403)


def _detail_url(booking: Booking) -> str:
    return reverse("bookings:detail", kwargs={"reference": booking.reference})


def _error_text(error: BookingError) -> str:
    if isinstance(error, InsufficientCapacity):
        return _("That class no longer has room for this booking. Choose another one.")
    if isinstance(error, BookingValidationError):
        return " ".join(message for messages in error.fields.values() for message in messages)
    return error.message


def _target_choices(targets: list[SlotClass]) -> list[tuple[int, str]]:
    return [(target.pk, f"{target.mission.code} · {target.display_name}") for target in targets]


class OfferAnswerForm(forms.Form):
    choice = forms.ChoiceField(choices=OfferChoice.choices)
    slot_class = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)

    def __init__(self, *args: Any, summary: OfferSummary, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["choice"]).choices = [
            (value, label) for value, label in OfferChoice.choices if value in summary.choices
        ]
        cast(forms.ChoiceField, self.fields["slot_class"]).choices = _target_choices(
            summary.targets
        )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("choice") == OfferChoice.MOVE and cleaned.get("slot_class") is None:
            self.add_error("slot_class", _("Choose the mission and class to move to."))
        return cleaned


class RebookForm(forms.Form):
    slot_class = forms.TypedChoiceField(coerce=int)

    def __init__(self, *args: Any, targets: list[SlotClass], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["slot_class"]).choices = _target_choices(targets)


ANSWERED = {
    OfferChoice.STAY: gettext_lazy(
        "Booking %(reference)s stays on its mission, with the new dates."
    ),
    OfferChoice.MOVE: gettext_lazy(
        "Booking %(reference)s has moved to mission %(code)s, free of charge."
    ),
    OfferChoice.CANCEL: gettext_lazy("Booking %(reference)s is cancelled. Refund due: %(refund)s."),
}


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def booking_offer(request: HttpRequest, reference: str) -> HttpResponse:
    now = timezone.now()
    booking = _member_booking_or_404(request, reference, now)
    summaries = offer_summaries(booking, now=now)
    if not summaries:
        raise Http404(_("This booking has no schedule-change offer."))
    current = next((summary for summary in summaries if summary.choices), None)
    can_answer = _can_answer(booking)
    form = None
    if current is not None and can_answer:
        form = OfferAnswerForm(request.POST if request.method == "POST" else None, summary=current)
    if request.method == "POST":
        if not can_answer:
            return _forbidden(request, booking)
        if current is None or form is None:
            messages.info(request, _("This offer can no longer be answered."))
            return HttpResponseRedirect(_detail_url(booking))
        if form.is_valid():
            try:
                offer_answer(
                    offer_id=current.offer.pk,
                    choice=form.cleaned_data["choice"],
                    target_slot_class_id=form.cleaned_data.get("slot_class"),
                    actor=Actor.for_user(_user(request)),
                )
            except BookingError as error:
                form.add_error(None, _error_text(error))
            else:
                return _answered(request, booking, form.cleaned_data["choice"])
    context = {
        "booking": booking,
        "status": booking.effective_status,
        "mission": booking.slot_class.mission,
        "current": current,
        "earlier": [summary for summary in summaries if summary is not current],
        "status_labels": dict(OfferStatus.choices),
        "form": form,
        "can_answer": can_answer,
    }
    return render(request, "bookings/offers/offer.html", context)


def _answered(request: HttpRequest, booking: Booking, choice: str) -> HttpResponse:
    booking = Booking.objects.select_related("slot_class__mission").get(pk=booking.pk)
    text = str(ANSWERED[OfferChoice(choice)]) % {
        "reference": booking.reference,
        "code": booking.slot_class.mission.code,
        "refund": booking.refund,
    }
    messages.success(request, text)
    return HttpResponseRedirect(_detail_url(booking))


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def booking_rebook_view(request: HttpRequest, reference: str) -> HttpResponse:
    now = timezone.now()
    booking = _member_booking_or_404(request, reference, now)
    if not _can_answer(booking):
        return _forbidden(request, booking)
    status = booking.effective_status
    open_offer = booking.offers.filter(status=OfferStatus.OPEN, deadline__gt=now).exists()
    movable = (
        status == BookingStatus.CONFIRMED
        and booking.slot_class.mission.status in MOVABLE_MISSION_STATUSES
        and not open_offer
    )
    targets = move_targets(booking, now=now, later_only=True) if movable else []
    form = RebookForm(request.POST if request.method == "POST" else None, targets=targets)
    if request.method == "POST":
        if not movable:
            messages.info(request, _("This booking cannot move to a later mission now."))
            return HttpResponseRedirect(_detail_url(booking))
        if form.is_valid():
            try:
                done = booking_rebook(
                    booking_id=booking.pk,
                    target_slot_class_id=form.cleaned_data["slot_class"],
                    actor=Actor.for_user(_user(request)),
                )
            except BookingError as error:
                form.add_error(None, _error_text(error))
            else:
                messages.success(
                    request,
                    _(
                        "Booking %(reference)s has moved to mission %(code)s. Everything paid "
                        "is carried over; the rebooking fee of %(fee)s will be invoiced."
                    )
                    % {
                        "reference": done.booking.reference,
                        "code": done.booking.slot_class.mission.code,
                        "fee": done.fee,
                    },
                )
                return HttpResponseRedirect(_detail_url(booking))
    context = {
        "booking": booking,
        "status": status,
        "status_label": BookingStatus(status).label,
        "mission": booking.slot_class.mission,
        "movable": movable,
        "open_offer": open_offer,
        "targets": targets,
        "fee": rebooking_fee(booking),
        "fee_percent": booking.slot_class.rebooking_fee_percent,
        "form": form,
    }
    return render(request, "bookings/offers/rebook.html", context)


__all__ = ["booking_offer", "booking_rebook_view"]
