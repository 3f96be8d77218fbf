"""Back office for re-accommodation offers: the list (filter by status and by mission, search
by reference) and an answer page where sales answer on behalf of a customer who phoned or
wrote in. Every answer goes through ``bookings.reaccommodation``; nothing here assigns a
field. Registered when ``bookings.admin`` imports this module.

Answering needs the offer's change permission; cancelling (with everything paid refunded)
also needs ``bookings.cancel_booking``, and above the refund approval threshold
(``MOONSLOT_REFUND_APPROVAL_THRESHOLD``) ``bookings.refund_above_threshold``, as any other
cancellation in the back office.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.models import User
from accounts.roles import CANCEL_BOOKING, REFUND_ABOVE_THRESHOLD
from bookings.exceptions import BookingError, BookingValidationError
from bookings.models import Booking, OfferStatus, ReaccommodationOffer
from bookings.reaccommodation import (
    OfferChoice,
    OfferSummary,
    offer_answer,
    offer_status_at,
    offer_summaries,
)
from bookings.services import Actor
from marketplace.money import Money


def _needs_manager(refund: Money) -> bool:
    if refund.amount <= 0:
        return False
    limits: dict[str, int] = getattr(settings, "MOONSLOT_REFUND_APPROVAL_THRESHOLD", {})
    limit = limits.get(refund.currency)
    return limit is None or refund.amount > limit


class StaffAnswerForm(forms.Form):
    choice = forms.ChoiceField(label=gettext_lazy("Answer"), widget=forms.RadioSelect)
    slot_class = forms.TypedChoiceField(
        label=gettext_lazy("Move to"), coerce=int, required=False, empty_value=None
    )
    note = forms.CharField(
        label=gettext_lazy("How the customer answered (kept in the history)"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args: Any, summary: OfferSummary, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["choice"]).choices = [
            (value, label) for value, label in OfferChoice.choices if value in summary.choices
        ]
        cast(forms.ChoiceField, self.fields["slot_class"]).choices = [
            ("", "—"),
            *[
                (
                    target.pk,
                    f"{target.mission.code} · {target.display_name} "
                    f"({target.mission.launch_window_start:%Y-%m-%d})",
                )
                for target in summary.targets
            ],
        ]

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("choice") == OfferChoice.MOVE and cleaned.get("slot_class") is None:
            self.add_error("slot_class", _("Choose the class to move to."))
        return cleaned


class OfferStatusFilter(admin.SimpleListFilter):
    """The status a reader sees: an open offer past its deadline has defaulted already."""

    title = gettext_lazy("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return OfferStatus.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value, now = self.value(), timezone.now()
        if value == OfferStatus.OPEN:
            return queryset.filter(status=OfferStatus.OPEN, deadline__gt=now)
        if value == OfferStatus.DEFAULTED:
            open_past = queryset.filter(status=OfferStatus.OPEN, deadline__lte=now)
            return queryset.filter(status=OfferStatus.DEFAULTED) | open_past
        if value:
            return queryset.filter(status=value)
        return queryset


@admin.register(ReaccommodationOffer)
class ReaccommodationOfferAdmin(admin.ModelAdmin):
    list_display = (
        "booking_link",
        "mission_display",
        "organisation_display",
        "status_display",
        "deadline",
        "moved_to_display",
        "answered_at",
        "answered_by",
    )
    list_filter = (OfferStatusFilter, ("schedule_change__mission", admin.RelatedFieldListFilter))
    list_select_related = (
        "booking__organisation",
        "schedule_change__mission",
        "target_slot_class__mission",
    )
    search_fields = ("booking__reference", "booking__organisation__name")
    search_help_text = gettext_lazy("Booking reference or organisation.")
    ordering = ("deadline", "pk")
    fields = (
        "booking_link",
        "schedule_change",
        "status_display",
        "deadline",
        "moved_to_display",
        "answered_at",
        "answered_by",
        "answer_link",
    )
    readonly_fields = fields

    # Offers are made by schedule changes and answered through the services only.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=gettext_lazy("booking"), ordering="booking__reference")
    def booking_link(self, obj: ReaccommodationOffer) -> str:
        url = reverse("admin:bookings_booking_change", args=[obj.booking_id])
        return format_html('<a href="{}">{}</a>', url, obj.booking.reference)

    @admin.display(description=gettext_lazy("mission"))
    def mission_display(self, obj: ReaccommodationOffer) -> str:
        change = obj.schedule_change
        old, new = change.old_window_start, change.new_window_start
        return f"{change.mission.code}: {old:%Y-%m-%d} → {new:%Y-%m-%d}"

    @admin.display(description=gettext_lazy("organisation"))
    def organisation_display(self, obj: ReaccommodationOffer) -> str:
        return obj.booking.organisation.name

    @admin.display(description=gettext_lazy("status"))
    def status_display(self, obj: ReaccommodationOffer) -> str:
        return str(OfferStatus(offer_status_at(obj, timezone.now())).label)

    @admin.display(description=gettext_lazy("moved to"))
    def moved_to_display(self, obj: ReaccommodationOffer) -> str:
        target = obj.target_slot_class
        return "—" if target is None else f"{target.mission.code} · {target.name}"

    @admin.display(description=gettext_lazy("answer"))
    def answer_link(self, obj: ReaccommodationOffer) -> str:
        if offer_status_at(obj, timezone.now()) != OfferStatus.OPEN:
            return "—"
        url = reverse("admin:bookings_reaccommodationoffer_answer", args=[obj.pk])
        return format_html('<a class="button" href="{}">{}</a>', url, _("Answer for the customer"))

    def get_urls(self) -> list[URLPattern]:
        urls: list[URLPattern] = [
            path(
                "<path:object_id>/answer/",
                self.admin_site.admin_view(self.answer_view),
                name="bookings_reaccommodationoffer_answer",
            )
        ]
        return urls + cast(list[URLPattern], super().get_urls())

    def answer_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        offer = self.get_object(request, unquote(object_id))
        if offer is None:
            raise Http404
        booking = (
            Booking.objects.select_related("slot_class__mission", "payload", "organisation")
            .prefetch_related("slot_class__cancellation_tiers")
            .get(pk=offer.booking_id)
        )
        summary = next(s for s in offer_summaries(booking) if s.offer.pk == offer.pk)
        changelist = reverse("admin:bookings_reaccommodationoffer_changelist")
        if not summary.choices:
            self.message_user(request, _("This offer can no longer be answered."), messages.INFO)
            return HttpResponseRedirect(changelist)
        form = StaffAnswerForm(request.POST if request.method == "POST" else None, summary=summary)
        if request.method == "POST" and form.is_valid():
            choice = form.cleaned_data["choice"]
            if choice == OfferChoice.CANCEL:
                refund = summary.cancel_refund or Money(0, booking.currency)
                allowed = request.user.has_perm(CANCEL_BOOKING) and (
                    not _needs_manager(refund) or request.user.has_perm(REFUND_ABOVE_THRESHOLD)
                )
                if not allowed:
                    raise PermissionDenied
            try:
                offer_answer(
                    offer_id=offer.pk,
                    choice=choice,
                    target_slot_class_id=form.cleaned_data.get("slot_class"),
                    actor=Actor.for_user(cast(User, request.user)),
                    reason=form.cleaned_data["note"],
                )
            except BookingError as error:
                text = (
                    " ".join(m for ms in error.fields.values() for m in ms)
                    if isinstance(error, BookingValidationError)
                    else error.message
                )
                form.add_error(None, text)
            else:
                self.message_user(
                    request,
                    _("Booking %(ref)s: answered “%(choice)s” for the customer.")
                    % {"ref": booking.reference, "choice": OfferChoice(choice).label},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(changelist)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Answer for the customer: booking %(ref)s") % {"ref": booking.reference},
            "offer": offer,
            "booking": booking,
            "summary": summary,
            "form": form,
        }
        return TemplateResponse(request, "bookings/offers/admin_answer.html", context)


__all__ = ["ReaccommodationOfferAdmin"]
