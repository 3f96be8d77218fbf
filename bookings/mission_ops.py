"""Mission status transitions: the only code that assigns ``Mission.status``.

A change is recorded as a ``mission.status_changed`` BookingEvent on every live booking of
the mission (``from_status``/``to_status`` hold the mission's statuses for this type). The
booking's event history is the audit trail sales, operations and resellers (the events feed)
already read, so each customer sees in their own booking that the mission launched or failed;
Django's LogEntry was the alternative, but it needs a user and the cutoff job has none. The
same events give the public status page its timeline and pick the bookings each customer's
notice is about. A change on a mission without live bookings leaves only the new status.

When a mission fails or completes, its confirmed bookings become ``flown``, each with a
``booking.flown`` event. What a failure owes is the contract's and the insurer's business:
the notice shows each booking's price and what was paid, and refunds nothing by itself.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q, Sum
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from bookings.exceptions import InvalidTransition
from bookings.manifests import manifest_request_rebuild
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    OutboxMessage,
    Payment,
    PaymentStatus,
)
from bookings.notifications import booking_recipients
from bookings.outbox import outbox_handler, outbox_write
from bookings.services import Actor
from marketplace.locks import mission_qs_for_update
from marketplace.models import MISSION_TRANSITIONS, Channel, Mission, MissionStatus
from marketplace.money import Money

logger = logging.getLogger(__name__)

MISSION_STATUS_CHANGED = "mission.status_changed"
BOOKING_FLOWN = "booking.flown"
NOTIFY_TOPIC = "mission.status_notify"
MISSION_CUTOFF_ACTOR = "system:booking-cutoff"
# The mission flew with these bookings on board, whichever way it ended.
FLYING_END_STATUSES = (MissionStatus.FAILED, MissionStatus.COMPLETED)
_CHUNK = 500


class MissionTransitionRefused(InvalidTransition):
    """A mission status change that ``MISSION_TRANSITIONS`` (or the cutoff) does not allow."""


def _label(status: str) -> str:
    return str(MissionStatus(status).label) if status in MissionStatus.values else status


def mission_set_status(
    *,
    mission_id: int,
    status: str,
    actor: Actor,
    reason: str = "",
    now: datetime | None = None,
) -> Mission:
    """Move a mission to ``status`` along ``MISSION_TRANSITIONS``, under its row lock.
    Records a ``mission.status_changed`` event on each live booking, queues one notice per
    customer organisation, asks for a manifest rebuild, and on ``failed`` or ``completed``
    moves every confirmed booking to ``flown``.

    Setting the status the mission already has returns it unchanged (replays). Raises
    ``Mission.DoesNotExist``, ``MissionTransitionRefused`` for a step the map does not allow
    or for going on sale after the booking cutoff.
    """
    now = now or timezone.now()
    if status not in MissionStatus.values:
        raise MissionTransitionRefused(
            from_status="?", to_status=status, message=f"{status!r} is not a mission status."
        )
    with transaction.atomic():
        mission = mission_qs_for_update().get(pk=mission_id)
        previous = mission.status
        if previous == status:
            return mission
        if status not in MISSION_TRANSITIONS[previous]:
            allowed = ", ".join(sorted(_label(s) for s in MISSION_TRANSITIONS[previous]))
            raise MissionTransitionRefused(
                from_status=previous,
                to_status=status,
                message=f"Mission {mission.code} is {_label(previous)} and cannot become "
                f"{_label(status)}"
                + (f" (it can become: {allowed})." if allowed else "; its status is final."),
            )
        if status == MissionStatus.ON_SALE and now >= mission.booking_cutoff:
            raise MissionTransitionRefused(
                from_status=previous,
                to_status=status,
                message=f"Mission {mission.code}'s booking cutoff has passed: move the "
                "schedule (and the cutoff with it) before putting it on sale again.",
            )
        mission.status = status
        mission.save(update_fields=["status", "updated_at"])

        live = list(
            Booking.objects.filter(slot_class__mission_id=mission_id)
            .filter(
                Q(status=BookingStatus.CONFIRMED)
                | Q(status=BookingStatus.HELD, hold_expires_at__gt=now)
            )
            .order_by("pk")
            .values_list("pk", "organisation_id")
        )
        data = {"mission": mission.code, "mission_id": mission.pk}
        BookingEvent.objects.bulk_create(
            [
                BookingEvent(
                    booking_id=booking_id,
                    organisation_id=organisation_id,
                    type=MISSION_STATUS_CHANGED,
                    from_status=previous,
                    to_status=status,
                    actor=actor.label,
                    actor_user=actor.user,
                    reason=reason,
                    data=data,
                    created_at=now,
                )
                for booking_id, organisation_id in live
            ],
            batch_size=_CHUNK,
        )
        flown = 0
        if status in FLYING_END_STATUSES:
            flown = _bookings_fly(mission, actor=actor, reason=reason, now=now)
        for organisation_id in sorted({organisation_id for _, organisation_id in live}):
            outbox_write(
                topic=NOTIFY_TOPIC,
                payload={
                    "mission_id": mission.pk,
                    "organisation_id": organisation_id,
                    "from": previous,
                    "to": status,
                    "changed_at": now.isoformat(),
                },
                dedupe_key=f"{NOTIFY_TOPIC}:{mission.pk}:{now.isoformat()}:{organisation_id}",
            )
        manifest_request_rebuild(
            mission_id=mission.pk, reason=f"mission {previous} → {status}", now=now
        )
    logger.info(
        "mission %s: %s → %s (%s live bookings, %s flown)",
        mission.code,
        previous,
        status,
        len(live),
        flown,
        extra={"mission": mission.code},
    )
    return mission


def _bookings_fly(mission: Mission, *, actor: Actor, reason: str, now: datetime) -> int:
    """Every confirmed booking of the mission becomes flown, each with its event. The caller
    holds the mission's lock; the bookings' own locks (mission → booking skips levels, never
    goes back up) keep a cancel from slipping between the events and the update. Capacity
    counters stay as they are: the mass flew, it is never sold again."""
    rows = list(
        Booking.objects.filter(slot_class__mission_id=mission.pk, status=BookingStatus.CONFIRMED)
        .order_by("pk")
        .select_for_update(of=("self",))
        .values_list("pk", "organisation_id")
    )
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        updated = Booking.objects.filter(
            pk__in=[pk for pk, _ in chunk], status=BookingStatus.CONFIRMED
        ).update(status=BookingStatus.FLOWN, updated_at=now)
        if updated != len(chunk):  # impossible under the row locks; refuse to half-record
            raise RuntimeError(f"flew {updated} bookings but locked {len(chunk)}")
        BookingEvent.objects.bulk_create(
            [
                BookingEvent(
                    booking_id=booking_id,
                    organisation_id=organisation_id,
                    type=BOOKING_FLOWN,
                    from_status=BookingStatus.CONFIRMED,
                    to_status=BookingStatus.FLOWN,
                    actor=actor.label,
                    actor_user=actor.user,
                    reason=reason or f"Mission {mission.code} {_label(mission.status).lower()}.",
                    data={"mission": mission.code, "mission_status": mission.status},
                    created_at=now,
                )
                for booking_id, organisation_id in chunk
            ]
        )
    return len(rows)


# --- the public timeline ---------------------------------------------------------------


def mission_status_timeline(mission: Mission) -> list[dict[str, object]]:
    """The mission's recorded status changes, oldest first: one query, one row per change
    however many bookings carry it."""
    rows = (
        BookingEvent.objects.filter(
            type=MISSION_STATUS_CHANGED, booking__slot_class__mission_id=mission.pk
        )
        .order_by("created_at", "from_status", "to_status")
        .values_list("created_at", "from_status", "to_status")
        .distinct()
    )
    return [
        {"at": at, "from": from_status, "to": to_status, "label": _label(to_status)}
        for at, from_status, to_status in rows
    ]


# --- notices ----------------------------------------------------------------------------


def _language(booking: Booking) -> str:
    if booking.channel == Channel.WEB and booking.created_by is not None:
        return booking.created_by.preferred_language or "en"
    return "en"


def _paid_by_booking(booking_ids: list[int]) -> dict[int, int]:
    """What was paid and not refunded, per booking, in its currency's minor units."""
    rows = (
        Payment.objects.filter(booking_id__in=booking_ids, status=PaymentStatus.SUCCEEDED)
        .values("booking_id")
        .annotate(paid_total=Sum("amount"), refunded_total=Sum("amount_refunded"))
    )
    return {
        row["booking_id"]: (row["paid_total"] or 0) - (row["refunded_total"] or 0) for row in rows
    }


@outbox_handler(NOTIFY_TOPIC)
def handle_mission_status_notify(message: OutboxMessage) -> None:
    """One e-mail per recipient of the organisation (the person who booked on the site, or
    the organisation's notification address), listing that recipient's bookings affected by
    the change."""
    payload = message.payload
    mission = Mission.objects.select_related("lander").get(pk=payload["mission_id"])
    changed_at = datetime.fromisoformat(payload["changed_at"])
    bookings = list(
        Booking.objects.filter(
            organisation_id=payload["organisation_id"],
            slot_class__mission_id=mission.pk,
            events__type=MISSION_STATUS_CHANGED,
            events__created_at=changed_at,
            events__to_status=payload["to"],
        )
        .select_related("organisation", "created_by", "slot_class")
        .order_by("reference")
        .distinct()
    )
    paid = (
        _paid_by_booking([b.pk for b in bookings]) if payload["to"] == MissionStatus.FAILED else {}
    )
    groups: dict[str, list[Booking]] = defaultdict(list)
    for booking in bookings:
        for recipient in booking_recipients(booking):
            groups[recipient].append(booking)
    for recipient, group in sorted(groups.items()):
        with translation.override(_language(group[0])):
            lines = [
                {
                    "booking": booking,
                    "paid": Money(paid.get(booking.pk, 0), booking.currency),
                }
                for booking in group
            ]
            context = {
                "mission": mission,
                "to": payload["to"],
                "from": payload["from"],
                "to_label": _label(payload["to"]),
                "changed_at": changed_at,
                "lines": lines,
                "site_url": settings.SITE_URL,
            }
            body = render_to_string("manifests/email/mission_status.txt", context)
            subject = _("Mission %(code)s: %(status)s") % {
                "code": mission.code,
                "status": _label(payload["to"]),
            }
        EmailMessage(
            subject=f"[Moonslot] {subject}",
            body=body,
            to=[recipient],
            headers={
                "X-Moonslot-Mission": mission.code,
                "X-Moonslot-Event": f"{MISSION_STATUS_CHANGED}:{payload['to']}",
            },
        ).send()


__all__ = [
    "BOOKING_FLOWN",
    "MISSION_STATUS_CHANGED",
    "MissionTransitionRefused",
    "mission_set_status",
    "mission_status_timeline",
]
