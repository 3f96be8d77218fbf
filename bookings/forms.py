"""The booking form on the website: how much, in which currency, for which organisation, what
flies, and the terms. Typed text is parsed here (mass with the catalogue's integer parser);
every limit is checked by ``bookings.validation`` — the same functions ``booking_hold`` runs —
so the site refuses exactly what the service refuses, in the same words."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from accounts.models import Organisation, OrganisationKind
from bookings.models import ExportClassification, HazardType
from bookings.validation import MAX_INT, PayloadInput, check_payload, check_quantity
from marketplace.forms import MassUnit, QuoteForm, parse_mass_g
from marketplace.models import SlotClass
from marketplace.money import Currency, Money

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

# The version of the booking terms a customer accepts with a hold; recorded on the booking.
MOONSLOT_TERMS_VERSION = "2026-11"

# The fields that decide the price; "update the price" validates only these.
AMOUNT_FIELDS = frozenset({"mass", "unit", "quantity", "currency"})

# Hazard inputs in the order they are turned into ``PayloadInput.hazards``: field name, hazard
# type, and the number the type must carry (see ``validation.HAZARD_REQUIRED_NUMBERS``).
HAZARD_FIELDS: tuple[tuple[str, HazardType, str], ...] = (
    ("battery_wh", HazardType.LITHIUM_BATTERY, "energy_wh"),
    ("pressure_kpa", HazardType.PRESSURE_VESSEL, "meop_kpa"),
    ("propellant_g", HazardType.PROPELLANT, "mass_g"),
    ("other_hazard", HazardType.OTHER, "description"),
)

# Where the service's dotted error paths are shown on this form.
SERVICE_FIELD_PATHS = {
    "mass_g": "mass",
    "quantity": "quantity",
    "currency": "currency",
    "payload.name": "payload_name",
    "payload.description": "description",
    "payload.mass_g": "payload_mass",
    "payload.dimensions_mm": "dimensions",
    "payload.power_w": "power_w",
    "payload.export_classification": "export_classification",
    "payload.inert_confirmed": "inert_confirmed",
}


def _whole_number(
    label: StrOrPromise, *, minimum: int, help_text: StrOrPromise = ""
) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        min_value=minimum,
        max_value=MAX_INT,
        required=False,
        help_text=help_text,
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "min": minimum}),
    )


class DimensionsWidget(forms.MultiWidget):
    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        labels = (
            (_("Length (mm)"), _("Length")),
            (_("Width (mm)"), _("Width")),
            (_("Height (mm)"), _("Height")),
        )
        widgets = [
            forms.NumberInput(
                attrs={"aria-label": label, "placeholder": short, "inputmode": "numeric", "min": 1}
            )
            for label, short in labels
        ]
        super().__init__(widgets, attrs)

    def decompress(self, value: Any) -> list[Any]:
        return list(value) if value else [None, None, None]


class DimensionsField(forms.MultiValueField):
    """Length × width × height in whole millimetres, as ``[int, int, int]``."""

    widget = DimensionsWidget

    def __init__(self, **kwargs: Any) -> None:
        fields = tuple(forms.IntegerField(min_value=1, max_value=MAX_INT) for _axis in range(3))
        super().__init__(fields, require_all_fields=True, **kwargs)

    def compress(self, data_list: list[Any]) -> list[int] | None:
        return [int(value) for value in data_list] if data_list else None


class BookingForm(forms.Form):
    """A hold request for one slot class. Per-kg classes take ``mass`` and ``unit``, per-unit
    classes ``quantity``. Inert-only classes (message capsules) take a message and the inert
    confirmation; the others a full payload declaration. After ``is_valid()``: ``mass_g``,
    ``quantity``, ``price``, ``organisation`` and ``payload_input()``."""

    organisation = forms.ChoiceField(
        label=_("Book for"),
        error_messages={"invalid_choice": _("You cannot book for that organisation.")},
    )
    # The amount is read exactly as the catalogue's quote reads it: the same fields, the
    # same messages and the same integer parsers (``clean_mass``/``clean_quantity`` below).
    unit = QuoteForm.base_fields["unit"]
    mass = QuoteForm.base_fields["mass"]
    quantity = QuoteForm.base_fields["quantity"]
    currency = QuoteForm.base_fields["currency"]

    payload_name = forms.CharField(
        label=_("Payload name"),
        max_length=200,
        error_messages={"required": _("Give your payload a name.")},
    )
    description = forms.CharField(
        label=_("Description"),
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    payload_mass = forms.CharField(
        label=_("Payload mass"),
        max_length=64,
        help_text=_("In grams, or type a unit: 2.5 kg. At most the mass you book."),
        error_messages={
            "required": _("Enter what the payload weighs."),
            "max_length": _("That is not a mass we can read."),
        },
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    dimensions = DimensionsField(
        label=_("Size (length × width × height, mm)"),
        error_messages={
            "required": _("Give all three dimensions in millimetres."),
            "incomplete": _("Give all three dimensions in millimetres."),
        },
    )
    power_w = _whole_number(
        _("Power drawn (W)"), minimum=0, help_text=_("Leave empty if the payload draws no power.")
    )
    battery_wh = _whole_number(_("Lithium battery: energy (Wh)"), minimum=1)
    pressure_kpa = _whole_number(_("Pressure vessel: maximum operating pressure (kPa)"), minimum=1)
    propellant_g = _whole_number(_("Propellant: mass (g)"), minimum=1)
    other_hazard = forms.CharField(
        label=_("Other hazard: describe it"), max_length=500, required=False
    )
    export_classification = forms.ChoiceField(
        label=_("Export classification"),
        choices=[("", _("Choose…")), *ExportClassification.choices],
        error_messages={"required": _("Choose the payload's export classification.")},
    )
    inert_confirmed = forms.BooleanField(
        label=_("This item is inert: no power, no data, no liquids."),
        error_messages={"required": _("Confirm that the item is inert to book this class.")},
    )
    accept_terms = forms.BooleanField(
        error_messages={"required": _("Accept the booking terms to place the hold.")},
    )

    def __init__(
        self,
        *args: Any,
        slot_class: SlotClass,
        organisations: Sequence[Organisation],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.slot_class = slot_class
        self.terms_version = MOONSLOT_TERMS_VERSION
        self.mass_g: int | None = None
        self.quantity_booked: int | None = None
        self.price: Money | None = None
        self.rate: Money | None = None
        self._organisations = {str(org.pk): org for org in organisations}
        self._hazard_paths: list[str] = []

        organisation_field = cast(forms.ChoiceField, self.fields["organisation"])
        organisation_field.choices = [
            (str(org.pk), organisation_label(org)) for org in organisations
        ]
        if len(organisations) == 1:
            organisation_field.widget = forms.HiddenInput()
        offered = {price.currency for price in slot_class.prices.all()}
        self.fields["mass"].label = _("Mass to book")
        self.fields["quantity"].label = _("Number of units")
        currency_field = cast(forms.ChoiceField, self.fields["currency"])
        currency_field.choices = [(v, label) for v, label in Currency.choices if v in offered]
        self.fields["accept_terms"].label = _(
            "I accept the Moonslot booking terms (version %(version)s)."
        ) % {"version": MOONSLOT_TERMS_VERSION}

        drop: set[str] = set()
        drop |= {"mass", "unit"} if slot_class.is_per_unit else {"quantity"}
        if slot_class.inert_only:
            drop |= {"payload_mass", "dimensions", "power_w", "export_classification"}
            drop |= {name for name, _type, _number in HAZARD_FIELDS}
            self.fields["payload_name"].required = False
            self.fields["payload_name"].help_text = _("Optional: a title for your capsule.")
            description = self.fields["description"]
            description.label = _("Your message")
            description.required = True
            description.error_messages["required"] = _("Write what your capsule carries.")
            description.help_text = _("The text or content your capsule carries to the Moon.")
        else:
            drop.add("inert_confirmed")
        for name in drop:
            del self.fields[name]

    # --- grouping for the template ------------------------------------------------------
    @property
    def hazard_fields(self) -> list[forms.BoundField]:
        return [self[name] for name, _type, _number in HAZARD_FIELDS if name in self.fields]

    @property
    def organisation_choice(self) -> bool:
        return len(self._organisations) > 1

    @property
    def chosen_organisation(self) -> Organisation | None:
        key = self.cleaned_data.get("organisation") if hasattr(self, "cleaned_data") else None
        return self._organisations.get(str(key)) if key is not None else None

    # --- cleaning ------------------------------------------------------------------------
    def full_clean(self) -> None:
        super().full_clean()
        self._describe_errors()

    def _describe_errors(self) -> None:
        # Point each refused input at its messages, so a screen reader says why.
        if not self.is_bound:
            return
        for name in self.errors:
            if name in self.fields:
                field_id = self[name].auto_id
                described_by = [f"{field_id}_errors"]
                if self.fields[name].help_text:
                    described_by.append(f"{field_id}_helptext")
                self.fields[name].widget.attrs["aria-describedby"] = " ".join(described_by)

    clean_mass = QuoteForm.clean_mass
    clean_quantity = QuoteForm.clean_quantity

    def clean_payload_mass(self) -> int | None:
        text = self.cleaned_data.get("payload_mass") or ""
        if not text:
            return None
        mass_g = parse_mass_g(text, MassUnit.G)
        if mass_g > MAX_INT:
            raise ValidationError(_("That is not a mass we can read."), code="too_large")
        if mass_g == 0:
            raise ValidationError(_("Enter a mass above zero."), code="zero")
        return mass_g

    def clean_description(self) -> str:
        return (self.cleaned_data.get("description") or "").strip()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        slot_class = self.slot_class
        amount_ok = not (AMOUNT_FIELDS & set(self.errors))
        if amount_ok:
            mass_g, quantity, errors = check_quantity(
                slot_class, mass_g=cleaned.get("mass"), quantity=cleaned.get("quantity")
            )
            self.add_service_errors(errors)
            if not errors:
                self.mass_g, self.quantity_booked = mass_g, quantity
                currency = cleaned.get("currency")
                self.rate = slot_class.price_for(currency) if currency else None
                if self.rate is not None:
                    self.price = slot_class.total_price(
                        currency=self.rate.currency, mass_g=mass_g, quantity=quantity
                    )
        payload = self.payload_input()
        self.add_service_errors(check_payload(slot_class, payload, booked_mass_g=self.mass_g or 0))
        return cleaned

    def payload_input(self) -> PayloadInput:
        """The declaration as the service takes it, from whatever cleaned so far."""
        cleaned = getattr(self, "cleaned_data", {})
        values: dict[str, Any] = {}
        if cleaned.get("payload_name"):
            values["name"] = cleaned["payload_name"]
        if cleaned.get("description"):
            values["description"] = cleaned["description"]
        if self.slot_class.inert_only:
            values["inert_confirmed"] = bool(cleaned.get("inert_confirmed"))
            return PayloadInput.from_mapping(values)
        for key, name in (
            ("mass_g", "payload_mass"),
            ("dimensions_mm", "dimensions"),
            ("power_w", "power_w"),
            ("export_classification", "export_classification"),
        ):
            if cleaned.get(name) is not None and cleaned.get(name) != "":
                values[key] = cleaned[name]
        hazards: list[dict[str, Any]] = []
        self._hazard_paths = []
        for name, kind, number_key in HAZARD_FIELDS:
            value = cleaned.get(name)
            if value in (None, ""):
                continue
            hazards.append({"type": kind.value, number_key: value})
            self._hazard_paths.append(name)
        values["hazards"] = hazards
        return PayloadInput.from_mapping(values)

    # --- errors from the service ------------------------------------------------------
    def field_for_path(self, path: str) -> str | None:
        """The form field that shows an error keyed by the service's dotted ``path``."""
        if path.startswith("payload.hazards."):
            index = path.split(".")[2]
            if index.isdigit() and int(index) < len(self._hazard_paths):
                return self._hazard_paths[int(index)]
            return None
        name = SERVICE_FIELD_PATHS.get(path)
        if name == "mass" and self.slot_class.is_per_unit:
            name = "quantity"
        return name if name in self.fields else None

    def add_service_errors(self, errors: Mapping[str, Iterable[str]]) -> None:
        for path, messages in errors.items():
            name = self.field_for_path(path)
            for message in messages:
                if name is not None and name in self.errors and message in self.errors[name]:
                    continue
                self.add_error(name, message)

    def keep_errors_only_for(self, names: Iterable[str]) -> None:
        """Forget the errors of every other field: "update the price" checks the amount, and
        should not scold a half-filled declaration."""
        keep = set(names)
        for name in list(self.errors):
            if name not in keep:
                del self.errors[name]
                if name in self.fields:
                    self.fields[name].widget.attrs.pop("aria-describedby", None)


def organisation_label(organisation: Organisation) -> str:
    if organisation.kind == OrganisationKind.PERSONAL:
        return str(OrganisationKind.PERSONAL.label)
    return organisation.name


class CancelForm(forms.Form):
    reason = forms.CharField(
        label=_("Why are you cancelling? (optional)"),
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
