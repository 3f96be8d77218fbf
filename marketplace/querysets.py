from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import OuterRef, Prefetch, Subquery, Sum, Value
from django.db.models.functions import Coalesce

if TYPE_CHECKING:
    from marketplace.models import Mission, SlotClass  # noqa: F401 (generic arguments)

# Kept as literals so the catalogue does not import the bookings app at module load.
_HELD = "held"
_FINISHED = ("completed", "failed")


class SlotClassQuerySet(models.QuerySet["SlotClass"]):
    def with_availability(self, now: datetime) -> SlotClassQuerySet:
        """Annotate ``available_g_now`` and ``available_units_now``: capacity minus the
        counters plus holds already past their expiry but not yet swept, so a lapsed hold
        is free to the eye before the sweep writes it. One subquery each, no per-row work."""
        from bookings.models import Booking

        lapsed = Booking.objects.filter(
            slot_class=OuterRef("pk"), status=_HELD, hold_expires_at__lte=now
        ).order_by()
        lapsed_g = lapsed.values("slot_class").annotate(total=Sum("mass_g")).values("total")
        lapsed_units = lapsed.values("slot_class").annotate(total=Sum("quantity")).values("total")
        return self.annotate(
            lapsed_g=Coalesce(Subquery(lapsed_g), Value(0)),
            lapsed_units=Coalesce(Subquery(lapsed_units), Value(0)),
        )

    def for_catalogue(self, now: datetime) -> SlotClassQuerySet:
        return (
            self.with_availability(now)
            .select_related("position", "payment_plan")
            .prefetch_related("prices", "payment_plan__steps")
        )


class MissionQuerySet(models.QuerySet["Mission"]):
    def listed(self) -> MissionQuerySet:
        """Missions a customer may still care about: everything not completed or failed."""
        return self.exclude(status__in=_FINISHED)

    def soonest_first(self) -> MissionQuerySet:
        return self.order_by("launch_window_start", "code")

    def for_catalogue(self, now: datetime) -> MissionQuerySet:
        from marketplace.models import ScheduleChange, SlotClass

        classes: Any = SlotClass.objects.for_catalogue(now).order_by("sort_order", "pk")
        return self.select_related("lander").prefetch_related(
            Prefetch("slot_classes", queryset=classes),
            Prefetch(
                "schedule_changes", queryset=ScheduleChange.objects.order_by("announced_at", "pk")
            ),
        )
