"""The operations queue (payloads awaiting review, accept and reject) and sales' screening
decisions (clear or deny a booking held by denied-party screening).

The queue is the payload declarations' change list: operations staff only
(``bookings.review_payload``; sales answer 403), oldest in the queue first, filtered by
queue and mission. Accept and reject go through ``payload_review_change``: an accept clears
the current stage (safety, then export, then accepted), a reject offloads the booking with
its class's policy refund. The two screening actions are added to the booking change list
and go through ``bookings.screening``.

Registered by importing this module at the end of ``bookings.admin``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import DateTimeField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.roles import HOLD_BOOKING, REVIEW_PAYLOAD
from bookings.admin import BookingAdmin
from bookings.admin_services import payload_review_change
from bookings.exceptions import BookingError, BookingValidationError
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    PayloadDeclaration,
    ReviewStatus,
    ScreeningStatus,
)
from bookings.payload_views import PayloadDeclarationForm, declaration_closed_reason, initial_from
from bookings.review import REVIEW_QUEUE_STATUSES, safety_review_reasons
from bookings.screening import booking_screening_clear, booking_screening_deny
from bookings.services import Actor, booking_payload_update, refund_due
from marketplace.models import Mission
from marketplace.money import Money

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(cast(User, request.user))


def operations_queue(now: Any = None) -> QuerySet[PayloadDeclaration]:
    """Payloads operations must decide on: in safety or export review on a live booking, or
    data complete on a confirmed one (waiting for an accept). ``queued_since`` is when the
    payload last changed review status (or the booking's creation)."""
    now = now or timezone.now()
    live = Q(booking__status=BookingStatus.CONFIRMED) | Q(
        booking__status=BookingStatus.HELD, booking__hold_expires_at__gt=now
    )
    last_change = (
        BookingEvent.objects.filter(
            booking_id=OuterRef("booking_id"), type=EventType.PAYLOAD_REVIEW_CHANGED
        )
        .order_by("-created_at", "-pk")
        .values("created_at")[:1]
    )
    return (
        PayloadDeclaration.objects.filter(
            (Q(review_status__in=REVIEW_QUEUE_STATUSES) & live)
            | Q(review_status=ReviewStatus.DATA_COMPLETE, booking__status=BookingStatus.CONFIRMED)
        )
        .annotate(
            queued_since=Coalesce(
                Subquery(last_change, output_field=DateTimeField()), "booking__created_at"
            )
        )
        .order_by("queued_since", "pk")
    )


class QueueFilter(admin.SimpleListFilter):
    title = _("queue")
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return [
            (ReviewStatus.SAFETY_REVIEW, ReviewStatus.SAFETY_REVIEW.label),
            (ReviewStatus.EXPORT_REVIEW, ReviewStatus.EXPORT_REVIEW.label),
            (ReviewStatus.DATA_COMPLETE, _("Data complete: awaiting accept")),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[PayloadDeclaration]
    ) -> QuerySet[PayloadDeclaration]:
        if self.value() in ReviewStatus.values:
            return queryset.filter(review_status=self.value())
        return queryset


class MissionFilter(admin.SimpleListFilter):
    title = _("mission")
    parameter_name = "mission"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        missions = Mission.objects.exclude(status__in=["completed", "failed"]).order_by(
            "launch_window_start", "code"
        )
        return [(mission.code, str(mission)) for mission in missions]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[PayloadDeclaration]
    ) -> QuerySet[PayloadDeclaration]:
        if self.value():
            return queryset.filter(booking__slot_class__mission__code=self.value())
        return queryset


class DecisionForm(forms.Form):
    note = forms.CharField(
        label=_("Reason (recorded with the decision)"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": _("Say why: it is recorded in the booking's history.")},
    )


@dataclass
class DecisionRow:
    reference: str
    organisation: str
    detail: str
    consequence: str


def _decision_page(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    *,
    action: str,
    title: str,
    explanation: str,
    submit: str,
    ids: Iterable[int],
    rows: list[DecisionRow],
    form: DecisionForm,
) -> TemplateResponse:
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.opts,
        "explanation": explanation,
        "submit": submit,
        "rows": rows,
        "ids": list(ids),
        "action": action,
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/bookings/decision.html", context)


def _report(request: HttpRequest, done: list[str], failed: list[str], done_text: str) -> None:
    if done:
        messages.success(request, f"{done_text} {', '.join(done)}")
    for text in failed:
        messages.error(request, text)


@admin.register(PayloadDeclaration)
class OperationsQueueAdmin(admin.ModelAdmin):
    """The payloads awaiting operations' review. Read-only rows; decisions are actions."""

    list_display = (
        "reference",
        "name",
        "queue_display",
        "mission_display",
        "organisation_display",
        "booking_status_display",
        "export_classification",
        "hazards_display",
        "queued_since_display",
    )
    list_display_links = None
    list_filter = (QueueFilter, MissionFilter)
    list_select_related = ("booking__organisation", "booking__slot_class__mission")
    search_fields = ("booking__reference", "name", "booking__organisation__name")
    search_help_text = _("Booking reference, payload name or organisation.")
    actions = ["accept_selected", "reject_selected"]
    list_per_page = 50

    # Operations only: sales read payloads on the booking's page.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVIEW_PAYLOAD)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(REVIEW_PAYLOAD)

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVIEW_PAYLOAD)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PayloadDeclaration]:
        return operations_queue().select_related(*self.list_select_related)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # --- the declaration, edited by staff until the cutoff ---------------------------------
    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:booking_id>/declare/",
                self.admin_site.admin_view(self.declare_view),
                name="bookings_payloaddeclaration_declare",
            ),
            *super().get_urls(),
        ]

    def declare_view(self, request: HttpRequest, booking_id: int) -> HttpResponse:
        """Complete or correct a booking's declaration for the customer (sales, who hold
        for enterprise customers, and operations), until the cutoff, through the service
        the site and the API use."""
        user = request.user
        if not (user.has_perm(HOLD_BOOKING) or user.has_perm(REVIEW_PAYLOAD)):
            raise PermissionDenied
        booking = (
            Booking.objects.select_related("slot_class__mission", "organisation", "payload")
            .filter(pk=booking_id)
            .first()
        )
        if booking is None or not hasattr(booking, "payload"):
            raise Http404(_("No such booking."))
        now = timezone.now()
        closed = declaration_closed_reason(booking, now=now)
        kwargs: dict[str, Any] = {"slot_class": booking.slot_class, "booked_mass_g": booking.mass_g}
        change_url = reverse("admin:bookings_booking_change", args=[booking.pk])
        if request.method == "POST" and not closed:
            form = PayloadDeclarationForm(request.POST, **kwargs)
            if form.is_valid():
                try:
                    booking_payload_update(
                        booking_id=booking.pk,
                        payload=form.payload_input(),
                        actor=_actor(request),
                        now=now,
                    )
                except BookingValidationError as exc:
                    form.add_service_errors(exc.fields)
                except BookingError as exc:
                    messages.error(request, exc.message)
                    return HttpResponseRedirect(change_url)
                else:
                    self.log_change(
                        request, booking.payload, "Declaration changed for the customer."
                    )
                    messages.success(request, _("The payload declaration is saved."))
                    return HttpResponseRedirect(change_url)
        else:
            if request.method == "POST":
                raise PermissionDenied
            form = PayloadDeclarationForm(initial=initial_from(booking.payload), **kwargs)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Payload declaration of %(ref)s") % {"ref": booking.reference},
            "opts": self.opts,
            "booking": booking,
            "declaration": booking.payload,
            "form": form,
            "closed": closed,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/bookings/declare.html", context)

    # --- columns ------------------------------------------------------------------------
    @admin.display(description=_("booking"), ordering="booking__reference")
    def reference(self, obj: PayloadDeclaration) -> str:
        url = reverse("admin:bookings_booking_change", args=[obj.booking_id])
        return format_html('<a href="{}">{}</a>', url, obj.booking.reference)

    @admin.display(description=_("queue"), ordering="review_status")
    def queue_display(self, obj: PayloadDeclaration) -> str:
        return str(ReviewStatus(obj.review_status).label)

    @admin.display(description=_("mission"))
    def mission_display(self, obj: PayloadDeclaration) -> str:
        return obj.booking.slot_class.mission.code

    @admin.display(description=_("organisation"))
    def organisation_display(self, obj: PayloadDeclaration) -> str:
        return obj.booking.organisation.name

    @admin.display(description=_("booking status"))
    def booking_status_display(self, obj: PayloadDeclaration) -> str:
        return str(BookingStatus(obj.booking.status).label)

    @admin.display(description=_("safety"))
    def hazards_display(self, obj: PayloadDeclaration) -> str:
        return "; ".join(safety_review_reasons(obj.hazards)) or "—"

    @admin.display(description=_("in the queue since"), ordering="queued_since")
    def queued_since_display(self, obj: PayloadDeclaration) -> Any:
        return getattr(obj, "queued_since", None)

    # --- actions ------------------------------------------------------------------------
    @admin.action(description=_("Accept (clear the current review stage)"), permissions=["review"])
    def accept_selected(self, request: HttpRequest, queryset: QuerySet[PayloadDeclaration]) -> None:
        actor = _actor(request)
        accepted, advanced, failed = [], [], []
        for declaration in queryset:
            reference = declaration.booking.reference
            try:
                result = payload_review_change(
                    booking_id=declaration.booking_id,
                    to_status=ReviewStatus.ACCEPTED,
                    actor=actor,
                    reason="Accepted in the operations queue.",
                )
            except BookingError as exc:
                failed.append(f"{reference}: {exc.message}")
                continue
            label = ReviewStatus(result.review_status).label
            self.log_change(request, declaration, f"Review stage cleared: now {label}.")
            if result.review_status == ReviewStatus.ACCEPTED:
                accepted.append(reference)
            else:
                advanced.append(f"{reference} ({label})")
        _report(request, accepted, failed, str(_("Accepted:")))
        if advanced:
            messages.info(
                request, str(_("Cleared, next review stage:")) + " " + ", ".join(advanced)
            )

    @admin.action(description=_("Reject and offload…"), permissions=["review"])
    def reject_selected(
        self, request: HttpRequest, queryset: QuerySet[PayloadDeclaration]
    ) -> HttpResponse | None:
        declarations = list(
            queryset.select_related("booking__slot_class__mission").prefetch_related(
                "booking__slot_class__cancellation_tiers"
            )
        )
        form = DecisionForm(request.POST if request.POST.get("post") else None)
        if request.POST.get("post") and form.is_valid():
            note = form.cleaned_data["note"]
            done, failed = [], []
            for declaration in declarations:
                try:
                    payload_review_change(
                        booking_id=declaration.booking_id,
                        to_status=ReviewStatus.REJECTED,
                        actor=_actor(request),
                        reason=note,
                    )
                except BookingError as exc:
                    failed.append(f"{declaration.booking.reference}: {exc.message}")
                    continue
                self.log_change(request, declaration, f"Rejected and offloaded: {note}")
                done.append(declaration.booking.reference)
            _report(request, done, failed, str(_("Rejected and offloaded:")))
            return None
        now = timezone.now()
        rows = [
            DecisionRow(
                reference=d.booking.reference,
                organisation=d.booking.organisation.name,
                detail=f"{d.name} · {ReviewStatus(d.review_status).label}",
                consequence=str(
                    _("Cancelled; refund under the policy: %(refund)s")
                    % {"refund": refund_due(d.booking, now=now)}
                ),
            )
            for d in declarations
        ]
        return _decision_page(
            self,
            request,
            action="reject_selected",
            title=str(_("Reject and offload payloads")),
            explanation=str(
                _(
                    "A rejected payload does not fly: its booking is cancelled at once, its "
                    "capacity freed, and the refund its class's cancellation policy gives today "
                    "is paid back. The customer is told by e-mail, with the reason below."
                )
            ),
            submit=str(_("Reject and offload")),
            ids=[d.pk for d in declarations],
            rows=rows,
            form=form,
        )


# --- screening decisions on the booking change list -------------------------------------


def _screening_action(
    *,
    name: str,
    run: Callable[..., Booking],
    title: StrOrPromise,
    explanation: StrOrPromise,
    submit: StrOrPromise,
    done_text: StrOrPromise,
) -> Callable[..., HttpResponse | None]:
    def action(
        modeladmin: BookingAdmin, request: HttpRequest, queryset: QuerySet[Booking]
    ) -> HttpResponse | None:
        bookings = list(queryset.filter(screening_status=ScreeningStatus.MATCH))
        form = DecisionForm(request.POST if request.POST.get("post") else None)
        if request.POST.get("post") and form.is_valid():
            note = form.cleaned_data["note"]
            done, failed = [], []
            for booking in bookings:
                try:
                    result = run(booking_id=booking.pk, actor=_actor(request), note=note)
                except BookingError as exc:
                    failed.append(f"{booking.reference}: {exc.message}")
                    continue
                modeladmin.log_change(request, booking, f"{done_text} {note}")
                done.append(f"{result.reference} ({BookingStatus(result.status).label})")
            _report(request, done, failed, str(done_text))
            return None
        if not bookings:
            messages.warning(request, _("None of these bookings is held for a screening review."))
            return None
        rows = [
            DecisionRow(
                reference=b.reference,
                organisation=b.organisation.name,
                detail=b.screening_note,
                consequence=str(Money(b.price_amount, b.currency)),
            )
            for b in bookings
        ]
        return _decision_page(
            modeladmin,
            request,
            action=name,
            title=str(title),
            explanation=str(explanation),
            submit=str(submit),
            ids=[b.pk for b in bookings],
            rows=rows,
            form=form,
        )

    action.__name__ = name
    return action


clear_screening = admin.action(
    description=_("Clear screening (not the denied party)…"), permissions=["confirm"]
)(
    _screening_action(
        name="clear_screening",
        run=booking_screening_clear,
        title=_("Clear denied-party screening"),
        explanation=(
            _(
                "Clearing records that the customer is not the listed party. A booking paid by "
                "card or asked to be confirmed on account is then confirmed (and the card "
                "charged); one waiting for a bank transfer stays held for you to confirm."
            )
        ),
        submit=_("Clear screening"),
        done_text=_("Screening cleared:"),
    )
)
deny_screening = admin.action(
    description=_("Deny (denied party): cancel…"), permissions=["cancel"]
)(
    _screening_action(
        name="deny_screening",
        run=booking_screening_deny,
        title=_("Deny: the customer is the denied party"),
        explanation=(
            _(
                "Denying cancels the booking at once (it was never confirmed, so nothing is "
                "refunded) and releases any card authorisation: the customer is not charged."
            )
        ),
        submit=_("Deny and cancel"),
        done_text=_("Denied and cancelled:"),
    )
)

# The booking admin's own actions stay in bookings.admin; these two join them, and sales can
# find the bookings waiting for them by their screening status.
BookingAdmin.actions = [*BookingAdmin.actions, clear_screening, deny_screening]
_filters: tuple[Any, ...] = (*BookingAdmin.list_filter, "screening_status")
BookingAdmin.list_filter = _filters

__all__ = ["OperationsQueueAdmin", "clear_screening", "deny_screening", "operations_queue"]
