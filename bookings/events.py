"""The audit trail's one writer. Its own module, below the services, so that the modules the
services import (payload review, screening, payments) write events the same way without
importing the services back."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from bookings.models import Booking, BookingEvent
from config.db import insert_row

if TYPE_CHECKING:  # the services import this module
    from bookings.services import Actor


def event_write(
    booking: Booking,
    *,
    type: str,
    actor: Actor,
    from_status: str = "",
    to_status: str = "",
    reason: str = "",
    data: dict[str, object] | None = None,
    now: datetime | None = None,
) -> BookingEvent:
    """One ``BookingEvent`` of ``booking``: what happened, who did it, why. The events feed
    shows ``data`` to resellers; ``reason`` stays internal."""
    event = BookingEvent(
        booking=booking,
        organisation_id=booking.organisation_id,
        type=type,
        from_status=from_status,
        to_status=to_status,
        actor=actor.label,
        actor_user=actor.user,
        reason=reason,
        data=data or {},
        created_at=now or timezone.now(),
    )
    insert_row(event)  # every transition writes one: a prepared INSERT, not save()'s compile
    return event
