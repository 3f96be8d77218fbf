"""Checks of a booking request against its slot class, shared by the site, the admin and
the API so every channel refuses the same things with the same words. Messages name the
limit exceeded; keys are the API's dotted field paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from bookings.models import ExportClassification, HazardType, PayloadDeclaration
from marketplace.models import LanderPosition, SlotClass
from marketplace.money import format_mass

# What each hazard type must say about itself (a positive integer each).
HAZARD_REQUIRED_NUMBERS = {
    HazardType.LITHIUM_BATTERY: "energy_wh",
    HazardType.PRESSURE_VESSEL: "meop_kpa",
    HazardType.PROPELLANT: "mass_g",
}
MAX_INT = 2_147_483_647
# What to say when that number is missing or not a positive whole number.
HAZARD_NUMBER_MESSAGES = {
    "energy_wh": gettext_lazy(
        "Give the lithium battery's energy in watt-hours, as a whole number above zero."
    ),
    "meop_kpa": gettext_lazy(
        "Give the pressure vessel's maximum operating pressure in kPa, as a whole number "
        "above zero."
    ),
    "mass_g": gettext_lazy("Give the propellant's mass in grams, as a whole number above zero."),
}


@dataclass
class PayloadInput:
    """A payload declaration as entered; ``None`` means "not given"."""

    name: str | None = None
    description: str | None = None
    mass_g: int | None = None
    dimensions_mm: list[int] | None = None
    power_w: int | None = None
    data_kbps: int | None = None
    hazards: list[dict[str, Any]] | None = None
    export_classification: str | None = None
    inert_confirmed: bool | None = None
    given: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_declaration(cls, declaration: PayloadDeclaration) -> PayloadInput:
        """What a stored declaration says, to check or merge a change into."""
        return cls(
            name=declaration.name,
            description=declaration.description,
            mass_g=declaration.mass_g,
            dimensions_mm=declaration.dimensions_mm,
            power_w=declaration.power_w,
            data_kbps=declaration.data_kbps,
            hazards=declaration.hazards,
            export_classification=declaration.export_classification,
            inert_confirmed=declaration.inert_confirmed,
        )

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> PayloadInput:
        known = {f for f in cls.__dataclass_fields__ if f != "given"}
        values = {key: value for key, value in data.items() if key in known}
        return cls(**values, given=frozenset(values))


@dataclass
class CustomerInput:
    name: str = ""
    email: str = ""
    organisation: str = ""


def _add(errors: dict[str, list[str]], path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def check_quantity(
    slot_class: SlotClass, *, mass_g: int | None, quantity: int | None
) -> tuple[int, int | None, dict[str, list[str]]]:
    """Resolve the booked mass (and quantity) and check them against the class's minimum,
    maximum and step. Returns ``(mass_g, quantity, errors)``."""
    errors: dict[str, list[str]] = {}
    if slot_class.is_per_unit:
        unit_mass_g = slot_class.unit_mass_g or 0
        if quantity is None:
            _add(errors, "quantity", _("This class is sold per unit: give a quantity."))
            return 0, None, errors
        if mass_g is not None and mass_g != quantity * unit_mass_g:
            _add(errors, "mass_g", _("Give a quantity for this class, not a mass."))
        low, high = slot_class.min_quantity or 1, slot_class.max_quantity or 0
        if quantity < low:
            _add(errors, "quantity", _("The minimum is %(n)s units.") % {"n": low})
        elif quantity > high:
            _add(errors, "quantity", _("The maximum is %(n)s units per booking.") % {"n": high})
        return quantity * unit_mass_g, quantity, errors

    if quantity is not None:
        _add(errors, "quantity", _("This class is sold by mass: give mass_g, not a quantity."))
    if mass_g is None:
        _add(errors, "mass_g", _("Give the mass to book, in grams."))
        return 0, None, errors
    if mass_g < slot_class.min_mass_g:
        _add(
            errors, "mass_g",
            _("The minimum is %(m)s.") % {"m": format_mass(slot_class.min_mass_g)},
        )  # fmt: skip
    elif mass_g > slot_class.max_mass_g:
        _add(
            errors, "mass_g",
            _("The maximum is %(m)s per booking.") % {"m": format_mass(slot_class.max_mass_g)},
        )  # fmt: skip
    elif mass_g % slot_class.mass_step_g:
        _add(
            errors, "mass_g",
            _("Book in steps of %(m)s.") % {"m": format_mass(slot_class.mass_step_g)},
        )  # fmt: skip
    return mass_g, None, errors


def _check_position(
    errors: dict[str, list[str]],
    prefix: str,
    payload: PayloadInput,
    slot_class: SlotClass,
    position: LanderPosition,
) -> None:
    """The position's limits, where tighter than the class's (those are checked already)."""
    if payload.dimensions_mm is not None:
        labels = [_("length"), _("width"), _("height")]
        limits = [position.max_length_mm, position.max_width_mm, position.max_height_mm]
        for label, value, limit, class_limit in zip(
            labels, payload.dimensions_mm, limits, slot_class.max_dimensions_mm, strict=True
        ):
            if limit < value <= class_limit:
                _add(
                    errors, f"{prefix}.dimensions_mm",
                    _("The %(label)s of %(v)s mm exceeds the maximum of %(l)s mm at the "
                      "lander position %(position)s.")
                    % {"label": label, "v": value, "l": limit, "position": position.name},
                )  # fmt: skip
    if (
        payload.power_w is not None
        and position.max_power_w < payload.power_w <= slot_class.max_power_w
    ):
        _add(
            errors, f"{prefix}.power_w",
            _("%(v)s W exceeds the maximum power of %(l)s W at the lander position "
              "%(position)s.")
            % {"v": payload.power_w, "l": position.max_power_w, "position": position.name},
        )  # fmt: skip


def check_payload(
    slot_class: SlotClass,
    payload: PayloadInput | None,
    *,
    booked_mass_g: int,
    prefix: str = "payload",
) -> dict[str, list[str]]:
    """Check a (possibly partial) declaration against the class limits."""
    errors: dict[str, list[str]] = {}
    if payload is None:
        return errors
    if payload.mass_g is not None and booked_mass_g and payload.mass_g > booked_mass_g:
        _add(
            errors, f"{prefix}.mass_g",
            _("The payload weighs more than the %(m)s booked.") % {"m": format_mass(booked_mass_g)},
        )  # fmt: skip
    if payload.dimensions_mm is not None:
        limits = slot_class.max_dimensions_mm
        labels = [_("length"), _("width"), _("height")]
        for label, value, limit in zip(labels, payload.dimensions_mm, limits, strict=True):
            if value > limit:
                _add(
                    errors, f"{prefix}.dimensions_mm",
                    _("The %(label)s of %(v)s mm exceeds the class's maximum of %(l)s mm "
                      "(%(a)s × %(b)s × %(c)s mm).")
                    % {"label": label, "v": value, "l": limit,
                       "a": limits[0], "b": limits[1], "c": limits[2]},
                )  # fmt: skip
    if payload.power_w is not None and payload.power_w > slot_class.max_power_w:
        _add(
            errors, f"{prefix}.power_w",
            _("%(v)s W exceeds the class's maximum power of %(l)s W.")
            % {"v": payload.power_w, "l": slot_class.max_power_w},
        )  # fmt: skip
    position = slot_class.position
    if position is not None:
        # The lander position the class flies in has its own envelope and power budget;
        # where it is tighter than the class's, it is the limit exceeded.
        _check_position(errors, prefix, payload, slot_class, position)
    if (
        payload.data_kbps is not None
        and position is not None
        and payload.data_kbps > position.max_data_kbps
    ):
        _add(
            errors, f"{prefix}.data_kbps",
            _("%(v)s kbps exceeds the position's maximum data rate of %(l)s kbps.")
            % {"v": payload.data_kbps, "l": position.max_data_kbps},
        )  # fmt: skip
    if payload.export_classification is not None and (
        payload.export_classification not in ExportClassification.values
    ):
        _add(errors, f"{prefix}.export_classification", _("Unknown export classification."))
    for index, hazard in enumerate(payload.hazards or []):
        path = f"{prefix}.hazards.{index}"
        kind = hazard.get("type")
        if kind not in HazardType.values:
            _add(errors, f"{path}.type", _("Unknown hazard type."))
            continue
        number_field = HAZARD_REQUIRED_NUMBERS.get(HazardType(kind))
        if number_field is not None:
            number = hazard.get(number_field)
            if not isinstance(number, int) or isinstance(number, bool) or not 0 < number <= MAX_INT:
                _add(errors, f"{path}.{number_field}", str(HAZARD_NUMBER_MESSAGES[number_field]))
        if kind == HazardType.OTHER and not str(hazard.get("description") or "").strip():
            _add(errors, f"{path}.description", _("Describe the hazard."))
    if slot_class.inert_only:
        if payload.hazards:
            _add(
                errors, f"{prefix}.hazards",
                _("This class carries inert items only: no batteries, pressure or propellant."),
            )  # fmt: skip
        if payload.power_w:
            _add(errors, f"{prefix}.power_w", _("This class carries inert items only: no power."))
        if payload.data_kbps:
            _add(errors, f"{prefix}.data_kbps", _("This class carries inert items only: no data."))
    return errors
