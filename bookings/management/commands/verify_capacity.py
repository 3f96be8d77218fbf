"""``python manage.py verify_capacity``: compare every slot class's capacity counters with
its held and confirmed bookings; print a report per mission and exit 1 on any drift."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from bookings.capacity_audit import ClassCapacity, capacity_audit
from marketplace.money import format_mass


def _signed(value: int, unit: str) -> str:
    return f"{value:+,} {unit}"


def _line(row: ClassCapacity) -> str:
    label = f"  {row.name} (class {row.slot_class_id}): "
    figures = f"taken {format_mass(row.taken_g)}, booked {format_mass(row.booked_g)}"
    if row.per_unit:
        figures += f"; taken {row.taken_units:,} units, booked {row.booked_units:,} units"
    if row.consistent:
        return f"{label}{figures}  ok"
    drift = [_signed(row.drift_g, "g")]
    if row.drift_units:
        drift.append(_signed(row.drift_units, "units"))
    return f"{label}{figures}  DRIFT {', '.join(drift)}"


class Command(BaseCommand):
    help = (
        "Check that every slot class's taken_g/taken_units equal the mass and units of its "
        "held (lapsed but unswept included) and confirmed bookings. Exits 1 on any drift."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rows = capacity_audit()
        for (code, name), classes in groupby(rows, key=lambda r: (r.mission_code, r.mission_name)):
            self.stdout.write(f"{code} {name}")
            for row in classes:
                self.stdout.write(_line(row))
        drifted = [row for row in rows if not row.consistent]
        if drifted:
            named = "; ".join(
                f"{row.mission_code} {row.name} (class {row.slot_class_id}) "
                f"{_signed(row.drift_g, 'g')}"
                + (f", {_signed(row.drift_units, 'units')}" if row.drift_units else "")
                for row in drifted
            )
            raise CommandError(
                f"capacity drift in {len(drifted)} of {len(rows)} classes: {named}", returncode=1
            )
        self.stdout.write(self.style.SUCCESS(f"{len(rows)} classes checked: no drift."))
