"""Output serializers of the public catalogue (shared/API.md, "Missions").

Each class declares its fields for two readers: drf-spectacular, which builds the strict
response schema from them, and DRF's generic ``Serializer.to_representation``. The endpoints
are read far more than anything else, so each class overrides ``to_representation`` with a
hand-built dict that skips DRF's per-field machinery (measured: about a quarter less time for a
page of 20 missions × 4 classes; most of a request is the ORM's prefetching, not this).
``tests/marketplace/test_api_missions.py`` proves the two give identical output, and
``tests/test_openapi.py`` validates real responses against the schema, so the declarations
cannot drift from what is sent.

Instances must come from ``marketplace.selectors`` (``mission_list``/``mission_detail``): the
availability annotations and prefetches they add keep a page at a constant number of queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api import choice_filter
from config.schema import Int64Field
from marketplace.models import (
    Channel,
    Destination,
    DueKind,
    Milestone,
    Mission,
    MissionStatus,
    PaymentPlan,
    Pricing,
    ScheduleChange,
    SlotClass,
    TaxTreatment,
)
from marketplace.money import Currency


def iso_utc(value: datetime) -> str:
    """What ``UtcDateTimeField`` renders: ISO 8601 in UTC with a ``Z``."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class UtcDateTimeField(serializers.DateTimeField):
    """Dates in UTC whatever time zone a request activates, so a response never depends on
    who asks."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("default_timezone", UTC)
        super().__init__(**kwargs)


class BlankAsNullCharField(serializers.CharField):
    """Optional text: an empty value is sent as null ("absent values are present as null")."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]
        return str(value) if value else None


class Priced(Protocol):
    """Anything with ``amount`` (minor units) and ``currency``: ``SlotClassPrice``,
    ``marketplace.money.Money`` (frozen, hence read-only members)."""

    @property
    def amount(self) -> int: ...

    @property
    def currency(self) -> str: ...


# Renders any ``Priced`` object, so booking prices and refunds can use it too. (The class
# docstring is the schema's description, for resellers.)
class MoneySerializer(serializers.Serializer[Priced]):
    """An amount in the currency's minor unit (JPY has none: ¥1,200,000 is 1200000)."""

    amount = Int64Field(min_value=0, help_text="Minor units of the currency (yen, US cents).")
    currency = serializers.ChoiceField(choices=Currency.choices)

    def to_representation(self, instance: Priced) -> dict[str, Any]:
        return money_data(instance)


class ScheduleChangeSerializer(serializers.Serializer[ScheduleChange]):
    """A slip (or advance) of the launch window, oldest first."""

    announced_at = UtcDateTimeField()
    old_window_start = UtcDateTimeField()
    old_window_end = UtcDateTimeField()
    new_window_start = UtcDateTimeField()
    new_window_end = UtcDateTimeField()
    reason = serializers.CharField()

    def to_representation(self, instance: ScheduleChange) -> dict[str, Any]:
        return schedule_change_data(instance)


def _count(help_text: str, *, nullable: bool = False) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, allow_null=nullable, help_text=help_text)


_PER_UNIT_ONLY = " Per-unit classes only; null for per-kg classes."

# Written out rather than a component: a nullable $ref cannot be expressed in OpenAPI 3.0
# without a oneOf, and this object appears only here.
PAYMENT_PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "description": "How a booking of this class is paid: a deposit (a share of the price, "
    "due to confirm the hold) and instalments whose shares make 100% with it. Null: paid in "
    "full when booked.",
    "properties": {
        "name": {"type": "string"},
        "deposit_percent": {"type": "integer", "minimum": 1, "maximum": 100},
        "instalments": {
            "type": "array",
            "description": "After the deposit, in order.",
            "items": {
                "type": "object",
                "properties": {
                    "position": {"type": "integer", "minimum": 0},
                    "label": {"type": "string"},
                    "percent": {"type": "integer", "minimum": 1, "maximum": 99},
                    "falls_due": {
                        "type": "string",
                        "enum": list(DueKind.values),
                        "description": "before_launch: days before the launch window opens; "
                        "after_booking: days after confirmation; milestone: when the milestone "
                        "is reached. Values may grow.",
                    },
                    "days": {"type": "integer", "minimum": 0, "nullable": True},
                    "milestone": {
                        "type": "string",
                        "enum": [*Milestone.values, None],
                        "nullable": True,
                        "description": "The milestone (falls_due milestone only), else null.",
                    },
                },
                "required": ["position", "label", "percent", "falls_due", "days", "milestone"],
            },
        },
    },
    "required": ["name", "deposit_percent", "instalments"],
}


@extend_schema_field(PAYMENT_PLAN_SCHEMA)
class PaymentPlanField(serializers.Field):
    """A slot class's payment plan with its instalments (``payment_plan_data``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value: PaymentPlan | None) -> dict[str, Any] | None:
        return payment_plan_data(value)


class SlotClassSerializer(serializers.Serializer[SlotClass]):
    """What is sold on a mission. Mass in grams, lengths in millimetres, power in watts."""

    id = serializers.IntegerField(help_text="Send this as slot_class when booking.")
    name = serializers.CharField()
    name_ja = BlankAsNullCharField(help_text="The Japanese name, or null.")
    destination = serializers.ChoiceField(choices=Destination.choices)
    pricing = serializers.ChoiceField(choices=Pricing.choices)
    prices = MoneySerializer(
        many=True,
        help_text="One price per currency offered: per kg for per_kg classes, per unit for "
        "per_unit classes.",
    )
    capacity_g = _count("The class's whole allocation.")
    available_g = _count(
        "Capacity less held and confirmed bookings; a hold past its expiry counts as free."
    )
    min_mass_g = _count("Smallest booking.")
    max_mass_g = _count("Largest booking.")
    mass_step_g = _count("A booking's mass_g must be a multiple of this.")
    max_dimensions_mm = serializers.ListField(
        child=serializers.IntegerField(min_value=0),
        min_length=3,
        max_length=3,
        help_text="[length, width, height] of the largest payload.",
    )
    max_power_w = _count("Power the position supplies (0: none).")
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices),
        help_text="Where the class is sold; a booking through the API needs api.",
    )
    unit_mass_g = _count("Mass of one unit." + _PER_UNIT_ONLY, nullable=True)
    capacity_units = _count("Units in the class." + _PER_UNIT_ONLY, nullable=True)
    available_units = _count("Units still free." + _PER_UNIT_ONLY, nullable=True)
    min_quantity = _count("Fewest units per booking." + _PER_UNIT_ONLY, nullable=True)
    max_quantity = _count("Most units per booking." + _PER_UNIT_ONLY, nullable=True)
    payment_plan = PaymentPlanField()
    tax_treatment = serializers.ChoiceField(
        choices=TaxTreatment.choices,
        help_text="Japanese consumption tax on the prices, which include it: standard (10%), "
        "reduced (8%), zero_rated (exports, 0%) or exempt. Values may grow.",
    )

    def to_representation(self, instance: SlotClass) -> dict[str, Any]:
        return slot_class_data(instance)


class MissionSerializer(serializers.Serializer[Mission]):
    """A mission with its schedule history and the slot classes on sale."""

    code = serializers.CharField(help_text="e.g. M3")
    name = serializers.CharField()
    name_ja = BlankAsNullCharField(help_text="The Japanese name, or null.")
    lander = serializers.CharField(source="lander.name", help_text="The lander model's name.")
    destination = serializers.ChoiceField(choices=Destination.choices)
    landing_site = BlankAsNullCharField(help_text="Null until announced.")
    launch_window_start = UtcDateTimeField()
    launch_window_end = UtcDateTimeField()
    booking_cutoff = UtcDateTimeField(
        help_text="Sales close and the payload manifest freezes at this time."
    )
    status = serializers.ChoiceField(
        choices=MissionStatus.choices,
        help_text="Clients must accept statuses they do not know yet.",
    )
    schedule_changes = ScheduleChangeSerializer(many=True)
    slot_classes = SlotClassSerializer(many=True)

    def to_representation(self, instance: Mission) -> dict[str, Any]:
        return mission_data(instance)


class MissionListQuerySerializer(serializers.Serializer[Any]):
    """The list's query parameters (read with ``config.api.validated_query``)."""

    status = choice_filter(
        MissionStatus,
        help_text="Only missions in this status (any status, completed and failed included). "
        "Without it the list holds every mission not completed or failed.",
    )


# --- the fast path: plain dicts, key for key what the serializers above declare ------------


def money_data(price: Priced) -> dict[str, Any]:
    return {"amount": price.amount, "currency": price.currency}


def schedule_change_data(change: ScheduleChange) -> dict[str, Any]:
    return {
        "announced_at": iso_utc(change.announced_at),
        "old_window_start": iso_utc(change.old_window_start),
        "old_window_end": iso_utc(change.old_window_end),
        "new_window_start": iso_utc(change.new_window_start),
        "new_window_end": iso_utc(change.new_window_end),
        "reason": change.reason,
    }


def payment_plan_data(plan: PaymentPlan | None) -> dict[str, Any] | None:
    """Reads ``plan.steps.all()``: prefetch ``payment_plan__steps`` for lists."""
    if plan is None:
        return None
    return {
        "name": plan.name,
        "deposit_percent": plan.deposit_percent,
        "instalments": [
            {
                "position": step.position,
                "label": step.label,
                "percent": step.percent,
                "falls_due": step.due_kind,
                "days": step.days,
                "milestone": step.milestone or None,
            }
            for step in plan.steps.all()
        ],
    }


def slot_class_data(slot_class: SlotClass) -> dict[str, Any]:
    return {
        "id": slot_class.pk,
        "name": slot_class.name,
        "name_ja": slot_class.name_ja or None,
        "destination": slot_class.destination,
        "pricing": slot_class.pricing,
        "prices": [money_data(price) for price in slot_class.prices.all()],
        "capacity_g": slot_class.capacity_g,
        "available_g": slot_class.available_g,
        "min_mass_g": slot_class.min_mass_g,
        "max_mass_g": slot_class.max_mass_g,
        "mass_step_g": slot_class.mass_step_g,
        "max_dimensions_mm": slot_class.max_dimensions_mm,
        "max_power_w": slot_class.max_power_w,
        "channels": slot_class.channels,
        "unit_mass_g": slot_class.unit_mass_g,
        "capacity_units": slot_class.capacity_units,
        "available_units": slot_class.available_units,
        "min_quantity": slot_class.min_quantity,
        "max_quantity": slot_class.max_quantity,
        "payment_plan": payment_plan_data(slot_class.payment_plan),
        "tax_treatment": slot_class.tax_treatment,
    }


def mission_data(mission: Mission) -> dict[str, Any]:
    return {
        "code": mission.code,
        "name": mission.name,
        "name_ja": mission.name_ja or None,
        "lander": mission.lander.name,
        "destination": mission.destination,
        "landing_site": mission.landing_site or None,
        "launch_window_start": iso_utc(mission.launch_window_start),
        "launch_window_end": iso_utc(mission.launch_window_end),
        "booking_cutoff": iso_utc(mission.booking_cutoff),
        "status": mission.status,
        "schedule_changes": [
            schedule_change_data(change) for change in mission.schedule_changes.all()
        ],
        "slot_classes": [slot_class_data(slot_class) for slot_class in mission.slot_classes.all()],
    }
