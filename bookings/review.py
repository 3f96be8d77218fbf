"""The payload review's rules: when a declaration is complete, which reviews it needs, where
a change sends it, and the notices and reminders around it.

Routing (``payload_review_route``, run by ``booking_hold`` and ``booking_payload_update``):

- A declaration is *data complete* when it names the payload and gives its mass, three
  dimensions and export classification (``payload_data_complete``). Inert-only classes
  (message capsules) are declared by their inert confirmation and are not reviewed here.
- A complete declaration goes to ``safety_review`` when a hazard needs it
  (``safety_review_reasons``): a lithium battery above ``LITHIUM_REVIEW_ABOVE_WH`` (100 Wh,
  the IATA line above which a lithium-ion battery is no longer an ordinary item), any
  pressure vessel, any propellant, any radioactive source, and any "other" hazard (a person
  must read it). Otherwise to ``export_review`` when its classification is controlled
  (``EXPORT_REVIEW_CLASSES``: ITAR, EAR listed, Japan FEFTA listed). Otherwise it stays
  ``data_complete``: nothing is accepted without operations saying so, so it waits in the
  operations queue for an accept.
- Clearing a stage (operations' "accept", ``payload_review_next_after_clearance``) moves a
  payload to the next stage it still needs: safety, then export, then ``accepted``.
- A change of a *material* field (``MATERIAL_FIELDS``: mass, dimensions, power, hazards,
  export classification) of a complete declaration sends it through the routing again,
  whatever it had reached (accepted and integrated included); a declaration that stops
  being complete goes back to ``declared``. Flown and rejected payloads are not re-routed.

Each routed change is a ``payload.review_changed`` event with the actor who made the change;
operations get an e-mail (outbox ``payload.review_queue``) whenever a payload enters or
re-enters a review queue. These routes are the declaration's consequences, not operations'
choices, so they do not go through ``PAYLOAD_REVIEW_TRANSITIONS`` (which limits what
operations may set by hand).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from accounts.models import User
from bookings.events import event_write
from bookings.models import (
    Booking,
    BookingStatus,
    EventType,
    ExportClassification,
    HazardType,
    OutboxMessage,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.outbox import outbox_handler, outbox_write
from bookings.plans import instalments_milestone_reached
from marketplace.models import Milestone

if TYPE_CHECKING:
    from bookings.services import Actor

logger = logging.getLogger(__name__)

LITHIUM_REVIEW_ABOVE_WH = 100
SAFETY_HAZARD_TYPES = frozenset(
    {
        HazardType.PRESSURE_VESSEL,
        HazardType.PROPELLANT,
        HazardType.RADIOACTIVE_SOURCE,
        HazardType.OTHER,
    }
)
EXPORT_REVIEW_CLASSES = frozenset(
    {
        ExportClassification.ITAR,
        ExportClassification.EAR_LISTED,
        ExportClassification.JP_FEFTA_LISTED,
    }
)
MATERIAL_FIELDS = (
    "mass_g",
    "length_mm",
    "width_mm",
    "height_mm",
    "power_w",
    "hazards",
    "export_classification",
)
# What operations still have to decide on; the queue also holds data-complete payloads of
# confirmed bookings (``OPERATIONS_QUEUE_STATUSES``).
REVIEW_QUEUE_STATUSES = (ReviewStatus.SAFETY_REVIEW, ReviewStatus.EXPORT_REVIEW)
OPERATIONS_QUEUE_STATUSES = (*REVIEW_QUEUE_STATUSES, ReviewStatus.DATA_COMPLETE)
# Never routed again: the payload has flown, or was offloaded.
FIXED_STATUSES = (ReviewStatus.FLOWN, ReviewStatus.REJECTED)
# Sent once per threshold before the mission's booking cutoff, while incomplete.
DECLARATION_REMINDER_DAYS = (30, 7)

OPERATIONS_GROUP = "Operations"


# --- the rules ------------------------------------------------------------------------


def payload_data_complete(declaration: PayloadDeclaration) -> bool:
    """Enough to review: a name, the mass, all three dimensions and the classification."""
    return bool(
        declaration.name
        and declaration.mass_g
        and declaration.dimensions_mm is not None
        and declaration.export_classification
    )


def safety_review_reasons(hazards: Iterable[dict[str, Any]] | None) -> list[str]:
    """Why the hazards need a safety review, in words for operations (empty: they don't)."""
    reasons = []
    for hazard in hazards or []:
        kind = hazard.get("type")
        if kind == HazardType.LITHIUM_BATTERY:
            energy = hazard.get("energy_wh")
            if isinstance(energy, int) and energy > LITHIUM_REVIEW_ABOVE_WH:
                reasons.append(f"lithium battery of {energy} Wh (over {LITHIUM_REVIEW_ABOVE_WH})")
        elif kind in SAFETY_HAZARD_TYPES:
            reasons.append(str(HazardType(kind).label).lower())
    return reasons


def needs_safety_review(declaration: PayloadDeclaration) -> bool:
    return bool(safety_review_reasons(declaration.hazards))


def needs_export_review(declaration: PayloadDeclaration) -> bool:
    return declaration.export_classification in EXPORT_REVIEW_CLASSES


def payload_review_first_stage(declaration: PayloadDeclaration) -> str:
    """Where a complete declaration starts its review."""
    if needs_safety_review(declaration):
        return ReviewStatus.SAFETY_REVIEW
    if needs_export_review(declaration):
        return ReviewStatus.EXPORT_REVIEW
    return ReviewStatus.DATA_COMPLETE


def payload_review_next_after_clearance(declaration: PayloadDeclaration, current: str) -> str:
    """Where operations' "accept" of the stage ``current`` leads: the next review the payload
    still needs, or ``accepted``. An ITAR payload is never accepted without export review."""
    if current in (ReviewStatus.DECLARED, ReviewStatus.DATA_COMPLETE):
        stage = payload_review_first_stage(declaration)
        return ReviewStatus.ACCEPTED if stage == ReviewStatus.DATA_COMPLETE else stage
    if current == ReviewStatus.SAFETY_REVIEW and needs_export_review(declaration):
        return ReviewStatus.EXPORT_REVIEW
    return ReviewStatus.ACCEPTED


def payload_review_target(declaration: PayloadDeclaration, *, material_changed: bool) -> str:
    """The review status a declaration should have after a change (see the module doc)."""
    current = declaration.review_status
    if current in FIXED_STATUSES:
        return current
    if not payload_data_complete(declaration):
        return ReviewStatus.DECLARED
    if current == ReviewStatus.DECLARED or material_changed:
        return payload_review_first_stage(declaration)
    return current


def material_snapshot(declaration: PayloadDeclaration) -> dict[str, Any]:
    return {name: getattr(declaration, name) for name in MATERIAL_FIELDS}


# --- applying them --------------------------------------------------------------------


def payload_review_initial(booking: Booking, declaration: PayloadDeclaration) -> None:
    """A new hold's declaration: set where it starts (before it is saved; no event, since
    nothing changed) and tell operations if it starts in a review queue."""
    declaration.review_status = payload_review_target(declaration, material_changed=True)
    if declaration.review_status in REVIEW_QUEUE_STATUSES:
        _queue_notice(booking, declaration.review_status, change="new")


def payload_review_route(
    booking: Booking,
    declaration: PayloadDeclaration,
    *,
    actor: Actor,
    material_changed: bool,
    now: datetime,
) -> str | None:
    """After ``declaration`` (locked, changed, not yet saved: the caller saves it) changed:
    set the status the rules give, writing a ``payload.review_changed`` event when it
    changes, and the operations notice when it (re-)enters a review queue or a payload in
    review changed materially. Returns the new status, or None if it stayed."""
    previous = declaration.review_status
    target = payload_review_target(declaration, material_changed=material_changed)
    if target != previous:
        declaration.review_status = target
        event_write(
            booking,
            type=EventType.PAYLOAD_REVIEW_CHANGED,
            actor=actor,
            data={"from": previous, "to": target},
            reason="The declaration changed; the review follows it.",
            now=now,
        )
    if target in REVIEW_QUEUE_STATUSES and (target != previous or material_changed):
        _queue_notice(booking, target, change="changed")
    elif previous in (ReviewStatus.ACCEPTED, ReviewStatus.INTEGRATED) and target != previous:
        _queue_notice(booking, target, change="reopened")
    return target if target != previous else None


def _queue_notice(booking: Booking, status: str, *, change: str) -> None:
    outbox_write(
        topic="payload.review_queue",
        payload={"booking_id": booking.pk, "status": status, "change": change},
    )


def payload_milestone_reached(*, booking_id: int, status: str, now: datetime) -> None:
    """Tell the payment plan that the payload was accepted or integrated (instalments that
    fall due at those milestones get their date). Called in the transaction that records
    the review change."""
    milestone = {
        ReviewStatus.ACCEPTED: Milestone.PAYLOAD_ACCEPTED,
        ReviewStatus.INTEGRATED: Milestone.PAYLOAD_INTEGRATED,
    }.get(ReviewStatus(status))
    if milestone is not None:
        instalments_milestone_reached(booking_id=booking_id, milestone=milestone, now=now)


# --- notices --------------------------------------------------------------------------


def operations_recipients() -> list[str]:
    """The operations staff: active members of the Operations role's group."""
    return sorted(
        User.objects.filter(groups__name=OPERATIONS_GROUP, is_active=True, is_staff=True)
        .values_list("email", flat=True)
        .distinct()
    )


@outbox_handler("payload.review_queue")
def handle_review_queue(message: OutboxMessage) -> None:
    """E-mail operations that a payload waits in (or came back to) their queue."""
    recipients = operations_recipients()
    if not recipients:
        return
    booking = Booking.objects.select_related("organisation", "slot_class__mission", "payload").get(
        pk=message.payload["booking_id"]
    )
    status = booking.payload.review_status
    if status != message.payload["status"]:
        return  # moved on since: a later notice (or none) says where it is
    queue_url = settings.SITE_URL + reverse("admin:bookings_payloaddeclaration_changelist")
    body = render_to_string(
        "emails/payload_review_queue.txt",
        {
            "booking": booking,
            "payload": booking.payload,
            "status": ReviewStatus(status).label,
            "change": message.payload.get("change", ""),
            "reasons": safety_review_reasons(booking.payload.hazards),
            "queue_url": queue_url,
        },
    )
    EmailMessage(
        subject=f"[Moonslot] Payload review: {booking.reference} ({ReviewStatus(status).label})",
        body=body,
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": "payload.review"},
    ).send()


def _customer_language(booking: Booking) -> str:
    if booking.channel == "web" and booking.created_by is not None:
        return booking.created_by.preferred_language or "en"
    return "en"


def _customer_recipients(booking: Booking) -> list[str]:
    from bookings.notifications import booking_recipients

    return booking_recipients(booking)


@outbox_handler("payload.customer_notice")
def handle_payload_customer_notice(message: OutboxMessage) -> None:
    """E-mail the customer about their declaration: ``kind`` ``offloaded`` (rejected by the
    review, the booking cancelled with its refund) or ``reminder`` (still incomplete before
    the cutoff)."""
    booking = Booking.objects.select_related(
        "organisation", "created_by", "slot_class__mission", "payload"
    ).get(pk=message.payload["booking_id"])
    kind = message.payload["kind"]
    if kind == "reminder" and (
        booking.status_at() not in (BookingStatus.HELD, BookingStatus.CONFIRMED)
        or payload_data_complete(booking.payload)
    ):
        return  # completed or ended since it was queued
    recipients = _customer_recipients(booking)
    if not recipients:
        return
    with translation.override(_customer_language(booking)):
        context = {
            "booking": booking,
            "kind": kind,
            "reason": message.payload.get("reason", ""),
            "days": message.payload.get("days"),
            "site_url": settings.SITE_URL,
        }
        body = render_to_string("emails/payload_notice.txt", context)
        subject = render_to_string("emails/payload_notice_subject.txt", context).strip()
    EmailMessage(
        subject=f"[Moonslot] {subject}",
        body=body,
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": f"payload.{kind}"},
    ).send()


def payload_offload_notice(booking: Booking, *, reason: str) -> None:
    """Queue the customer's e-mail about a rejected payload (in the caller's transaction)."""
    outbox_write(
        topic="payload.customer_notice",
        payload={"booking_id": booking.pk, "kind": "offloaded", "reason": reason},
        dedupe_key=f"payload.offloaded:{booking.pk}",
    )


# --- declaration reminders ------------------------------------------------------------


def declarations_remind(*, now: datetime | None = None) -> int:
    """The beat job: for each threshold in ``DECLARATION_REMINDER_DAYS``, remind the live
    bookings whose declaration is still incomplete and whose mission's cutoff is that close,
    once per threshold (``PayloadDeclaration.reminded_at`` records the last one: a booking
    reminded at or after the threshold's start is not reminded for it again). Set-based:
    one UPDATE per threshold claims the declarations (re-checking the condition), and one
    outbox row per claimed booking is inserted with them. Returns how many were queued."""
    now = now or timezone.now()
    queued = 0
    for days in sorted(DECLARATION_REMINDER_DAYS, reverse=True):
        incomplete = (
            Q(name="")
            | Q(mass_g__isnull=True)
            | Q(length_mm__isnull=True)
            | Q(width_mm__isnull=True)
            | Q(height_mm__isnull=True)
            | Q(export_classification__isnull=True)
            | Q(export_classification="")
        )
        due = (
            PayloadDeclaration.objects.filter(incomplete)
            .filter(
                booking__slot_class__inert_only=False,
                booking__slot_class__mission__booking_cutoff__gt=now,
                booking__slot_class__mission__booking_cutoff__lte=now + timedelta(days=days),
            )
            .filter(
                Q(booking__status=BookingStatus.CONFIRMED)
                | Q(booking__status=BookingStatus.HELD, booking__hold_expires_at__gt=now)
            )
            # Not reminded since this threshold began (cutoff − days).
            .filter(Q(reminded_at__isnull=True) | Q(reminded_at__lt=_threshold_start(days)))
        )
        with transaction.atomic():
            ids = list(due.select_for_update(of=("self",)).values_list("booking_id", flat=True))
            if not ids:
                continue
            PayloadDeclaration.objects.filter(booking_id__in=ids).update(reminded_at=now)
            OutboxMessage.objects.bulk_create(
                [
                    OutboxMessage(
                        topic="payload.customer_notice",
                        payload={"booking_id": booking_id, "kind": "reminder", "days": days},
                        dedupe_key=f"payload.reminder:{booking_id}:{days}",
                        created_at=now,
                    )
                    for booking_id in ids
                ],
                ignore_conflicts=True,
            )
        queued += len(ids)
    return queued


def _threshold_start(days: int) -> ExpressionWrapper[Any]:
    """``cutoff − days`` per row, for the reminder filter."""
    return ExpressionWrapper(
        F("booking__slot_class__mission__booking_cutoff") - Value(timedelta(days=days)),
        output_field=DateTimeField(),
    )
