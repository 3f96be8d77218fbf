"""``manage.py verify_capacity``: every slot class's counters against its bookings."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.utils import timezone

from bookings import services
from bookings.capacity_audit import capacity_audit, capacity_drift
from bookings.services import Actor
from marketplace.models import SlotClass
from tests.factories import ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")


def _hold(slot_class: SlotClass, **kwargs: Any) -> int:
    if slot_class.is_per_unit:
        kwargs.setdefault("quantity", 2)
    else:
        kwargs.setdefault("mass_g", 1000)
    booking = services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=ResellerFactory.create(),
        channel="api",
        actor=ACTOR,
        currency="JPY",
        **kwargs,
    )
    return booking.pk


@pytest.fixture
def busy_mission() -> tuple[SlotClass, SlotClass]:
    """A per-kg and a per-unit class on one mission, with bookings in every state: live,
    confirmed, cancelled, expired by a sweep, and lapsed with no sweep yet."""
    deck = SlotClassFactory.create()
    capsules = SlotClassFactory.per_unit(mission=deck.mission, unit_mass_g=10)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    for slot_class in (deck, capsules):
        _hold(slot_class)
        services.booking_confirm(booking_id=_hold(slot_class), actor=ACTOR)
        services.booking_cancel(booking_id=_hold(slot_class), actor=ACTOR)
        _hold(slot_class, now=an_hour_ago, hold_minutes=5)
        services.bookings_expire(now=timezone.now() - timedelta(minutes=30))
        _hold(slot_class, now=an_hour_ago + timedelta(minutes=45), hold_minutes=5)
    return deck, capsules


def run() -> str:
    out = StringIO()
    call_command("verify_capacity", stdout=out)
    return out.getvalue()


def test_consistent_counters_pass_and_are_reported_per_mission(
    busy_mission: tuple[SlotClass, SlotClass],
) -> None:
    deck, capsules = busy_mission
    output = run()
    assert f"{deck.mission.code} {deck.mission.name}" in output
    assert f"{deck.name} (class {deck.pk}): taken 3 kg, booked 3 kg  ok" in output
    assert f"{capsules.name} (class {capsules.pk})" in output
    assert "taken 6 units, booked 6 units  ok" in output
    assert "2 classes checked: no drift." in output


def test_a_lapsed_hold_no_sweep_has_written_still_counts(
    busy_mission: tuple[SlotClass, SlotClass],
) -> None:
    deck, _capsules = busy_mission
    (row,) = [r for r in capacity_audit() if r.slot_class_id == deck.pk]
    # live 1 kg + confirmed 1 kg + lapsed-unswept 1 kg; cancelled and expired are free.
    assert (row.taken_g, row.booked_g) == (3000, 3000)


def test_drift_exits_1_naming_the_class_and_the_difference(
    busy_mission: tuple[SlotClass, SlotClass],
) -> None:
    deck, capsules = busy_mission
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=F("taken_g") + 500)
    out = StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("verify_capacity", stdout=out)
    assert refused.value.returncode == 1
    message = str(refused.value)
    assert f"{deck.mission.code} {deck.name} (class {deck.pk}) +500 g" in message
    assert "1 of 2 classes" in message
    assert f"(class {deck.pk}): taken 3.5 kg, booked 3 kg  DRIFT +500 g" in out.getvalue()
    assert f"(class {capsules.pk})" in out.getvalue()  # the rest is still reported


def test_unit_drift_is_reported_in_units(busy_mission: tuple[SlotClass, SlotClass]) -> None:
    _deck, capsules = busy_mission
    SlotClass.objects.filter(pk=capsules.pk).update(taken_units=F("taken_units") - 1)
    (drifted,) = capacity_drift()
    assert drifted.slot_class_id == capsules.pk
    assert (drifted.drift_g, drifted.drift_units) == (0, -1)
    with pytest.raises(CommandError, match=r"-1 units"):
        run()


def test_the_audit_is_one_query(
    busy_mission: tuple[SlotClass, SlotClass], django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(1):
        rows = capacity_audit()
    assert len(rows) == 2
