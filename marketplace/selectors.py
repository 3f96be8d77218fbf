"""Reads of the catalogue. Availability comes from one aggregate subquery per class set,
never a query per row (see ``SlotClassQuerySet.with_availability``)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from marketplace.models import Mission, SlotClass


def mission_list(*, status: str | None = None, now: datetime | None = None) -> QuerySet[Mission]:
    """Missions for the catalogue, soonest launch first, with classes, prices, availability
    and schedule history prefetched (a constant number of queries). Without ``status`` it
    lists every mission not completed or failed."""
    now = now or timezone.now()
    missions = Mission.objects.all() if status else Mission.objects.listed()
    if status:
        missions = missions.filter(status=status)
    return missions.soonest_first().for_catalogue(now)


def mission_detail(*, code: str, now: datetime | None = None) -> Mission:
    """One mission by code (any status) with the catalogue prefetches. Raises
    ``Mission.DoesNotExist``."""
    return Mission.objects.for_catalogue(now or timezone.now()).get(code=code)


def slot_class_for_quote(*, slot_class_id: int) -> SlotClass:
    return (
        SlotClass.objects.select_related("mission", "position")
        .prefetch_related("prices")
        .get(pk=slot_class_id)
    )
