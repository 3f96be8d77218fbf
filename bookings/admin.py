"""Bookings admin for the sales back office.

Nothing here assigns a booking's status, capacity, price or refund: the change page is
read-only for everyone, adding a booking places a hold through ``booking_hold``, and every
action or button goes through a service (``bookings.services``, ``bookings.payments``,
``bookings.admin_services``) after checking the role's permission (``accounts.roles``).
Forcing an action or a button the role does not have answers 403.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import Organisation, OrganisationKind, User
from accounts.roles import (
    CANCEL_BOOKING,
    CONFIRM_BOOKING,
    HOLD_BOOKING,
    REFUND_ABOVE_THRESHOLD,
    REVIEW_PAYLOAD,
)
from bookings.admin_booking_sections import booking_sections
from bookings.admin_money_filters import InstalmentPaymentFilter, OverdueFilter
from bookings.admin_payments import transfer_urls
from bookings.admin_services import (
    PAYLOAD_REVIEW_TRANSITIONS,
    booking_notice_resend,
    payload_review_change,
    refund_needs_manager,
)
from bookings.admin_views import csv_datetime, csv_response
from bookings.exceptions import BookingError, BookingValidationError
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    ExportClassification,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.payments import booking_cancel_and_refund
from bookings.querysets import BookingQuerySet
from bookings.services import Actor, booking_confirm, booking_hold, refund_due
from bookings.validation import MAX_INT, CustomerInput, PayloadInput
from marketplace.models import Channel, MissionStatus, SlotClass
from marketplace.money import Currency, Money, format_mass

MINUTES_PER_DAY = 24 * 60
MAX_HOLD_DAYS = 90


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(cast(User, request.user))


# --- list filters -----------------------------------------------------------------------
class LiveStatusFilter(admin.SimpleListFilter):
    """The status a reader sees: ``held`` is a hold still running, ``expired`` includes
    holds past their expiry that the sweep has not written yet."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return BookingStatus.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Booking]) -> QuerySet[Booking]:
        value = self.value()
        if value not in BookingStatus.values:
            return queryset
        return cast(BookingQuerySet, queryset).with_live_status_in([value], timezone.now())


class SlotClassFilter(admin.SimpleListFilter):
    """Like a related-field filter, but one query: a class's name includes its mission."""

    title = _("slot class")
    parameter_name = "slot_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        classes = SlotClass.objects.select_related("mission").order_by(
            "mission__launch_window_start", "mission__code", "sort_order", "pk"
        )
        return [(str(slot_class.pk), str(slot_class)) for slot_class in classes]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Booking]) -> QuerySet[Booking]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(slot_class_id=int(value))


class ResellerFilter(admin.SimpleListFilter):
    title = _("reseller")
    parameter_name = "reseller"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        resellers = Organisation.objects.filter(kind=OrganisationKind.RESELLER).order_by("name")
        return [(str(pk), name) for pk, name in resellers.values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Booking]) -> QuerySet[Booking]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(
            organisation_id=int(value), organisation__kind=OrganisationKind.RESELLER
        )


# --- the hold form (adding a booking) ----------------------------------------------------
class SlotClassChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        days, minutes = divmod(obj.hold_minutes_admin, MINUTES_PER_DAY)
        hold = (
            ngettext("%(n)d day", "%(n)d days", days) % {"n": days}
            if not minutes
            else _("%(n)d minutes") % {"n": obj.hold_minutes_admin}
        )
        unit = _("per unit") if obj.is_per_unit else _("per kg")
        return f"{obj} ({unit}; sales hold {hold})"


# Where a service's dotted error path lands on this form.
_ERROR_FIELDS = {
    "mass_g": "mass_g",
    "quantity": "quantity",
    "payload.name": "payload_name",
    "payload.description": "payload_description",
    "payload.mass_g": "payload_mass_g",
    "payload.dimensions_mm": "payload_length_mm",
    "payload.power_w": "payload_power_w",
    "payload.export_classification": "payload_export_classification",
}


class BookingHoldForm(forms.Form):
    """Sales placing a hold for a customer organisation (channel "admin")."""

    organisation = forms.ModelChoiceField(
        label=_("organisation"), queryset=Organisation.objects.all()
    )
    slot_class = SlotClassChoiceField(label=_("slot class"), queryset=SlotClass.objects.none())
    mass_g = forms.IntegerField(
        label=_("mass (g)"),
        required=False,
        min_value=1,
        max_value=MAX_INT,
        help_text=_("For classes sold per kilogram, in grams."),
    )
    quantity = forms.IntegerField(
        label=_("quantity"),
        required=False,
        min_value=1,
        max_value=MAX_INT,
        help_text=_("For classes sold per unit."),
    )
    currency = forms.ChoiceField(label=_("currency"), choices=Currency.choices)
    hold_days = forms.IntegerField(
        label=_("hold (days)"),
        required=False,
        min_value=1,
        max_value=MAX_HOLD_DAYS,
        help_text=_("Leave empty for the class's sales hold time."),
    )
    customer_name = forms.CharField(label=_("customer name"), max_length=200, required=False)
    customer_email = forms.EmailField(label=_("customer e-mail"), required=False)
    payload_name = forms.CharField(label=_("payload name"), max_length=200, required=False)
    payload_description = forms.CharField(
        label=_("payload description"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    payload_mass_g = forms.IntegerField(
        label=_("payload mass (g)"), required=False, min_value=1, max_value=MAX_INT
    )
    payload_length_mm = forms.IntegerField(
        label=_("length (mm)"), required=False, min_value=1, max_value=MAX_INT
    )
    payload_width_mm = forms.IntegerField(
        label=_("width (mm)"), required=False, min_value=1, max_value=MAX_INT
    )
    payload_height_mm = forms.IntegerField(
        label=_("height (mm)"), required=False, min_value=1, max_value=MAX_INT
    )
    payload_power_w = forms.IntegerField(
        label=_("power (W)"), required=False, min_value=0, max_value=MAX_INT
    )
    payload_export_classification = forms.ChoiceField(
        label=_("export classification"),
        required=False,
        choices=[("", "—"), *ExportClassification.choices],
    )

    fieldsets = (
        (None, {"fields": ("organisation", "slot_class", ("mass_g", "quantity"), "currency")}),
        (_("Hold"), {"fields": ("hold_days",)}),
        (_("Customer contact"), {"fields": (("customer_name", "customer_email"),)}),
        (
            _("Payload (can be completed later)"),
            {
                "fields": (
                    "payload_name",
                    "payload_description",
                    "payload_mass_g",
                    ("payload_length_mm", "payload_width_mm", "payload_height_mm"),
                    ("payload_power_w", "payload_export_classification"),
                )
            },
        ),
    )

    def __init__(self, *args: Any, admin_site: admin.AdminSite, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slot_class = cast(forms.ModelChoiceField, self.fields["slot_class"])
        slot_class.queryset = (
            SlotClass.objects.filter(mission__status=MissionStatus.ON_SALE, sold_on_admin=True)
            .select_related("mission")
            .order_by("mission__launch_window_start", "mission__code", "sort_order", "pk")
        )
        # Customer organisations run to thousands: search them instead of listing them.
        organisation = cast(forms.ModelChoiceField, self.fields["organisation"])
        organisation.widget = AutocompleteSelect(
            Booking._meta.get_field("organisation"), admin_site
        )
        organisation.widget.choices = organisation.choices

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        dimensions = [cleaned.get(f"payload_{side}_mm") for side in ("length", "width", "height")]
        if any(d is not None for d in dimensions) and any(d is None for d in dimensions):
            self.add_error("payload_length_mm", _("Give all three dimensions, or none."))
        return cleaned

    def payload_input(self) -> PayloadInput:
        data = self.cleaned_data
        values: dict[str, Any] = {}
        if data.get("payload_name"):
            values["name"] = data["payload_name"]
        if data.get("payload_description"):
            values["description"] = data["payload_description"]
        if data.get("payload_mass_g") is not None:
            values["mass_g"] = data["payload_mass_g"]
        if data.get("payload_length_mm") is not None:
            values["dimensions_mm"] = [
                data["payload_length_mm"],
                data["payload_width_mm"],
                data["payload_height_mm"],
            ]
        if data.get("payload_power_w") is not None:
            values["power_w"] = data["payload_power_w"]
        if data.get("payload_export_classification"):
            values["export_classification"] = data["payload_export_classification"]
        return PayloadInput.from_mapping(values)

    def add_service_error(self, exc: BookingError) -> None:
        if isinstance(exc, BookingValidationError):
            for dotted, texts in exc.fields.items():
                field = _ERROR_FIELDS.get(dotted)
                for text in texts:
                    self.add_error(field, text)
            return
        self.add_error(None, exc.message)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label=_("reason"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Kept in the booking's history."),
    )


class ConfirmForm(ReasonForm):
    on_account = forms.BooleanField(
        label=_("confirm on account (invoiced, within the organisation's credit limit)"),
        required=False,
        initial=True,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = False


class PayloadReviewForm(forms.Form):
    to_status = forms.ChoiceField(label=_("new review status"), choices=ReviewStatus.choices)
    reason = forms.CharField(
        label=_("note"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


# --- inlines ----------------------------------------------------------------------------
class _ReadOnlyInline(admin.options.InlineModelAdmin):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PayloadDeclarationInline(_ReadOnlyInline, admin.StackedInline):
    """Shown, never edited here: the customer (site, API) declares; operations move the
    review status with the form below the booking."""

    model = PayloadDeclaration
    fields = (
        "review_status",
        "name",
        "description",
        ("mass_g", "dimensions_display"),
        ("power_w", "data_kbps"),
        "hazards",
        ("export_classification", "inert_confirmed"),
        "updated_at",
    )
    readonly_fields = ("dimensions_display", "updated_at")

    @admin.display(description=_("dimensions (mm)"))
    def dimensions_display(self, obj: PayloadDeclaration) -> str:
        dims = obj.dimensions_mm
        return " × ".join(str(d) for d in dims) if dims else "—"


class BookingEventInline(_ReadOnlyInline, admin.TabularInline):
    """The booking's history, oldest first: who did what, when and why."""

    model = BookingEvent
    fields = ("created_at", "type", "from_status", "to_status", "actor", "reason", "data")
    ordering = ("created_at", "pk")
    verbose_name = _("event")
    verbose_name_plural = _("history")


# --- the booking admin ------------------------------------------------------------------
@dataclass
class CancelRow:
    booking: Booking
    status: str
    refund: Money
    cancellable: bool
    needs_manager: bool


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    change_form_template = "admin/bookings/booking/change_form.html"
    list_display = (
        "reference",
        "organisation",
        "slot_class_display",
        "amount_display",
        "price_display",
        "status_display",
        "channel",
        "hold_expires_at",
        "review_display",
        "created_at",
    )
    list_select_related = ("organisation", "slot_class__mission", "payload")
    list_filter = (
        LiveStatusFilter,
        ("slot_class__mission", admin.RelatedFieldListFilter),
        SlotClassFilter,
        "channel",
        ResellerFilter,
        OverdueFilter,
        InstalmentPaymentFilter,
    )
    search_fields = (
        "reference",
        "customer_name",
        "customer_email",
        "organisation__name",
        "payload__name",
    )
    search_help_text = _("Reference, customer name or e-mail, organisation, or payload name.")
    actions = ["confirm_on_account", "cancel_with_refund", "resend_notice", "export_csv"]
    inlines = [PayloadDeclarationInline, BookingEventInline]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("reference", "status_display"),
                    ("organisation", "channel", "created_by"),
                    ("slot_class", "amount_display"),
                    ("price_display", "on_account"),
                    ("hold_expires_at", "confirmed_at", "cancelled_at", "expired_at"),
                    ("refund_display", "refund_if_cancelled_now"),
                )
            },
        ),
        (
            _("Customer"),
            {"fields": (("customer_name", "customer_email", "customer_organisation"),)},
        ),
        (
            _("Record"),
            {"fields": (("terms_version", "terms_accepted_at"), ("created_at", "updated_at"))},
        ),
    )
    readonly_fields = (
        "status_display",
        "amount_display",
        "price_display",
        "refund_display",
        "refund_if_cancelled_now",
        "updated_at",
    )

    # --- permissions --------------------------------------------------------------------
    # The change form never saves: every change is a service call behind a button.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(HOLD_BOOKING)

    def has_confirm_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CONFIRM_BOOKING)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CANCEL_BOOKING)

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CONFIRM_BOOKING)

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVIEW_PAYLOAD)

    def may_refund(self, request: HttpRequest, refund: Money) -> bool:
        return not refund_needs_manager(refund) or request.user.has_perm(REFUND_ABOVE_THRESHOLD)

    # --- queries ------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Booking]:
        bookings = cast(BookingQuerySet, super().get_queryset(request))
        return bookings.with_live_status(timezone.now())

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # An action the role lacks is not offered; posting it anyway is refused outright
        # rather than answered with Django's "no action selected".
        if request.method == "POST":
            allowed = self.get_actions(request)
            for action in request.POST.getlist("action"):
                if action and action not in allowed:
                    raise PermissionDenied
        return super().changelist_view(request, extra_context)

    # --- columns ------------------------------------------------------------------------
    @admin.display(description=_("slot class"), ordering="slot_class")
    def slot_class_display(self, obj: Booking) -> str:
        return str(obj.slot_class)

    @admin.display(description=_("amount"), ordering="mass_g")
    def amount_display(self, obj: Booking) -> str:
        if obj.quantity is not None:
            return (
                ngettext("%(n)d unit", "%(n)d units", obj.quantity) % {"n": obj.quantity}
                + f" ({format_mass(obj.mass_g)})"
            )
        return format_mass(obj.mass_g)

    @admin.display(description=_("price"), ordering="price_amount")
    def price_display(self, obj: Booking) -> str:
        return str(obj.price)

    @admin.display(description=_("status"), ordering="live_status")
    def status_display(self, obj: Booking) -> str:
        status = obj.effective_status
        label = BookingStatus(status).label
        if status != obj.status:
            return f"{label} ({_('not swept yet')})"
        return str(label)

    @admin.display(description=_("payload review"), ordering="payload__review_status")
    def review_display(self, obj: Booking) -> str:
        try:
            declaration = obj.payload
        except PayloadDeclaration.DoesNotExist:
            return "—"
        return str(ReviewStatus(declaration.review_status).label)

    @admin.display(description=_("refund due"))
    def refund_display(self, obj: Booking) -> str:
        return str(obj.refund) if obj.refund is not None else "—"

    @admin.display(description=_("refund if cancelled now"))
    def refund_if_cancelled_now(self, obj: Booking) -> str:
        if obj.effective_status not in (BookingStatus.HELD, BookingStatus.CONFIRMED):
            return "—"
        return str(refund_due(obj, now=timezone.now()))

    # --- adding = placing a hold ----------------------------------------------------------
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BookingHoldForm(
            request.POST if request.method == "POST" else None, admin_site=self.admin_site
        )
        if request.method == "POST" and form.is_valid():
            booking = self._hold(request, form)
            if booking is not None:
                self.log_addition(request, booking, [{"added": {}}])
                messages.success(
                    request,
                    _("Booking %(ref)s is held until %(until)s.")
                    % {
                        "ref": booking.reference,
                        "until": f"{booking.hold_expires_at:%Y-%m-%d %H:%M}",
                    },
                )
                return HttpResponseRedirect(
                    reverse("admin:bookings_booking_change", args=[booking.pk])
                )
        # The admin's fieldset rendering works for any form; its stubs say ModelForm.
        adminform = helpers.AdminForm(
            cast(Any, form), cast(Any, BookingHoldForm.fieldsets), {}, model_admin=self
        )
        context = {
            **self.admin_site.each_context(request),
            "title": _("Place a hold for a customer"),
            "opts": self.opts,
            "adminform": adminform,
            "form": form,
            "errors": helpers.AdminErrorList(cast(Any, form), []),
            "media": self.media + adminform.media,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/bookings/booking/hold_form.html", context)

    def _hold(self, request: HttpRequest, form: BookingHoldForm) -> Booking | None:
        data = form.cleaned_data
        hold_days = data.get("hold_days")
        try:
            return booking_hold(
                slot_class_id=data["slot_class"].pk,
                currency=data["currency"],
                organisation=data["organisation"],
                channel=Channel.ADMIN,
                actor=_actor(request),
                mass_g=data.get("mass_g"),
                quantity=data.get("quantity"),
                payload=form.payload_input(),
                customer=CustomerInput(
                    name=data.get("customer_name") or "", email=data.get("customer_email") or ""
                ),
                hold_minutes=hold_days * MINUTES_PER_DAY if hold_days else None,
            )
        except BookingError as exc:
            form.add_service_error(exc)
        except SlotClass.DoesNotExist:
            form.add_error("slot_class", _("This slot class no longer exists."))
        return None

    # --- the change page ----------------------------------------------------------------
    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        booking = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if booking is not None:
            context.update(self._buttons(request, booking))
            context.update(booking_sections(request, booking))
        return super().change_view(request, object_id, form_url, context)

    def _buttons(self, request: HttpRequest, booking: Booking) -> dict[str, Any]:
        status = booking.effective_status
        live = status in (BookingStatus.HELD, BookingStatus.CONFIRMED)
        return {
            "can_confirm": self.has_confirm_permission(request) and status == BookingStatus.HELD,
            "can_cancel": self.has_cancel_permission(request) and live,
            "review_form": self._review_form(request, booking) if live else None,
        }

    def _review_form(self, request: HttpRequest, booking: Booking) -> PayloadReviewForm | None:
        if not self.has_review_permission(request):
            return None
        try:
            current = booking.payload.review_status
        except PayloadDeclaration.DoesNotExist:
            return None
        allowed = PAYLOAD_REVIEW_TRANSITIONS.get(current, set())
        choices = [(value, label) for value, label in ReviewStatus.choices if value in allowed]
        if not choices:
            return None
        form = PayloadReviewForm()
        cast(forms.ChoiceField, form.fields["to_status"]).choices = choices
        return form

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Any) -> Any:
            return self.admin_site.admin_view(view)

        return [
            path(
                "<path:object_id>/confirm/",
                wrap(self.confirm_view),
                name="bookings_booking_confirm",
            ),
            path(
                "<path:object_id>/cancel/", wrap(self.cancel_view), name="bookings_booking_cancel"
            ),
            path(
                "<path:object_id>/payload-review/",
                wrap(self.payload_review_view),
                name="bookings_booking_payload_review",
            ),
            # "Record a bank transfer" (bookings.admin_payments).
            *transfer_urls(self),
            *super().get_urls(),
        ]

    def _booking_or_404(self, request: HttpRequest, object_id: str) -> Booking:
        booking = self.get_object(request, unquote(object_id))
        if booking is None:
            raise Http404(_("No such booking."))
        return booking

    def _change_url(self, booking: Booking) -> str:
        return reverse("admin:bookings_booking_change", args=[booking.pk])

    def confirm_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_confirm_permission(request):
            raise PermissionDenied
        booking = self._booking_or_404(request, object_id)
        form = ConfirmForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            on_account = form.cleaned_data["on_account"]
            try:
                booking_confirm(
                    booking_id=booking.pk,
                    actor=_actor(request),
                    on_account=on_account,
                    reason=form.cleaned_data["reason"],
                )
            except BookingError as exc:
                messages.error(request, exc.message)
            else:
                how = _("on account") if on_account else _("by sales")
                self.log_change(request, booking, f"Confirmed {how}.")
                messages.success(request, _("Booking %(ref)s is confirmed.") % {"ref": booking})
            return HttpResponseRedirect(self._change_url(booking))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Confirm booking %(ref)s") % {"ref": booking},
            "opts": self.opts,
            "booking": booking,
            "form": form,
        }
        return TemplateResponse(request, "admin/bookings/booking/confirm.html", context)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        booking = self._booking_or_404(request, object_id)
        rows = self._cancel_rows(request, [booking])
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST":
            if rows[0].needs_manager:
                raise PermissionDenied
            if form.is_valid():
                self._cancel(request, rows, form.cleaned_data["reason"])
                return HttpResponseRedirect(self._change_url(booking))
        return self._cancel_page(request, rows, form, single=booking)

    def payload_review_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_review_permission(request):
            raise PermissionDenied
        booking = self._booking_or_404(request, object_id)
        if request.method != "POST":
            return HttpResponseRedirect(self._change_url(booking))
        form = PayloadReviewForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Choose a review status."))
            return HttpResponseRedirect(self._change_url(booking))
        try:
            declaration = payload_review_change(
                booking_id=booking.pk,
                to_status=form.cleaned_data["to_status"],
                actor=_actor(request),
                reason=form.cleaned_data["reason"],
            )
        except BookingError as exc:
            messages.error(request, exc.message)
        else:
            # "Accepted" clears one stage at a time: say where the payload really is.
            label = ReviewStatus(declaration.review_status).label
            self.log_change(request, booking, f"Payload review set to {label}.")
            messages.success(request, _("The payload review is now %(s)s.") % {"s": label})
        return HttpResponseRedirect(self._change_url(booking))

    # --- cancelling -----------------------------------------------------------------------
    def _cancel_rows(self, request: HttpRequest, bookings: Iterable[Booking]) -> list[CancelRow]:
        now = timezone.now()
        rows = []
        for booking in bookings:
            status = booking.status_at(now)
            refund = refund_due(booking, now=now)
            rows.append(
                CancelRow(
                    booking=booking,
                    status=status,
                    refund=refund,
                    cancellable=status in (BookingStatus.HELD, BookingStatus.CONFIRMED),
                    needs_manager=not self.may_refund(request, refund),
                )
            )
        return rows

    def _cancel(self, request: HttpRequest, rows: list[CancelRow], reason: str) -> None:
        actor = _actor(request)
        cancelled, refused, failed = [], [], []
        for row in rows:
            if not row.cancellable:
                continue
            if row.needs_manager:
                refused.append(row.booking.reference)
                continue
            try:
                # Cancels through booking_cancel and queues the card refund, if any, in the
                # same transaction (what the customer's own cancel does).
                booking = booking_cancel_and_refund(
                    booking_id=row.booking.pk, actor=actor, reason=reason
                )
            except BookingError as exc:
                failed.append(f"{row.booking.reference}: {exc.message}")
                continue
            if booking.status != BookingStatus.CANCELLED:
                continue  # a hold that lapsed meanwhile: expired, not cancelled
            self.log_change(
                request, booking, f"Cancelled; refund due {booking.refund}. Reason: {reason}"
            )
            cancelled.append(booking.reference)
        if cancelled:
            messages.success(
                request,
                ngettext(
                    "Cancelled %(count)d booking.", "Cancelled %(count)d bookings.", len(cancelled)
                )
                % {"count": len(cancelled)},
            )
        if refused:
            messages.warning(
                request,
                _("Not cancelled, the refund needs a sales manager: %(refs)s")
                % {"refs": ", ".join(refused)},
            )
        for text in failed:
            messages.error(request, text)

    def _cancel_page(
        self,
        request: HttpRequest,
        rows: list[CancelRow],
        form: forms.Form,
        *,
        single: Booking | None = None,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": _("Cancel with refund"),
            "opts": self.opts,
            "rows": rows,
            "form": form,
            "single": single,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "threshold_note": _("Refunds above %(limits)s need a sales manager.")
            % {
                "limits": " / ".join(
                    str(Money(amount, currency))
                    for currency, amount in settings.MOONSLOT_REFUND_APPROVAL_THRESHOLD.items()
                )
            },
            "any_cancellable": any(r.cancellable and not r.needs_manager for r in rows),
        }
        return TemplateResponse(request, "admin/bookings/booking/cancel_confirmation.html", context)

    # --- actions ----------------------------------------------------------------------------
    def _each(
        self,
        request: HttpRequest,
        bookings: Iterable[Booking],
        run: Callable[[Booking], object],
        *,
        log_message: str,
        done_message: Callable[[int], str],
    ) -> None:
        """Run a service for each booking (each call is its own transaction): one booking's
        refusal is reported and the others go on; each success is logged to its person."""
        done, failed = 0, []
        for booking in bookings:
            try:
                run(booking)
            except BookingError as exc:
                failed.append(f"{booking.reference}: {exc.message}")
                continue
            self.log_change(request, booking, log_message)
            done += 1
        if done:
            messages.success(request, done_message(done))
        for text in failed:
            messages.error(request, text)

    @admin.action(description=_("Confirm selected on account"), permissions=["confirm"])
    def confirm_on_account(self, request: HttpRequest, queryset: QuerySet[Booking]) -> None:
        if not self.has_confirm_permission(request):
            raise PermissionDenied
        actor = _actor(request)
        self._each(
            request,
            queryset.exclude(status=BookingStatus.CONFIRMED).order_by("pk"),
            lambda booking: booking_confirm(booking_id=booking.pk, actor=actor, on_account=True),
            log_message="Confirmed on account.",
            done_message=lambda n: (
                ngettext("Confirmed %(count)d booking.", "Confirmed %(count)d bookings.", n)
                % {"count": n}
            ),
        )

    @admin.action(description=_("Cancel selected with refund…"), permissions=["cancel"])
    def cancel_with_refund(
        self, request: HttpRequest, queryset: QuerySet[Booking]
    ) -> TemplateResponse | None:
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        bookings = (
            queryset.select_related("organisation", "slot_class__mission")
            .prefetch_related("slot_class__cancellation_tiers")
            .order_by("pk")
        )
        rows = self._cancel_rows(request, bookings)
        if request.POST.get("post") == "yes":
            form = ReasonForm(request.POST)
            if form.is_valid():
                self._cancel(request, rows, form.cleaned_data["reason"])
                return None
        else:
            form = ReasonForm()
        return self._cancel_page(request, rows, form)

    @admin.action(description=_("Resend confirmation"), permissions=["resend"])
    def resend_notice(self, request: HttpRequest, queryset: QuerySet[Booking]) -> None:
        if not self.has_resend_permission(request):
            raise PermissionDenied
        actor = _actor(request)
        self._each(
            request,
            queryset.order_by("pk"),
            lambda booking: booking_notice_resend(booking_id=booking.pk, actor=actor),
            log_message="Resent the booking's notice.",
            done_message=lambda n: (
                ngettext("Queued %(count)d notice.", "Queued %(count)d notices.", n) % {"count": n}
            ),
        )

    @admin.action(description=_("Export CSV"), permissions=["view"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[Booking]
    ) -> StreamingHttpResponse:
        bookings = queryset.select_related(
            "organisation", "slot_class__mission", "payload"
        ).order_by("-created_at", "-pk")
        return csv_response(
            filename=f"bookings-{timezone.now():%Y%m%d-%H%M}.csv",
            header=BOOKING_CSV_HEADER,
            rows=_booking_csv_rows(bookings),
        )


BOOKING_CSV_HEADER = [
    "reference",
    "status",
    "organisation",
    "mission",
    "slot_class",
    "mass_g",
    "quantity",
    "currency",
    "price_minor_units",
    "on_account",
    "refund_minor_units",
    "channel",
    "customer_name",
    "customer_email",
    "payload_name",
    "payload_review",
    "hold_expires_at",
    "confirmed_at",
    "cancelled_at",
    "created_at",
]


def _booking_csv_rows(bookings: QuerySet[Booking]) -> Iterator[list[object]]:
    for booking in bookings.iterator(chunk_size=2000):
        try:
            payload_name, review = booking.payload.name, booking.payload.review_status
        except PayloadDeclaration.DoesNotExist:
            payload_name, review = "", ""
        yield [
            booking.reference,
            booking.effective_status,
            booking.organisation.name,
            booking.slot_class.mission.code,
            booking.slot_class.name,
            booking.mass_g,
            "" if booking.quantity is None else booking.quantity,
            booking.currency,
            booking.price_amount,
            "yes" if booking.on_account else "no",
            "" if booking.refund_amount is None else booking.refund_amount,
            booking.channel,
            booking.customer_name,
            booking.customer_email,
            payload_name,
            review,
            csv_datetime(booking.hold_expires_at),
            csv_datetime(booking.confirmed_at),
            csv_datetime(booking.cancelled_at),
            csv_datetime(booking.created_at),
        ]


# The mission-operations admin lives in modules of its own; importing them registers it.
from bookings import (  # noqa: E402, F401
    admin_billing,  # invoices, receipts and credit notes
    admin_offers,
    admin_operations,
    admin_review,  # the operations queue and the screening decisions
    admin_waitlist,
)
