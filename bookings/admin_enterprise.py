"""The back office's enterprise holds: sales place a hold for a customer company for days and
the customer gets a link to complete it (``bookings.enterprise``); a booking's page shows the
link, whether the contract is accepted, and resends the link.

Both pages need ``bookings.hold_booking`` (the sales roles): the link is a credential, so
only those who may place holds see it. They are routed in ``config/urls.py`` under the
admin's prefix (so the staff second-factor middleware guards them) and wrapped in
``admin.site.admin_view``.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.roles import HOLD_BOOKING
from bookings import enterprise
from bookings.admin import BookingHoldForm
from bookings.exceptions import BookingError, BookingValidationError
from bookings.models import Booking
from bookings.services import Actor
from bookings.validation import CustomerInput
from marketplace.models import SlotClass

LANGUAGE_CHOICES = [("en", _("English")), ("ja", _("Japanese"))]

# Where a service's error path lands on the form, beyond the hold form's own.
_ENTERPRISE_FIELDS = ("hold_days", "contract_version", "customer_email", "organisation")


class EnterpriseHoldForm(BookingHoldForm):
    """The sales hold form, with the hold in days (required, bounded), the customer's e-mail
    required (the link goes there), the contract version and the e-mail's language."""

    hold_days = forms.IntegerField(
        label=_("hold (days)"),
        min_value=enterprise.HOLD_DAYS_MIN,
        max_value=enterprise.HOLD_DAYS_MAX,
        initial=14,
        help_text=_("From %(min)d to %(max)d days: how long the customer has to complete it.")
        % {"min": enterprise.HOLD_DAYS_MIN, "max": enterprise.HOLD_DAYS_MAX},
        error_messages={
            "required": _("Give the hold's length in days."),
            "min_value": _("A hold lasts at least %(limit_value)s day."),
            "max_value": _("A hold lasts at most %(limit_value)s days."),
        },
    )
    customer_email = forms.EmailField(
        label=_("customer e-mail"),
        help_text=_("The completion link is sent to this address."),
        error_messages={"required": _("Give the customer's e-mail address: the link goes there.")},
    )
    contract_version = forms.CharField(
        label=_("contract version"),
        max_length=20,
        help_text=_("The contract terms the customer accepts."),
    )
    language = forms.ChoiceField(label=_("e-mail language"), choices=LANGUAGE_CHOICES, initial="en")

    fieldsets: Any = (
        (None, {"fields": ("organisation", "slot_class", ("mass_g", "quantity"), "currency")}),
        (_("Hold and contract"), {"fields": ("hold_days", "contract_version")}),
        (
            _("Customer contact"),
            {"fields": (("customer_name", "customer_email"), "language")},
        ),
        (
            _("Payload (can be completed later)"),
            {"fields": ("payload_name",)},
        ),
    )

    def __init__(self, *args: Any, admin_site: admin.AdminSite, **kwargs: Any) -> None:
        super().__init__(*args, admin_site=admin_site, **kwargs)
        self.fields["contract_version"].initial = settings.MOONSLOT_CONTRACT_VERSION

    def clean_contract_version(self) -> str:
        version = str(self.cleaned_data["contract_version"]).strip()
        if not enterprise.contract_version_valid(version):
            raise forms.ValidationError(
                _("Letters, digits, dots, dashes and underscores only, up to 20 characters.")
            )
        return version

    def add_service_error(self, exc: BookingError) -> None:
        if isinstance(exc, BookingValidationError):
            own = {k: v for k, v in exc.fields.items() if k in _ENTERPRISE_FIELDS}
            for field, texts in own.items():
                for text in texts:
                    self.add_error(field, text)
            rest = {k: v for k, v in exc.fields.items() if k not in own}
            if not rest:
                return
            exc = BookingValidationError(rest)
        super().add_service_error(exc)


class ResendForm(forms.Form):
    language = forms.ChoiceField(label=_("e-mail language"), choices=LANGUAGE_CHOICES, initial="en")


def _staff(request: HttpRequest) -> User:
    if not request.user.has_perm(HOLD_BOOKING):
        raise PermissionDenied
    return cast(User, request.user)


def enterprise_hold_new(request: HttpRequest) -> HttpResponse:
    user = _staff(request)
    form = EnterpriseHoldForm(
        request.POST if request.method == "POST" else None, admin_site=admin.site
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            booking = enterprise.enterprise_hold_place(
                enterprise.EnterpriseHoldRequest(
                    organisation=data["organisation"],
                    slot_class_id=data["slot_class"].pk,
                    currency=data["currency"],
                    hold_days=data["hold_days"],
                    mass_g=data.get("mass_g"),
                    quantity=data.get("quantity"),
                    payload=form.payload_input(),
                    customer=CustomerInput(
                        name=data.get("customer_name") or "", email=data["customer_email"]
                    ),
                    contract_version=data["contract_version"],
                    language=data["language"],
                ),
                actor=Actor.for_user(user),
            )
        except BookingError as exc:
            form.add_service_error(exc)
        except SlotClass.DoesNotExist:
            form.add_error("slot_class", _("This slot class no longer exists."))
        else:
            messages.success(
                request,
                _("Booking %(ref)s is held until %(until)s; the completion link is sent to %(to)s.")
                % {
                    "ref": booking.reference,
                    "until": f"{booking.hold_expires_at:%Y-%m-%d %H:%M}",
                    "to": booking.customer_email,
                },
            )
            return HttpResponseRedirect(reverse("backoffice_enterprise_hold", args=[booking.pk]))
    opts = Booking._meta
    # The admin's fieldset rendering works for any form; its stubs say ModelForm.
    adminform = helpers.AdminForm(
        cast(Any, form), cast(Any, EnterpriseHoldForm.fieldsets), {}, model_admin=None
    )
    context = {
        **admin.site.each_context(request),
        "title": _("Place an enterprise hold"),
        "opts": opts,
        "adminform": adminform,
        "form": form,
        "errors": helpers.AdminErrorList(cast(Any, form), []),
        "media": adminform.media,
    }
    return TemplateResponse(request, "admin/bookings/booking/hold_form.html", context)


def enterprise_hold_detail(request: HttpRequest, booking_id: int) -> HttpResponse:
    user = _staff(request)
    booking = (
        Booking.objects.select_related("organisation", "slot_class__mission")
        .filter(pk=booking_id)
        .first()
    )
    if booking is None or not booking.completion_token:
        raise Http404(_("No enterprise hold has this id."))
    form = ResendForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            enterprise.enterprise_hold_link_resend(
                booking_id=booking.pk,
                actor=Actor.for_user(user),
                language=form.cleaned_data["language"],
            )
        except BookingError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request, _("The link is sent again to %(to)s.") % {"to": booking.customer_email}
            )
        return HttpResponseRedirect(request.path)
    context = {
        **admin.site.each_context(request),
        "title": _("Enterprise hold %(ref)s") % {"ref": booking.reference},
        "opts": Booking._meta,
        "booking": booking,
        "status": booking.status_at(),
        "link": enterprise.completion_url(booking.completion_token),
        "form": form,
    }
    return TemplateResponse(request, "admin/bookings/booking/enterprise_hold.html", context)


urlpatterns: list[URLPattern] = [
    path("new/", admin.site.admin_view(enterprise_hold_new), name="backoffice_enterprise_new"),
    path(
        "<int:booking_id>/",
        admin.site.admin_view(enterprise_hold_detail),
        name="backoffice_enterprise_hold",
    ),
]
