"""The instant quote on a mission page: parse what a person typed, check it against the class's
limits, and price it with ``SlotClass.total_price`` (the one pricing rule).

Mass arrives as text in grams or kilograms and is converted to integer grams with string and
integer arithmetic only, so "2.5 kg" is exactly 2,500 g and no float ever touches it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from marketplace.models import SlotClass
from marketplace.money import Currency, Money, format_mass

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

GRAMS_PER_KG = 1000
KG_DECIMALS = 3  # one gram

# Digits with optional thousands commas (grouped properly, so "2,5" is refused rather than
# silently read as 25), an optional fraction, and an optional unit typed into the box.
_MASS_RE = re.compile(
    r"^(?P<whole>\d{1,3}(?:,\d{3})+|\d*)(?:\.(?P<fraction>\d+))?\s*(?P<unit>kg|g)?$",
    re.IGNORECASE | re.ASCII,
)
_QUANTITY_RE = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d+)$", re.ASCII)
_MINUS_SIGNS = ("-", "\u2212")


class MassUnit(models.TextChoices):
    KG = "kg", _("kg")
    G = "g", _("g")


@dataclass(frozen=True, slots=True)
class Quote:
    slot_class: SlotClass
    currency: str
    mass_g: int
    quantity: int | None
    rate: Money
    total: Money


def _normalise(text: str) -> str:
    # NFKC turns full-width digits and points from a Japanese keyboard into ASCII.
    return unicodedata.normalize("NFKC", text).strip()


def parse_mass_g(text: str, unit: str) -> int:
    """Mass typed as grams or kilograms (up to 3 decimals) to integer grams. A unit typed
    after the number wins over the ``unit`` selector. Raises ``ValidationError``."""
    text = _normalise(text)
    if not text:
        raise ValidationError(_("Enter the mass of your payload."), code="required")
    if text.startswith(_MINUS_SIGNS):
        raise ValidationError(_("Enter a mass above zero."), code="negative")
    match = _MASS_RE.match(text)
    if match is None or not (match["whole"] or match["fraction"]):
        raise ValidationError(
            _("Enter a number such as 2.5 (kg) or 2500 (g)."), code="not_a_number"
        )
    unit = (match["unit"] or unit).lower()
    whole = int(match["whole"].replace(",", "") or "0")
    # Trailing zeros add no precision: "2.500" kg is 2,500 g.
    fraction = (match["fraction"] or "").rstrip("0")
    if unit == MassUnit.G:
        if fraction:
            raise ValidationError(
                _("Enter whole grams, or switch to kg for up to 3 decimals."), code="fraction"
            )
        return whole
    if len(fraction) > KG_DECIMALS:
        raise ValidationError(
            _("Enter kilograms with at most 3 decimals (1 g)."), code="too_precise"
        )
    return whole * GRAMS_PER_KG + int(fraction.ljust(KG_DECIMALS, "0"))


def parse_quantity(text: str) -> int:
    """A whole, positive number of units. Raises ``ValidationError``."""
    text = _normalise(text)
    if not text:
        raise ValidationError(_("Enter how many units you want."), code="required")
    if text.startswith(_MINUS_SIGNS):
        raise ValidationError(_("Enter a number of units above zero."), code="negative")
    if _QUANTITY_RE.match(text) is None:
        raise ValidationError(_("Enter a whole number of units, such as 3."), code="not_a_number")
    return int(text.replace(",", ""))


def mass_problems(slot_class: SlotClass, mass_g: int) -> list[str]:
    """What stops ``mass_g`` being booked on a per-kg class, each naming the limit broken."""
    problems: list[str] = []
    minimum, maximum, step = slot_class.min_mass_g, slot_class.max_mass_g, slot_class.mass_step_g
    if mass_g < minimum:
        problems.append(
            gettext("The minimum per booking in this class is %(limit)s.")
            % {"limit": format_mass(minimum)}
        )
    elif mass_g > maximum:
        problems.append(
            gettext("The maximum per booking in this class is %(limit)s.")
            % {"limit": format_mass(maximum)}
        )
    elif mass_g % step:
        # Limits are multiples of the step, so both neighbours lie within them.
        lower = mass_g // step * step
        problems.append(
            gettext("Mass is sold in steps of %(step)s: try %(lower)s or %(higher)s.")
            % {
                "step": format_mass(step),
                "lower": format_mass(lower),
                "higher": format_mass(lower + step),
            }
        )
    available = slot_class.available_g
    # Above the maximum, what is left matters only if even the maximum no longer fits.
    if available < minimum:
        problems.append(gettext("This class is sold out."))
    elif available < min(mass_g, maximum):
        problems.append(
            gettext("Only %(available)s is still available in this class.")
            % {"available": format_mass(available)}
        )
    return problems


def quantity_problems(slot_class: SlotClass, quantity: int) -> list[str]:
    """What stops ``quantity`` units being booked on a per-unit class."""
    problems: list[str] = []
    minimum, maximum = slot_class.min_quantity or 1, slot_class.max_quantity or 0
    if quantity < minimum:
        problems.append(
            ngettext(
                "The minimum per booking in this class is %(limit)s unit.",
                "The minimum per booking in this class is %(limit)s units.",
                minimum,
            )
            % {"limit": f"{minimum:,}"}
        )
    elif quantity > maximum:
        problems.append(
            ngettext(
                "The maximum per booking in this class is %(limit)s unit.",
                "The maximum per booking in this class is %(limit)s units.",
                maximum,
            )
            % {"limit": f"{maximum:,}"}
        )
    available = slot_class.available_units or 0
    if available < minimum:
        problems.append(gettext("This class is sold out."))
    elif available < min(quantity, maximum):
        problems.append(
            ngettext(
                "Only %(available)s unit is still available in this class.",
                "Only %(available)s units are still available in this class.",
                available,
            )
            % {"available": f"{available:,}"}
        )
    return problems


def _free_number_field(
    *, label: StrOrPromise, inputmode: str, unreadable: StrOrPromise
) -> forms.CharField:
    """Plain text the form parses itself, so every mistake is answered in words that name the
    problem; ``inputmode`` still brings up a number pad on phones."""
    return forms.CharField(
        label=label,
        max_length=64,
        strip=True,
        required=False,
        error_messages={"max_length": unreadable},
        widget=forms.TextInput(attrs={"inputmode": inputmode, "autocomplete": "off"}),
    )


class QuoteForm(forms.Form):
    """A quote for one slot class. Per-kg classes take ``mass`` and ``unit``; per-unit classes
    take ``quantity``. After ``is_valid()``, ``quote`` holds the priced result."""

    slot_class = forms.IntegerField(widget=forms.HiddenInput)
    unit = forms.ChoiceField(
        label=_("Unit"),
        choices=MassUnit.choices,
        error_messages={"required": _("Choose g or kg."), "invalid_choice": _("Choose g or kg.")},
    )
    mass = _free_number_field(
        label=_("Mass"), inputmode="decimal", unreadable=_("That is not a mass we can read.")
    )
    quantity = _free_number_field(
        label=_("Quantity"),
        inputmode="numeric",
        unreadable=_("That is not a number of units we can read."),
    )
    currency = forms.ChoiceField(
        label=_("Currency"),
        error_messages={
            "required": _("Choose a currency."),
            "invalid_choice": _("%(value)s is not offered for this slot class."),
        },
    )

    def __init__(self, *args: Any, slot_class: SlotClass, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot_class_obj = slot_class
        self.quote: Quote | None = None
        offered = {price.currency for price in slot_class.prices.all()}
        currency_field = cast(forms.ChoiceField, self.fields["currency"])
        currency_field.choices = [
            (value, label) for value, label in Currency.choices if value in offered
        ]
        if slot_class.is_per_unit:
            del self.fields["mass"], self.fields["unit"]
        else:
            del self.fields["quantity"]

    def full_clean(self) -> None:
        super().full_clean()
        # Point each refused input at the list of messages so screen readers announce why.
        if self.is_bound and self.errors and isinstance(self.auto_id, str) and self.auto_id:
            errors_id = self.auto_id % "errors"
            for name in self.errors:
                if name in self.fields:
                    self.fields[name].widget.attrs["aria-describedby"] = errors_id

    def clean_mass(self) -> int | None:
        unit = self.cleaned_data.get("unit")
        if unit is None:  # the unit's own error is already shown
            return None
        return parse_mass_g(self.cleaned_data.get("mass") or "", unit)

    def clean_quantity(self) -> int:
        return parse_quantity(self.cleaned_data.get("quantity") or "")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        slot_class = self.slot_class_obj
        if slot_class.is_per_unit:
            quantity = cleaned.get("quantity")
            if quantity is None:
                return cleaned
            for problem in quantity_problems(slot_class, quantity):
                self.add_error("quantity", problem)
            mass_g = quantity * (slot_class.unit_mass_g or 0)
        else:
            quantity = None
            mass_g = cleaned.get("mass")
            if mass_g is None:
                return cleaned
            for problem in mass_problems(slot_class, mass_g):
                self.add_error("mass", problem)
        currency = cleaned.get("currency")
        if currency is None or self.errors:
            return cleaned
        rate = slot_class.price_for(currency)
        if rate is None:  # choices hold only offered currencies; kept for type safety
            self.add_error("currency", _("This class is not priced in that currency."))
            return cleaned
        self.quote = Quote(
            slot_class=slot_class,
            currency=currency,
            mass_g=mass_g,
            quantity=quantity,
            rate=rate,
            total=slot_class.total_price(currency=currency, mass_g=mass_g, quantity=quantity),
        )
        return cleaned
