"""Catalogue invariants: the database refuses bad rows whatever code writes them, and
``SlotClass.clean`` explains the same rules in words before the database would."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from marketplace.models import (
    CancellationTier,
    LanderModel,
    LanderPosition,
    Mission,
    Pricing,
    ScheduleChange,
    SlotClass,
    SlotClassPrice,
)
from tests.factories import (
    LanderModelFactory,
    LanderPositionFactory,
    MissionFactory,
    SlotClassFactory,
)

pytestmark = pytest.mark.django_db


def refused(update: Any) -> None:
    """``update`` raises IntegrityError and leaves the transaction usable."""
    with pytest.raises(IntegrityError), transaction.atomic():
        update()


# --- database constraints ---------------------------------------------------------------
def test_taken_beyond_capacity_is_refused_by_the_database() -> None:
    slot_class = SlotClassFactory.create(capacity_g=100_000)
    rows = SlotClass.objects.filter(pk=slot_class.pk)

    refused(lambda: rows.update(taken_g=100_001))

    rows.update(taken_g=100_000)  # a full class is fine
    assert SlotClass.objects.get(pk=slot_class.pk).taken_g == 100_000


def test_capacity_below_taken_is_refused_by_the_database() -> None:
    slot_class = SlotClassFactory.create(capacity_g=100_000)
    rows = SlotClass.objects.filter(pk=slot_class.pk)
    rows.update(taken_g=60_000)

    refused(lambda: rows.update(capacity_g=59_900, max_mass_g=50_000))


def test_a_launch_window_ending_before_it_starts_is_refused() -> None:
    mission = MissionFactory.create()
    rows = Mission.objects.filter(pk=mission.pk)

    refused(lambda: rows.update(launch_window_end=F("launch_window_start") - timedelta(days=1)))


def test_a_booking_cutoff_after_the_window_opens_is_refused() -> None:
    mission = MissionFactory.create()
    rows = Mission.objects.filter(pk=mission.pk)

    refused(lambda: rows.update(booking_cutoff=F("launch_window_start") + timedelta(hours=1)))


def test_an_unknown_mission_status_is_refused() -> None:
    mission = MissionFactory.create()

    refused(lambda: Mission.objects.filter(pk=mission.pk).update(status="boarding"))


@pytest.mark.parametrize(
    "changes",
    [
        {"min_mass_g": 60_000},  # above the maximum
        {"max_mass_g": 150_000},  # above the capacity
        {"min_mass_g": 550},  # off the 100 g step
        {"max_length_mm": 0},
        {"hold_minutes_web": 0},
        {"capacity_g": 0, "max_mass_g": 0, "min_mass_g": 0},
        {"pricing": "per_gram"},
    ],
)
def test_a_per_kg_class_with_inconsistent_limits_is_refused(changes: dict[str, Any]) -> None:
    slot_class = SlotClassFactory.create(capacity_g=100_000, min_mass_g=500, max_mass_g=50_000)

    refused(lambda: SlotClass.objects.filter(pk=slot_class.pk).update(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"capacity_g": 9_990},  # not units × unit mass
        {"mass_step_g": 5},  # the step is one unit
        {"min_quantity": 11},  # above the maximum
        {"max_mass_g": 200},  # not max units × unit mass
        {"taken_units": 1001},  # beyond the units
    ],
)
def test_a_per_unit_class_with_inconsistent_unit_figures_is_refused(
    changes: dict[str, Any],
) -> None:
    capsule = SlotClassFactory.per_unit(unit_mass_g=10, capacity_units=1000, max_quantity=10)

    refused(lambda: SlotClass.objects.filter(pk=capsule.pk).update(**changes))


@pytest.mark.parametrize("field", ["unit_mass_g", "capacity_units", "max_quantity"])
def test_a_per_unit_class_without_its_unit_figures_is_refused(field: str) -> None:
    capsule = SlotClassFactory.per_unit()

    refused(lambda: SlotClass.objects.filter(pk=capsule.pk).update(**{field: None}))


def test_a_zero_mass_step_is_refused() -> None:
    slot_class = SlotClassFactory.create()

    # The step's modulo ignores a zero step (NullIf), so the violated constraint is reported
    # rather than PostgreSQL's division by zero.
    with pytest.raises(IntegrityError), transaction.atomic():
        SlotClass.objects.filter(pk=slot_class.pk).update(mass_step_g=0)
    assert SlotClass.objects.get(pk=slot_class.pk).mass_step_g == 100


def test_a_per_kg_class_cannot_carry_unit_figures() -> None:
    slot_class = SlotClassFactory.create()

    refused(lambda: SlotClass.objects.filter(pk=slot_class.pk).update(capacity_units=10))


def test_a_price_must_be_positive_and_one_per_currency() -> None:
    slot_class = SlotClassFactory.create(prices={"JPY": 180_000_000})

    refused(lambda: SlotClassPrice.objects.filter(slot_class=slot_class).update(amount=0))
    refused(lambda: SlotClassPrice.objects.create(slot_class=slot_class, currency="JPY", amount=1))
    refused(lambda: SlotClassPrice.objects.create(slot_class=slot_class, currency="EUR", amount=1))


def test_a_refund_share_above_100_percent_is_refused() -> None:
    slot_class = SlotClassFactory.create(tiers={365: 90})

    refused(
        lambda: CancellationTier.objects.filter(slot_class=slot_class).update(refund_percent=101)
    )


def test_lander_capacity_and_position_limits_are_checked() -> None:
    lander = LanderModelFactory.create()
    position = LanderPositionFactory.create(
        lander=lander, min_temperature_c=-20, max_temperature_c=50
    )

    refused(lambda: LanderModel.objects.filter(pk=lander.pk).update(payload_capacity_g=0))
    refused(lambda: LanderPosition.objects.filter(pk=position.pk).update(min_temperature_c=60))
    refused(lambda: LanderPositionFactory.create(lander=lander, code=position.code))


def test_a_schedule_change_needs_a_reason_and_an_ordered_window() -> None:
    mission = MissionFactory.create()
    window = {
        "old_window_start": mission.launch_window_start,
        "old_window_end": mission.launch_window_end,
    }

    refused(
        lambda: ScheduleChange.objects.create(
            mission=mission,
            new_window_start=mission.launch_window_start,
            new_window_end=mission.launch_window_end,
            reason="",
            **window,
        )
    )
    refused(
        lambda: ScheduleChange.objects.create(
            mission=mission,
            new_window_start=mission.launch_window_end,
            new_window_end=mission.launch_window_start,
            reason="Slip",
            **window,
        )
    )


# --- SlotClass.clean --------------------------------------------------------------------
def test_clean_derives_a_per_unit_classs_mass_figures_from_its_units() -> None:
    capsule = SlotClass(
        mission=MissionFactory.create(),
        name="Message capsule",
        pricing=Pricing.PER_UNIT,
        unit_mass_g=2,
        capacity_units=500,
        min_quantity=1,
        max_quantity=5,
        max_length_mm=30,
        max_width_mm=30,
        max_height_mm=5,
    )

    # As the admin form does: the capacity is left to clean() to derive.
    capsule.full_clean(exclude={"capacity_g"})
    capsule.save()

    assert (capsule.capacity_g, capsule.mass_step_g) == (1000, 2)
    assert (capsule.min_mass_g, capsule.max_mass_g) == (2, 10)


def test_clean_clears_unit_figures_from_a_per_kg_class() -> None:
    slot_class = SlotClassFactory.create()
    slot_class.unit_mass_g, slot_class.capacity_units = 10, 50

    slot_class.full_clean()

    assert (slot_class.unit_mass_g, slot_class.capacity_units) == (None, None)


def test_clean_explains_capacity_below_what_is_booked() -> None:
    slot_class = SlotClassFactory.create(capacity_g=100_000)
    SlotClass.objects.filter(pk=slot_class.pk).update(taken_g=45_000)
    slot_class.refresh_from_db()
    slot_class.capacity_g = slot_class.max_mass_g = 40_000

    with pytest.raises(ValidationError) as error:
        slot_class.full_clean()

    assert error.value.message_dict["capacity_g"] == [
        "45 kg are already booked; capacity cannot go lower."
    ]


def test_clean_refuses_a_position_of_another_lander() -> None:
    slot_class = SlotClassFactory.create()
    slot_class.position = LanderPositionFactory.create(
        lander=LanderModelFactory.create(name="Other lander")
    )

    with pytest.raises(ValidationError) as error:
        slot_class.full_clean()

    assert error.value.message_dict["position"] == [
        "This position belongs to another lander model."
    ]


def test_full_clean_reports_the_mission_window_constraints_in_words() -> None:
    mission = MissionFactory.create()
    mission.launch_window_end = mission.launch_window_start - timedelta(days=1)

    with pytest.raises(ValidationError) as error:
        mission.full_clean()

    assert "The launch window must start before it ends." in error.value.messages
