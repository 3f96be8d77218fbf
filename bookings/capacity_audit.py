"""The capacity drift check: does every slot class's counter agree with its bookings?

``taken_g``/``taken_units`` are counters the booking services keep under the class's row
lock; the truth they summarise is the bookings themselves. A class's counter must equal the
mass (and units) of its held, confirmed and flown bookings. Held includes holds past their expiry
that no sweep has written yet: they keep their capacity in the counter until released.

Everything is read in one SELECT, so the counters and the bookings come from the same
snapshot even while holds are being placed (PostgreSQL gives each statement one snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, Sum, Value
from django.db.models.functions import Coalesce

from bookings.models import CAPACITY_STATUSES
from marketplace.models import SlotClass

COUNTED = CAPACITY_STATUSES


@dataclass(frozen=True)
class ClassCapacity:
    """One class's counters beside what its bookings add up to."""

    slot_class_id: int
    mission_code: str
    mission_name: str
    name: str
    per_unit: bool
    taken_g: int
    booked_g: int
    taken_units: int
    booked_units: int

    @property
    def drift_g(self) -> int:
        """How much more the counter holds than the bookings (negative: less)."""
        return self.taken_g - self.booked_g

    @property
    def drift_units(self) -> int:
        return self.taken_units - self.booked_units

    @property
    def consistent(self) -> bool:
        return self.drift_g == 0 and self.drift_units == 0


def capacity_audit() -> list[ClassCapacity]:
    """Every slot class, by mission and class order, with its counters and its bookings'
    totals. Reads only; one query."""
    counted = Q(bookings__status__in=COUNTED)
    rows = (
        SlotClass.objects.select_related("mission")
        .annotate(
            booked_g=Coalesce(Sum("bookings__mass_g", filter=counted), Value(0)),
            booked_units=Coalesce(Sum("bookings__quantity", filter=counted), Value(0)),
        )
        .order_by("mission__launch_window_start", "mission__code", "sort_order", "pk")
    )
    return [
        ClassCapacity(
            slot_class_id=row.pk,
            mission_code=row.mission.code,
            mission_name=row.mission.name,
            name=row.name,
            per_unit=row.is_per_unit,
            taken_g=row.taken_g,
            booked_g=row.booked_g,
            taken_units=row.taken_units,
            booked_units=row.booked_units,
        )
        for row in rows
    ]


def capacity_drift() -> list[ClassCapacity]:
    """Only the classes whose counters disagree with their bookings."""
    return [row for row in capacity_audit() if not row.consistent]
