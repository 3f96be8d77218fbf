"""Serializers of the reseller API's bookings and events (shared/API.md, "Bookings", "Events").

Input serializers are strict: an unknown field is refused at every level (``colour``,
``payload.colour``, ``payload.hazards.0.colour``), integers must be JSON integers (no bools,
floats or numeric strings) within a 32-bit column, and text must be JSON strings. Optional
payload and customer fields accept ``null`` for "not declared" (in a PATCH, ``null`` clears
the field). The class limits (minimum, maximum, step, dimensions, power) are checked by the
service (``bookings.validation``), so every channel refuses the same things in the same words.

Output serializers give every key of the contract, ``null`` when absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.settings import api_settings

from bookings import plans
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    ExportClassification,
    HazardType,
    InstalmentKind,
    InstalmentStatus,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.validation import HAZARD_REQUIRED_NUMBERS, MAX_INT, CustomerInput, PayloadInput
from marketplace.api.serializers import (
    BlankAsNullCharField,
    MoneySerializer,
    UtcDateTimeField,
    iso_utc,
    money_data,
)
from marketplace.models import Channel, Milestone, Mission, PaymentPlan
from marketplace.money import STRIPE_MAX_CHARGE_MINOR, Money

# Unknown field names are echoed back as error paths; keep them short and printable.
_MAX_ECHOED_NAME = 100


def _enum_schema(choices: type[Any], description: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(choices.values), "description": description}


def _choice_field(choices: type[Any], component: str, description: str) -> type[Any]:
    """A ChoiceField documented as its own named enum component. (Without this the enums
    would be named after their property, e.g. ``TypeEnum`` for the hazard type.)"""

    # The message names the allowed values, never the value sent: DRF's default echoes it,
    # and an echoed NUL character could not be stored with an idempotent response.
    refusal = "Use one of: " + ", ".join(choices.values) + "."

    @extend_schema_field(_enum_schema(choices, description), component_name=component)
    class NamedChoiceField(serializers.ChoiceField):
        default_error_messages = {"invalid_choice": refusal}

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(choices=choices.choices, **kwargs)

    NamedChoiceField.__name__ = NamedChoiceField.__qualname__ = f"{component}Field"
    return NamedChoiceField


BookingStatusField = _choice_field(
    BookingStatus,
    "BookingStatusEnum",
    "held → confirmed → cancelled; held → expired; held → cancelled. A hold past its "
    "hold_expires_at reads expired before any sweep. Statuses may grow: accept unknown ones.",
)
ReviewStatusField = _choice_field(
    ReviewStatus,
    "ReviewStatusEnum",
    "The payload's own review, beside the booking status. Values may grow.",
)
HazardTypeField = _choice_field(
    HazardType,
    "HazardTypeEnum",
    "lithium_battery needs energy_wh, pressure_vessel meop_kpa, propellant mass_g, "
    "other a description.",
)
ExportClassificationField = _choice_field(
    ExportClassification, "ExportClassificationEnum", "The payload's export control status."
)
InstalmentKindField = _choice_field(
    InstalmentKind,
    "InstalmentKindEnum",
    "deposit (paid to confirm the hold), instalment (a later share), or full (a plan of one "
    "payment). Values may grow.",
)
InstalmentStatusField = _choice_field(
    InstalmentStatus,
    "InstalmentStatusEnum",
    "due, paid, or cancelled (the booking ended before it was paid). Values may grow.",
)
MilestoneField = _choice_field(
    Milestone,
    "MilestoneEnum",
    "What an instalment waits for: payload_accepted (by review) or payload_integrated (on the "
    "lander). Values may grow.",
)


# --- input ----------------------------------------------------------------------------


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: ``true``, ``2.0`` and ``"2"`` are refused, not coerced."""

    default_error_messages = {"invalid": "A whole number is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    """A JSON string: numbers and booleans are refused, not turned into text."""

    default_error_messages = {"invalid": "A string is required."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictEmailField(serializers.EmailField):
    default_error_messages = {"invalid": "Enter a valid e-mail address."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


def _positive(help_text: str, **kwargs: Any) -> StrictIntegerField:
    return StrictIntegerField(min_value=1, max_value=MAX_INT, help_text=help_text, **kwargs)


def _text(max_length: int, help_text: str) -> StrictCharField:
    return StrictCharField(
        max_length=max_length,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text=help_text,
    )


def _echoed(name: str) -> str:
    if name.isprintable() and len(name) <= _MAX_ECHOED_NAME:
        return name
    return json.dumps(name[:_MAX_ECHOED_NAME])[1:-1]


_T = TypeVar("_T")
# drf-spectacular's own name and form for "null" in a oneOf (see its
# ENUM_ADD_EXPLICIT_BLANK_NULL_CHOICE), so both can coexist in one document.
NULL_COMPONENT = "NullEnum"


class DocumentedSerializer(serializers.Serializer[_T]):
    """Base of this module's serializers, for how their schema is written
    (``DocumentedSerializerSchema``)."""


class StrictSerializer(DocumentedSerializer[Any]):
    """Refuses fields it does not declare, naming each (``{"colour": ["Unknown field."]}``),
    together with the errors of the fields it does declare."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = (
            {_echoed(str(name)): ["Unknown field."] for name in data if name not in self.fields}
            if isinstance(data, Mapping)
            else {}
        )
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not unknown:
                raise
            detail = exc.detail
            known = (
                detail if isinstance(detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: detail}
            )
            raise serializers.ValidationError({**known, **unknown}) from exc
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class DocumentedSerializerSchema(OpenApiSerializerExtension):
    """Two fixes to what drf-spectacular writes for this module's serializers:

    - a nullable nested object or enum comes out as ``allOf: [$ref], nullable: true``, which
      OpenAPI 3.0 validators read as "must match the $ref" (``nullable`` only widens a
      ``type`` in the same schema object), so ``null`` is refused; it is written
      ``oneOf: [$ref, NullEnum]`` instead, with ``NullEnum`` = ``{enum: [null]}``;
    - a strict (input) serializer says it refuses unknown fields:
      ``additionalProperties: false``.
    """

    target_class = DocumentedSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(
            self.target, direction, bypass_extensions=True
        )
        properties: dict[str, Any] = schema.get("properties", {})
        for name, prop in properties.items():
            refs = prop.get("allOf", [])
            if prop.get("nullable") and len(refs) == 1 and "$ref" in refs[0]:
                null = ResolvedComponent(
                    name=NULL_COMPONENT,
                    type=ResolvedComponent.SCHEMA,
                    schema={"enum": [None]},
                    object=NULL_COMPONENT,
                )
                auto_schema.registry.register_on_missing(null)
                rest = {k: v for k, v in prop.items() if k not in ("allOf", "nullable")}
                properties[name] = {"oneOf": [refs[0], null.ref], **rest}
        if isinstance(self.target, StrictSerializer):
            schema["additionalProperties"] = False
        return schema


@extend_schema_serializer(component_name="Hazard")
class HazardInputSerializer(StrictSerializer):
    """One hazard: its type and the figure that type needs."""

    type = HazardTypeField()
    energy_wh = _positive("Energy in watt-hours (lithium_battery).", required=False)
    meop_kpa = _positive(
        "Maximum expected operating pressure in kPa (pressure_vessel).", required=False
    )
    mass_g = _positive("Propellant mass in grams (propellant).", required=False)
    description = StrictCharField(
        max_length=1000,
        required=False,
        allow_blank=True,
        help_text="What the hazard is (required for other).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        number_field = HAZARD_REQUIRED_NUMBERS.get(HazardType(attrs["type"]))
        if number_field is not None and attrs.get(number_field) is None:
            errors[number_field] = [_("Required for a %(type)s.") % {"type": attrs["type"]}]
        if attrs["type"] == HazardType.OTHER and not (attrs.get("description") or "").strip():
            errors["description"] = [_("Describe the hazard.")]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


@extend_schema_serializer(component_name="Payload")
class PayloadInputSerializer(StrictSerializer):
    """What flies. Every field is optional; ``null`` means "not declared"."""

    name = _text(200, "What the payload is called.")
    description = _text(10_000, "What it is and does.")
    mass_g = _positive(
        "Declared mass in grams; at most the booked mass.", required=False, allow_null=True
    )
    dimensions_mm = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=MAX_INT),
        min_length=3,
        max_length=3,
        required=False,
        allow_null=True,
        help_text="[length, width, height] in millimetres, each within the class's maximum.",
    )
    power_w = StrictIntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        allow_null=True,
        help_text="Power drawn in watts (0: none), at most the class's maximum.",
    )
    data_kbps = StrictIntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        allow_null=True,
        help_text="Data rate in kbit/s (0: none), at most the lander position's maximum.",
    )
    # DRF's ListSerializer takes max_length; the stubs do not know it yet.
    hazards = HazardInputSerializer(  # type: ignore[call-arg]
        many=True, required=False, allow_null=True, max_length=50, help_text="[] if inert."
    )
    export_classification = ExportClassificationField(required=False, allow_null=True)

    def validate_hazards(self, value: list[Any] | None) -> list[Any] | None:
        # DRF hands the list's allow_null down to its items: a null hazard must be refused
        # here, or it reaches the service as None.
        if value is not None and any(item is None for item in value):
            raise serializers.ValidationError("Each hazard is an object; null is not a hazard.")
        return value


# Documented as PatchedPayloadRequest: drf-spectacular's name for the PATCH form of Payload.
@extend_schema_serializer(component_name="Payload")
class PayloadPatchInputSerializer(PayloadInputSerializer):
    """The fields sent replace those fields; the rest stay; null clears a field. At least
    one field."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(_("Send at least one payload field to change."))
        return attrs


@extend_schema_serializer(component_name="Customer")
class CustomerInputSerializer(StrictSerializer):
    """The reseller's end customer (Moonslot never e-mails them)."""

    name = _text(200, "The customer's name.")
    email = StrictEmailField(
        max_length=254, required=False, allow_blank=True, allow_null=True, help_text="E-mail."
    )
    organisation = _text(200, "The customer's company or institution.")


def payload_input(data: Mapping[str, Any]) -> PayloadInput:
    """Validated payload fields as the services take them; ``given`` holds the ones sent."""
    values = dict(data)
    if values.get("hazards") is not None:
        values["hazards"] = [dict(hazard) for hazard in values["hazards"]]
    return PayloadInput.from_mapping(values)


def customer_input(data: Mapping[str, Any]) -> CustomerInput:
    return CustomerInput(
        name=data.get("name") or "",
        email=data.get("email") or "",
        organisation=data.get("organisation") or "",
    )


@extend_schema_field(
    {
        "type": "string",
        "pattern": "^[A-Z]{3}$",
        "example": "JPY",
        "description": "ISO 4217 code: JPY or USD, among those the class's prices offer. "
        "A code the class does not offer is 400 currency_not_offered.",
    }
)
class CurrencyCodeField(StrictCharField):
    """Any three capitals pass here, so a code the class does not price (EUR) reaches the
    service and is refused as currency_not_offered rather than as a malformed value."""

    default_error_messages = {"invalid": "Give an ISO 4217 currency code such as JPY or USD."}

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if len(value) != 3 or not value.isascii() or not value.isupper() or not value.isalpha():
            self.fail("invalid")
        return value


@extend_schema_serializer(component_name="BookingHold")
class HoldInputSerializer(StrictSerializer):
    """A hold: mass_g for per_kg classes, quantity for per_unit ones."""

    slot_class = _positive("The slot class's id (from GET /missions/).")
    mass_g = _positive(
        "Mass to book in grams (per_kg classes): within the class's minimum and maximum, "
        "a multiple of its mass_step_g.",
        required=False,
    )
    quantity = _positive("Units to book (per_unit classes, instead of mass_g).", required=False)
    currency = CurrencyCodeField()
    customer = CustomerInputSerializer(required=False, allow_null=True)
    payload = PayloadInputSerializer(
        required=False, allow_null=True, help_text="Optional here; complete it later by PATCH."
    )

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``booking_hold`` taken from the request."""
        data = self.validated_data
        customer, payload = data.get("customer"), data.get("payload")
        return {
            "slot_class_id": data["slot_class"],
            "mass_g": data.get("mass_g"),
            "quantity": data.get("quantity"),
            "currency": data["currency"],
            "customer": None if customer is None else customer_input(customer),
            "payload": None if payload is None else payload_input(payload),
        }


@extend_schema_serializer(component_name="BookingConfirm")
class ConfirmInputSerializer(StrictSerializer):
    """No fields: a body-less request counts as ``{}``."""


@extend_schema_serializer(component_name="BookingCancel")
class CancelInputSerializer(StrictSerializer):
    """Optional: a body-less request counts as ``{}``."""

    reason = StrictCharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="Why, for the booking's history (optional).",
    )


class BookingListQuerySerializer(serializers.Serializer[Any]):
    """The list's query parameters (validated, and documented from this class)."""

    status = serializers.ChoiceField(
        choices=BookingStatus.choices,
        required=False,
        allow_blank=True,
        help_text="The live status: held means holds still running; expired includes holds "
        "past their expiry that no sweep has written yet.",
        error_messages={
            "invalid_choice": "Unknown status {input!r}; use one of "
            + ", ".join(BookingStatus.values)
            + "."
        },
    )
    mission = serializers.CharField(
        required=False, allow_blank=True, max_length=16, help_text="A mission's code, e.g. M3."
    )

    def validate_mission(self, value: str) -> str:
        if value and not Mission.objects.filter(code=value).exists():
            raise serializers.ValidationError(_("No mission has this code."))
        return value


class EventFeedQuerySerializer(serializers.Serializer[Any]):
    after = serializers.RegexField(
        r"^[0-9]{1,18}$",
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The next cursor of the previous answer; without it the feed starts at the "
        "beginning.",
        error_messages={
            "invalid": "A cursor is the non-negative whole number the feed returned as next."
        },
    )

    def cursor(self) -> int:
        return int(self.validated_data.get("after") or 0)


# --- output ---------------------------------------------------------------------------


def _count(help_text: str, *, nullable: bool = False) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, allow_null=nullable, help_text=help_text)


class HazardSerializer(DocumentedSerializer[Mapping[str, Any]]):
    """Every key is present; the numbers that do not apply to the type are null."""

    type = HazardTypeField()
    energy_wh = _count("lithium_battery: energy in watt-hours.", nullable=True)
    meop_kpa = _count("pressure_vessel: maximum expected operating pressure.", nullable=True)
    mass_g = _count("propellant: mass in grams.", nullable=True)
    description = BlankAsNullCharField(help_text="What the hazard is, or null.")


class PayloadSerializer(DocumentedSerializer[PayloadDeclaration]):
    name = BlankAsNullCharField(help_text="Null until declared.")
    description = BlankAsNullCharField(help_text="Null until declared.")
    mass_g = _count("Declared mass in grams, or null.", nullable=True)
    dimensions_mm = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        min_length=3,
        max_length=3,
        allow_null=True,
        help_text="[length, width, height] in millimetres, or null until declared.",
    )
    power_w = _count("Power drawn in watts, or null.", nullable=True)
    data_kbps = _count("Data rate in kbit/s, or null.", nullable=True)
    hazards = HazardSerializer(many=True)
    export_classification = ExportClassificationField(allow_null=True)
    review_status = ReviewStatusField()


@extend_schema_serializer(component_name="BookingPaymentPlan")
class BookingPaymentPlanSerializer(DocumentedSerializer[PaymentPlan]):
    """The plan a booking is paid on: a deposit, then the instalments listed with it."""

    name = serializers.CharField()
    deposit_percent = serializers.IntegerField(
        min_value=1, max_value=100, help_text="The deposit's share of the price."
    )


@dataclass(frozen=True)
class InstalmentView:
    """One instalment as the API shows it (``booking_money_view``)."""

    position: int
    kind: str
    label: str
    amount: Money
    due_at: datetime | None
    milestone: str | None
    status: str
    paid: Money
    overdue: bool


@extend_schema_serializer(component_name="Instalment")
class InstalmentSerializer(DocumentedSerializer[InstalmentView]):
    """One amount the booking owes, and when. The instalments add up to the price exactly."""

    position = _count("0 is the deposit, then the plan's instalments in order.")
    kind = InstalmentKindField()
    # DRF's metaclass takes declared fields off the class, so ``.label`` stays the Field's.
    label = serializers.CharField()  # type: ignore[assignment]
    amount = MoneySerializer()
    due_at = UtcDateTimeField(
        allow_null=True,
        help_text="When it falls due; null until known (a milestone not reached yet, or a "
        "date counted from a confirmation that has not happened). A hold's deposit is due by "
        "its hold_expires_at.",
    )
    milestone = MilestoneField(allow_null=True, help_text="Null unless it waits for one.")
    status = InstalmentStatusField()
    paid = MoneySerializer(help_text="Received against it: may fall short or pass the amount.")
    overdue = serializers.BooleanField(help_text="Past its due date and not fully paid.")


@dataclass(frozen=True)
class BookingMoneyView:
    payment_plan: PaymentPlan | None
    instalments: list[InstalmentView]
    paid: Money
    due: Money
    overdue: bool
    bank_transfer_required: bool


def booking_money_view(booking: Booking, *, now: datetime) -> BookingMoneyView:
    """What the API shows of a booking's money, from ``plans.booking_money_summary``."""
    summary = plans.booking_money_summary(booking, now=now)
    # As the summary counts it: a hold's deposit is never overdue (the hold lapses instead),
    # and an ended booking owes nothing.
    confirmed = booking.status_at(now) == BookingStatus.CONFIRMED
    to_pay = plans.amount_to_pay(booking, summary.instalments)
    return BookingMoneyView(
        payment_plan=booking.slot_class.payment_plan if summary.has_plan else None,
        instalments=[
            InstalmentView(
                position=i.position,
                kind=i.kind,
                label=i.label,
                amount=i.money,
                due_at=i.due_at,
                milestone=i.milestone or None,
                status=i.status,
                paid=Money(i.amount_paid, i.currency),
                overdue=confirmed and i.is_overdue(now),
            )
            for i in summary.instalments
        ],
        paid=summary.paid,
        due=summary.due_now,
        overdue=summary.overdue.amount > 0,
        bank_transfer_required=summary.outstanding.amount > 0 and to_pay > STRIPE_MAX_CHARGE_MINOR,
    )


class CustomerSerializer(DocumentedSerializer[Booking]):
    name = BlankAsNullCharField(source="customer_name")
    email = BlankAsNullCharField(source="customer_email")
    organisation = BlankAsNullCharField(source="customer_organisation")


class BookingSerializer(DocumentedSerializer[Booking]):
    """A booking as the reseller sees it. Instances come from ``bookings.selectors`` (joins
    and the live-status annotation)."""

    reference = serializers.CharField(
        help_text="Six characters, no 0/O/1/I/L; matched without regard to case."
    )
    status = BookingStatusField(source="effective_status")
    mission = serializers.CharField(source="slot_class.mission.code", help_text="e.g. M3")
    slot_class = serializers.IntegerField(source="slot_class_id")
    mass_g = _count("Booked mass in grams.")
    quantity = _count("Units booked (per_unit classes); null for per_kg.", nullable=True)
    price = MoneySerializer(help_text="The total.")
    hold_expires_at = serializers.SerializerMethodField(
        help_text="When the hold lapses; null unless the status is held."
    )
    confirmed_at = UtcDateTimeField(allow_null=True)
    cancelled_at = UtcDateTimeField(allow_null=True)
    refund = MoneySerializer(
        allow_null=True, help_text="Due back under the class's policy; null until cancelled."
    )
    customer = CustomerSerializer(source="*")
    payload = PayloadSerializer()
    created_at = UtcDateTimeField()
    channel = serializers.ChoiceField(
        choices=Channel.choices, help_text="Where the booking was made."
    )
    on_account = serializers.BooleanField(
        help_text="Confirmed on the reseller's account (invoiced)."
    )
    # What is paid and owed (``booking_money_view``, set on the booking by to_representation).
    payment_plan = BookingPaymentPlanSerializer(
        source="money_view.payment_plan",
        allow_null=True,
        help_text="The deposit-and-instalments plan; null for a booking paid in full.",
    )
    instalments = InstalmentSerializer(
        source="money_view.instalments",
        many=True,
        help_text="The deposit first, then the instalments; empty for a booking paid in full.",
    )
    paid = MoneySerializer(
        source="money_view.paid",
        help_text="Received so far (card payments, recorded bank transfers), before refunds; "
        "not money confirmed on account.",
    )
    due = MoneySerializer(
        source="money_view.due",
        help_text="Owed now: a hold's deposit (or its price, if paid in full) and every "
        "instalment whose date has come, less what they received.",
    )
    overdue = serializers.BooleanField(
        source="money_view.overdue",
        help_text="An instalment is past its due date and not fully paid.",
    )
    payment_reference = BlankAsNullCharField(
        help_text="Quote this with a bank transfer; null until the booking has one."
    )
    bank_transfer_required = serializers.BooleanField(
        source="money_view.bank_transfer_required",
        help_text="The next payment is above what one card payment can carry: it is paid by "
        "bank transfer.",
    )

    def to_representation(self, instance: Booking) -> dict[str, Any]:
        # The fields above are the contract (and the OpenAPI schema); ``booking_data`` renders
        # them key for key without building DRF's field tree for every booking, which cost
        # about as much as the hold's SQL. A test holds the two to the same output.
        return booking_data(instance, now=timezone.now())

    def fields_representation(self, instance: Booking) -> dict[str, Any]:
        """The same dict through DRF's fields, for that test."""
        instance.money_view = booking_money_view(  # type: ignore[attr-defined]
            instance, now=timezone.now()
        )
        data: dict[str, Any] = super().to_representation(instance)
        return data

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_hold_expires_at(self, booking: Booking) -> str | None:
        if booking.effective_status != BookingStatus.HELD or booking.hold_expires_at is None:
            return None
        return str(UtcDateTimeField().to_representation(booking.hold_expires_at))


# --- the fast path: plain dicts, key for key what BookingSerializer declares -------------


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


def hazard_data(hazard: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": hazard.get("type"),
        "energy_wh": hazard.get("energy_wh"),
        "meop_kpa": hazard.get("meop_kpa"),
        "mass_g": hazard.get("mass_g"),
        "description": hazard.get("description") or None,
    }


def payload_data(payload: PayloadDeclaration) -> dict[str, Any]:
    return {
        "name": payload.name or None,
        "description": payload.description or None,
        "mass_g": payload.mass_g,
        "dimensions_mm": payload.dimensions_mm,
        "power_w": payload.power_w,
        "data_kbps": payload.data_kbps,
        "hazards": [hazard_data(hazard) for hazard in payload.hazards or []],
        "export_classification": payload.export_classification,
        "review_status": payload.review_status,
    }


def instalment_data(instalment: InstalmentView) -> dict[str, Any]:
    return {
        "position": instalment.position,
        "kind": instalment.kind,
        "label": str(instalment.label),
        "amount": money_data(instalment.amount),
        "due_at": _iso_or_none(instalment.due_at),
        "milestone": instalment.milestone,
        "status": instalment.status,
        "paid": money_data(instalment.paid),
        "overdue": instalment.overdue,
    }


def booking_data(booking: Booking, *, now: datetime) -> dict[str, Any]:
    """``BookingSerializer``'s output for ``booking`` (from ``bookings.selectors``)."""
    money = booking_money_view(booking, now=now)
    status = booking.effective_status
    plan = money.payment_plan
    refund = booking.refund
    return {
        "reference": booking.reference,
        "status": status,
        "mission": booking.slot_class.mission.code,
        "slot_class": booking.slot_class_id,
        "mass_g": booking.mass_g,
        "quantity": booking.quantity,
        "price": money_data(booking.price),
        "hold_expires_at": (
            _iso_or_none(booking.hold_expires_at) if status == BookingStatus.HELD else None
        ),
        "confirmed_at": _iso_or_none(booking.confirmed_at),
        "cancelled_at": _iso_or_none(booking.cancelled_at),
        "refund": None if refund is None else money_data(refund),
        "customer": {
            "name": booking.customer_name or None,
            "email": booking.customer_email or None,
            "organisation": booking.customer_organisation or None,
        },
        "payload": payload_data(booking.payload),
        "created_at": iso_utc(booking.created_at),
        "channel": booking.channel,
        "on_account": booking.on_account,
        "payment_plan": (
            None if plan is None else {"name": plan.name, "deposit_percent": plan.deposit_percent}
        ),
        "instalments": [instalment_data(instalment) for instalment in money.instalments],
        "paid": money_data(money.paid),
        "due": money_data(money.due),
        "overdue": money.overdue,
        "payment_reference": booking.payment_reference or None,
        "bank_transfer_required": money.bank_transfer_required,
    }


class EventSerializer(DocumentedSerializer[BookingEvent]):
    id = serializers.CharField(
        source="seq", help_text="The event's feed position, as a string; also a cursor."
    )
    type = serializers.CharField(
        help_text="booking.held, booking.confirmed, booking.cancelled, booking.expired, "
        "payload.updated, payload.review_changed, mission.schedule_changed, …; accept types "
        "you do not know."
    )
    booking = serializers.CharField(source="booking.reference", help_text="The reference.")
    created_at = UtcDateTimeField()
    # DRF's metaclass takes declared fields off the class, so ``.data`` stays the property.
    data = serializers.DictField(  # type: ignore[assignment]
        help_text="What changed; the keys depend on the type."
    )


class EventPageSerializer(DocumentedSerializer[Any]):
    results = EventSerializer(many=True, help_text="Oldest first, at most 100.")
    next = serializers.CharField(
        help_text="Poll again with after=<next>; returned even when results is empty."
    )
