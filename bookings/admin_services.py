"""Writes the sales back office needs beside the booking transitions: a payload's review
status (run by operations) and re-sending a booking's notice. Transitions themselves stay in
``bookings.services``."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from bookings.events import event_write
from bookings.exceptions import BookingError, InvalidTransition
from bookings.locks import booking_qs_for_update
from bookings.manifests import manifest_request_rebuild
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    OutboxMessage,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.outbox import outbox_write
from bookings.payments import booking_cancel_and_refund
from bookings.review import (
    payload_data_complete,
    payload_milestone_reached,
    payload_offload_notice,
    payload_review_next_after_clearance,
)
from bookings.services import Actor
from marketplace.locks import slot_class_qs_for_update
from marketplace.money import Money

# The review runs beside the booking: forward through the checks, back a step when
# operations need more data, and out again from a rejection once the customer fixes it.
# TODO(models): move beside BOOKING_TRANSITIONS in bookings/models.py.
PAYLOAD_REVIEW_TRANSITIONS: dict[str, set[str]] = {
    ReviewStatus.DECLARED: {
        ReviewStatus.DATA_COMPLETE,
        ReviewStatus.SAFETY_REVIEW,
        ReviewStatus.REJECTED,
    },
    ReviewStatus.DATA_COMPLETE: {
        ReviewStatus.DECLARED,
        ReviewStatus.SAFETY_REVIEW,
        ReviewStatus.EXPORT_REVIEW,
        ReviewStatus.ACCEPTED,
        ReviewStatus.REJECTED,
    },
    ReviewStatus.SAFETY_REVIEW: {
        ReviewStatus.DATA_COMPLETE,
        ReviewStatus.EXPORT_REVIEW,
        ReviewStatus.ACCEPTED,
        ReviewStatus.REJECTED,
    },
    ReviewStatus.EXPORT_REVIEW: {
        ReviewStatus.DATA_COMPLETE,
        ReviewStatus.SAFETY_REVIEW,
        ReviewStatus.ACCEPTED,
        ReviewStatus.REJECTED,
    },
    ReviewStatus.ACCEPTED: {
        ReviewStatus.SAFETY_REVIEW,
        ReviewStatus.REJECTED,
        ReviewStatus.INTEGRATED,
    },
    ReviewStatus.REJECTED: {ReviewStatus.DATA_COMPLETE, ReviewStatus.SAFETY_REVIEW},
    ReviewStatus.INTEGRATED: {ReviewStatus.FLOWN},
    ReviewStatus.FLOWN: set(),
}

# Where operations' "accept" means "clear this stage" (bookings.review decides the next).
CLEARABLE_STATUSES = (
    ReviewStatus.DECLARED,
    ReviewStatus.DATA_COMPLETE,
    ReviewStatus.SAFETY_REVIEW,
    ReviewStatus.EXPORT_REVIEW,
)

# Bookings whose payload is still reviewed; a cancelled or expired one no longer flies.
REVIEWABLE_BOOKING_STATUSES = (BookingStatus.HELD, BookingStatus.CONFIRMED)


def refund_needs_manager(refund: Money) -> bool:
    """Whether cancelling with ``refund`` needs ``bookings.refund_above_threshold``: a refund
    above ``MOONSLOT_REFUND_APPROVAL_THRESHOLD`` in its currency, or any refund in a currency
    the setting does not name."""
    if refund.amount <= 0:
        return False
    limit = settings.MOONSLOT_REFUND_APPROVAL_THRESHOLD.get(refund.currency)
    return limit is None or refund.amount > limit


class PayloadNotReviewable(BookingError):
    code = "invalid_state"


class NothingToResend(BookingError):
    code = "invalid_state"


def payload_review_change(
    *,
    booking_id: int,
    to_status: str,
    actor: Actor,
    reason: str = "",
    now: datetime | None = None,
) -> PayloadDeclaration:
    """Move a booking's payload review to ``to_status`` and record a
    ``payload.review_changed`` event (who, from, to, why). Setting the status it already has
    changes nothing and records nothing.

    ``accepted`` from a stage before it clears that stage: the payload moves to the next
    review it still needs (``bookings.review``: safety, then export), and only then to
    ``accepted``. Reaching ``accepted`` or ``integrated`` tells the payment plan
    (``plans.instalments_milestone_reached``). ``rejected`` offloads the payload: the
    booking is cancelled with the refund its class's policy gives, and the customer told.

    Raises ``PayloadNotReviewable`` for a cancelled or expired booking (a lapsed hold
    included) or an incomplete declaration accepted, ``InvalidTransition`` for a step
    ``PAYLOAD_REVIEW_TRANSITIONS`` does not allow.
    """
    now = now or timezone.now()
    with transaction.atomic():
        if to_status == ReviewStatus.REJECTED:
            # A rejection offloads the payload (booking_cancel), which locks the class
            # before the booking: take it first here too.
            slot_class_qs_for_update().get(
                pk=Booking.objects.values_list("slot_class_id", flat=True).get(pk=booking_id)
            )
        # Same lock order as booking_payload_update: the booking, then its declaration.
        booking = booking_qs_for_update().get(pk=booking_id)
        declaration = PayloadDeclaration.objects.select_for_update().get(booking=booking)
        previous = declaration.review_status
        if to_status == ReviewStatus.ACCEPTED and previous in CLEARABLE_STATUSES:
            if not payload_data_complete(declaration):
                raise PayloadNotReviewable(
                    _(
                        "The declaration of %(ref)s is not complete (name, mass, dimensions "
                        "and export classification): it cannot be accepted yet."
                    )
                    % {"ref": booking.reference}
                )
            # "Accept" clears the current stage: safety, then export, then accepted.
            to_status = payload_review_next_after_clearance(declaration, previous)
        if previous == to_status:
            return declaration
        status = booking.status_at(now)
        if status not in REVIEWABLE_BOOKING_STATUSES:
            raise PayloadNotReviewable(
                f"Booking {booking.reference} is {status}: its payload is no longer reviewed."
            )
        if to_status not in PAYLOAD_REVIEW_TRANSITIONS.get(previous, set()):
            raise InvalidTransition(from_status=previous, to_status=to_status)
        declaration.review_status = to_status
        declaration.save(update_fields=["review_status", "updated_at"])
        event_write(
            booking,
            type=EventType.PAYLOAD_REVIEW_CHANGED,
            actor=actor,
            data={"from": previous, "to": to_status},
            reason=reason,
            now=now,
        )
        if status == BookingStatus.CONFIRMED:  # the manifest shows the review status
            manifest_request_rebuild(
                mission_id=booking.slot_class.mission_id,
                reason=f"booking {booking.reference} payload review {to_status}",
            )
        payload_milestone_reached(booking_id=booking.pk, status=to_status, now=now)
        if to_status == ReviewStatus.REJECTED:
            _offload(booking, actor=actor, reason=reason, now=now)
    return declaration


def _offload(booking: Booking, *, actor: Actor, reason: str, now: datetime) -> None:
    """A rejected payload does not fly: its booking is cancelled with the refund its class's
    cancellation policy gives at ``now`` (paid back to the card by ``payments``; nothing
    for a hold), the capacity is freed, and the customer is told why."""
    cancelled = booking_cancel_and_refund(
        booking_id=booking.pk,
        actor=actor,
        reason="Payload rejected" + (f": {reason}" if reason else "."),
        now=now,
    )
    payload_offload_notice(cancelled, reason=reason)


RESEND_EVENT_TYPES = {
    BookingStatus.CONFIRMED: EventType.BOOKING_CONFIRMED,
    BookingStatus.HELD: EventType.BOOKING_HELD,
}


def booking_notice_resend(
    *, booking_id: int, actor: Actor, now: datetime | None = None
) -> OutboxMessage:
    """Queue the booking's current notice again (its confirmation, or for a live hold the
    hold notice) for the recipients ``bookings.notifications`` picks. Each call queues one
    e-mail: a resend is deliberate, so there is no dedupe key.

    Raises ``NothingToResend`` for a cancelled or expired booking."""
    now = now or timezone.now()
    with transaction.atomic():
        booking = Booking.objects.get(pk=booking_id)
        status = booking.status_at(now)
        event_type = RESEND_EVENT_TYPES.get(BookingStatus(status))
        if event_type is None:
            raise NothingToResend(
                f"Booking {booking.reference} is {status}: there is no notice to resend."
            )
        event_id = (
            BookingEvent.objects.filter(booking=booking, type=event_type)
            .order_by("-pk")
            .values_list("pk", flat=True)
            .first()
        )
        message = outbox_write(
            topic="booking.notify",
            payload={
                "booking_id": booking.pk,
                "event_id": event_id,
                "type": str(event_type),
                "resent_by": actor.label,
            },
        )
    if message is None:  # only a dedupe key can make outbox_write return None
        raise RuntimeError("outbox_write wrote nothing without a dedupe key")
    return message
