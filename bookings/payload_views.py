"""The "Payload declaration" page: members of the booking's organisation complete or correct
the declaration until the mission's booking cutoff; owners and bookers may change it,
viewers read it. After the cutoff (or once the booking is cancelled or expired) it is
read-only with a message saying why.

The form replaces the whole declaration with what it shows, through
``booking_payload_update`` (the API's PATCH and the admin use the same service, and the
same ``bookings.validation`` checks, so every channel refuses the same things in the same
words). The site shows one hazard of each kind; a declaration with more (made through the
API) is summed up above the form and replaced by what the form sends."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from accounts.models import MemberRole
from bookings.exceptions import BookingError, BookingValidationError
from bookings.forms import HAZARD_FIELDS, DimensionsField, _whole_number
from bookings.models import (
    Booking,
    BookingStatus,
    ExportClassification,
    HazardType,
    PayloadDeclaration,
)
from bookings.payment_views import _booking_or_404  # the member's booking, or 404
from bookings.review import payload_data_complete
from bookings.services import Actor, booking_payload_update
from bookings.validation import MAX_INT, PayloadInput, check_payload
from marketplace.forms import MassUnit, parse_mass_g
from marketplace.models import SlotClass

# Where the service's dotted error paths are shown on this form.
FIELD_FOR_PATH = {
    "payload.name": "name",
    "payload.description": "description",
    "payload.mass_g": "mass",
    "payload.dimensions_mm": "dimensions",
    "payload.power_w": "power_w",
    "payload.data_kbps": "data_kbps",
    "payload.export_classification": "export_classification",
    "payload.inert_confirmed": "inert_confirmed",
    "payload.hazards": "battery_wh",
}
EDITABLE_STATUSES = (BookingStatus.HELD, BookingStatus.CONFIRMED)


class PayloadDeclarationForm(forms.Form):
    """Every field of the declaration, all optional: a declaration may be completed in
    steps. Inert-only classes (capsules) keep their name, message and inert confirmation."""

    name = forms.CharField(label=gettext_lazy("Payload name"), max_length=200, required=False)
    description = forms.CharField(
        label=gettext_lazy("Description"),
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    mass = forms.CharField(
        label=gettext_lazy("Payload mass"),
        max_length=64,
        required=False,
        help_text=gettext_lazy("In grams, or type a unit: 2.5 kg. At most the mass you booked."),
        error_messages={"max_length": gettext_lazy("That is not a mass we can read.")},
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    dimensions = DimensionsField(
        label=gettext_lazy("Size (length × width × height, mm)"),
        required=False,
        error_messages={"incomplete": gettext_lazy("Give all three dimensions in millimetres.")},
    )
    power_w = _whole_number(
        gettext_lazy("Power drawn (W)"),
        minimum=0,
        help_text=gettext_lazy("Leave empty if the payload draws no power."),
    )
    data_kbps = _whole_number(
        gettext_lazy("Data rate (kbps)"),
        minimum=0,
        help_text=gettext_lazy("Leave empty if the payload sends no data."),
    )
    battery_wh = _whole_number(gettext_lazy("Lithium battery: energy (Wh)"), minimum=1)
    pressure_kpa = _whole_number(
        gettext_lazy("Pressure vessel: maximum operating pressure (kPa)"), minimum=1
    )
    propellant_g = _whole_number(gettext_lazy("Propellant: mass (g)"), minimum=1)
    radioactive = forms.BooleanField(
        label=gettext_lazy("The payload carries a radioactive source."), required=False
    )
    other_hazard = forms.CharField(
        label=gettext_lazy("Other hazard: describe it"), max_length=500, required=False
    )
    export_classification = forms.ChoiceField(
        label=gettext_lazy("Export classification"),
        required=False,
        choices=[("", gettext_lazy("Not given yet")), *ExportClassification.choices],
    )
    inert_confirmed = forms.BooleanField(
        label=gettext_lazy("This item is inert: no power, no data, no liquids."), required=False
    )

    def __init__(
        self, *args: Any, slot_class: SlotClass, booked_mass_g: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.slot_class = slot_class
        self.booked_mass_g = booked_mass_g
        self._hazard_fields: list[str] = []
        keep = (
            {"name", "description", "inert_confirmed"}
            if slot_class.inert_only
            else set(self.fields) - {"inert_confirmed"}
        )
        for name in list(self.fields):
            if name not in keep:
                del self.fields[name]

    @property
    def hazard_fields(self) -> list[forms.BoundField]:
        names = [name for name, _kind, _number in HAZARD_FIELDS] + ["radioactive"]
        return [self[name] for name in names if name in self.fields]

    def clean_mass(self) -> int | None:
        text = (self.cleaned_data.get("mass") or "").strip()
        if not text:
            return None
        mass_g = parse_mass_g(text, MassUnit.G)
        if not 0 < mass_g <= MAX_INT:
            raise ValidationError(_("Enter a mass above zero that we can read."), code="mass")
        return mass_g

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors:
            self.add_service_errors(
                check_payload(
                    self.slot_class, self.payload_input(), booked_mass_g=self.booked_mass_g
                )
            )
        return cleaned

    def payload_input(self) -> PayloadInput:
        """The whole declaration as the form shows it (every field counts as given)."""
        cleaned = self.cleaned_data
        values: dict[str, Any] = {
            "name": cleaned.get("name") or "",
            "description": (cleaned.get("description") or "").strip(),
        }
        if self.slot_class.inert_only:
            values["inert_confirmed"] = bool(cleaned.get("inert_confirmed"))
            return PayloadInput.from_mapping(values)
        values.update(
            mass_g=cleaned.get("mass"),
            dimensions_mm=cleaned.get("dimensions"),
            power_w=cleaned.get("power_w"),
            data_kbps=cleaned.get("data_kbps"),
            export_classification=cleaned.get("export_classification") or None,
        )
        hazards: list[dict[str, Any]] = []
        self._hazard_fields = []
        for name, kind, number_key in HAZARD_FIELDS:
            value = cleaned.get(name)
            if value not in (None, ""):
                hazards.append({"type": kind.value, number_key: value})
                self._hazard_fields.append(name)
        if cleaned.get("radioactive"):
            hazards.append({"type": HazardType.RADIOACTIVE_SOURCE.value})
            self._hazard_fields.append("radioactive")
        values["hazards"] = hazards
        return PayloadInput.from_mapping(values)

    def add_service_errors(self, errors: Mapping[str, Iterable[str]]) -> None:
        for path, texts in errors.items():
            name: str | None = FIELD_FOR_PATH.get(path)
            if path.startswith("payload.hazards."):
                index = path.split(".")[2]
                if index.isdigit() and int(index) < len(self._hazard_fields):
                    name = self._hazard_fields[int(index)]
            for text in texts:
                self.add_error(name if name in self.fields else None, text)


def initial_from(declaration: PayloadDeclaration) -> dict[str, Any]:
    initial: dict[str, Any] = {
        "name": declaration.name,
        "description": declaration.description,
        "mass": str(declaration.mass_g) if declaration.mass_g else "",
        "dimensions": declaration.dimensions_mm,
        "power_w": declaration.power_w,
        "data_kbps": declaration.data_kbps,
        "export_classification": declaration.export_classification or "",
        "inert_confirmed": declaration.inert_confirmed,
    }
    for hazard in declaration.hazards or []:
        kind = hazard.get("type")
        for name, field_kind, number_key in HAZARD_FIELDS:
            if kind == field_kind and name not in initial:
                initial[name] = hazard.get(number_key)
        if kind == HazardType.RADIOACTIVE_SOURCE:
            initial["radioactive"] = True
    return initial


def declaration_closed_reason(booking: Booking, *, now: Any) -> str:
    """Why nobody can change the declaration any more (site and admin), or "" if it can
    still change: the booking ended, or the cutoff passed (``booking_payload_update``
    refuses the same)."""
    status = booking.status_at(now)
    if status not in EDITABLE_STATUSES:
        return _("This booking is %(status)s: its payload declaration can no longer change.") % {
            "status": BookingStatus(status).label
        }
    if now >= booking.slot_class.mission.booking_cutoff:
        return _(
            "The booking cutoff has passed: the declaration can no longer change here. Contact "
            "our operations team if something about your payload has changed."
        )
    return ""


def read_only_reason(booking: Booking, *, now: Any) -> str:
    """Why this member cannot change the declaration here, or "" if they can."""
    closed = declaration_closed_reason(booking, now=now)
    if closed:
        return closed
    if getattr(booking, "member_role", None) not in (MemberRole.OWNER, MemberRole.BOOKER):
        return _("Only an owner or booker of the organisation can change the declaration.")
    return ""


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def payload_declaration(request: HttpRequest, reference: str) -> HttpResponse:
    now = timezone.now()
    booking = _booking_or_404(request, reference)
    try:
        declaration = booking.payload  # joined by the selector
    except PayloadDeclaration.DoesNotExist:
        raise Http404(_("This booking has no payload declaration.")) from None
    reason = read_only_reason(booking, now=now)
    form_kwargs: dict[str, Any] = {
        "slot_class": booking.slot_class,
        "booked_mass_g": booking.mass_g,
    }
    if request.method == "POST" and not reason:
        form = PayloadDeclarationForm(request.POST, **form_kwargs)
        if form.is_valid():
            try:
                booking_payload_update(
                    booking_id=booking.pk,
                    payload=form.payload_input(),
                    actor=Actor.for_user(request.user),  # type: ignore[arg-type]
                    now=now,
                )
            except BookingValidationError as exc:
                form.add_service_errors(exc.fields)
            except BookingError as exc:
                messages.error(request, exc.message)
                return HttpResponseRedirect(reverse("bookings:payload", args=[booking.reference]))
            else:
                messages.success(request, _("Your payload declaration is saved."))
                return HttpResponseRedirect(reverse("bookings:detail", args=[booking.reference]))
        status = 400
    else:
        form = PayloadDeclarationForm(initial=initial_from(declaration), **form_kwargs)
        status = 403 if request.method == "POST" else 200
    context = {
        "booking": booking,
        "mission": booking.slot_class.mission,
        "slot_class": booking.slot_class,
        "declaration": declaration,
        "complete": payload_data_complete(declaration),
        "form": form,
        "read_only_reason": reason,
        "several_hazards": len(declaration.hazards or [])
        > len({h.get("type") for h in declaration.hazards or []}),
    }
    return render(request, "bookings/payload_declaration.html", context, status=status)
