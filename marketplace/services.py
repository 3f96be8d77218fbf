"""Writes to the catalogue that need more than a single row's constraints."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from marketplace.exceptions import AllocationExceeded
from marketplace.locks import mission_qs_for_update
from marketplace.models import ScheduleChange, SlotClass


@transaction.atomic
def mission_check_allocations(
    *,
    mission_id: int,
    changed: Mapping[int, int] | None = None,
    added: Sequence[int] = (),
    removed: Collection[int] = (),
) -> int:
    """Check that the mission's slot classes fit its lander: the stored capacities, with
    ``changed`` (class id → new capacity_g) replacing some, ``added`` capacities of new
    classes, and ``removed`` class ids left out. Takes the mission's row lock, which the
    caller's transaction keeps until it commits, so two editors cannot each fit "their" class
    into the same free kilograms.

    Returns the total allocated in grams. Raises ``AllocationExceeded``.
    """
    changed = changed or {}
    mission = mission_qs_for_update().select_related("lander").get(pk=mission_id)
    stored = dict(SlotClass.objects.filter(mission_id=mission_id).values_list("pk", "capacity_g"))
    total = sum(
        changed.get(class_id, capacity)
        for class_id, capacity in stored.items()
        if class_id not in removed
    ) + sum(added)
    if total > mission.lander.payload_capacity_g:
        raise AllocationExceeded(
            lander_capacity_g=mission.lander.payload_capacity_g, allocated_g=total
        )
    return total


@transaction.atomic
def mission_reschedule(
    *,
    mission_id: int,
    new_window_start: datetime,
    new_window_end: datetime,
    reason: str,
    announced_by: User | None = None,
    new_booking_cutoff: datetime | None = None,
) -> ScheduleChange:
    """Move a mission's launch window and record the change (old and new window, reason, who,
    when). Never overwrites history. If the booking cutoff would fall after the new window
    start, it moves with the window by the same amount unless a new one is given.

    In the same transaction every live booking on the mission gets its re-accommodation
    offer, event and e-mail (``bookings.reaccommodation.offers_create_for_change``), so a
    change is never recorded without them.

    Raises ``ValueError`` for an empty reason, an unordered window or an unchanged window.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("A schedule change needs a reason.")
    if new_window_start > new_window_end:
        raise ValueError("The launch window must start before it ends.")
    mission = mission_qs_for_update().get(pk=mission_id)
    if (mission.launch_window_start, mission.launch_window_end) == (
        new_window_start,
        new_window_end,
    ):
        raise ValueError("The new launch window is the same as the current one.")
    change = ScheduleChange.objects.create(
        mission=mission,
        old_window_start=mission.launch_window_start,
        old_window_end=mission.launch_window_end,
        new_window_start=new_window_start,
        new_window_end=new_window_end,
        reason=reason,
        announced_at=timezone.now(),
        announced_by=announced_by,
    )
    shift = new_window_start - mission.launch_window_start
    if new_booking_cutoff is not None:
        mission.booking_cutoff = new_booking_cutoff
    elif mission.booking_cutoff > new_window_start or shift.total_seconds() > 0:
        # A slip moves the cutoff with it; an advance only as far as it must.
        mission.booking_cutoff = min(mission.booking_cutoff + shift, new_window_start)
    mission.launch_window_start = new_window_start
    mission.launch_window_end = new_window_end
    mission.save(
        update_fields=["launch_window_start", "launch_window_end", "booking_cutoff", "updated_at"]
    )
    # Imported here: the catalogue does not import the bookings app at module load.
    from bookings.manifests import manifest_request_rebuild
    from bookings.reaccommodation import offers_create_for_change

    offers_create_for_change(
        change=change,
        booking_cutoff=mission.booking_cutoff,
        announced_by=announced_by,
        now=change.announced_at,
    )
    # The manifest carries the launch window.
    manifest_request_rebuild(mission_id=mission.pk, reason="schedule change")
    return change
