"""Denied-party screening of bookings: run by ``booking_confirm`` before it confirms, and the
two decisions sales take on a possible match.

A match does not confirm the booking: it stays held, its hold extended by
``SCREENING_HOLD`` (never shortened) so it cannot lapse while sales look, the booking records
``screening_status = match``, sales get an e-mail, and the caller gets ``ScreeningReview``
(API: 409 ``screening_review``). A card payment that triggered the confirmation stays
authorised, neither captured nor released, until sales decide:

- ``booking_screening_clear``: a false positive. The booking is confirmed as it was asked to
  be (on account, or by the card payment, which is then captured); a hold that was waiting
  for a bank transfer stays held for sales to confirm when the money arrives.
- ``booking_screening_deny``: the booking is cancelled (a hold: nothing is refunded, because
  nothing was taken) and any card authorisation released.

``bookings.services`` imports this module, so the decisions import the services inside.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.screening import denied_parties_screen
from bookings.events import event_write as _event
from bookings.exceptions import InvalidTransition, ScreeningReview
from bookings.locks import booking_qs_for_update
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    OutboxMessage,
    Payment,
    PaymentProvider,
    PaymentStatus,
    ScreeningStatus,
)
from bookings.outbox import outbox_handler, outbox_write
from marketplace.locks import slot_class_qs_for_update

if TYPE_CHECKING:
    from bookings.services import Actor

logger = logging.getLogger(__name__)

# How long a matched hold is kept for sales' review, from the match (at least).
SCREENING_HOLD = timedelta(days=7)

SCREENING_REVIEW_EVENT = "booking.screening_review"
SCREENING_CLEARED_EVENT = "booking.screening_cleared"
SCREENING_DENIED_EVENT = "booking.screening_denied"


def screening_review_error() -> ScreeningReview:
    return ScreeningReview(
        _(
            "This booking needs a compliance review before it can be confirmed. It stays held "
            "meanwhile, and our sales team will contact you."
        )
    )


def booking_screening_check(
    booking: Booking, *, actor: Actor, on_account: bool, now: datetime
) -> ScreeningReview | None:
    """Screen ``booking`` (locked by the caller, its organisation loaded) before it is
    confirmed. Returns None when it may be confirmed (``screening_status`` is then ``clear``
    or ``cleared``; the caller saves it with the confirmation). On a match it records the
    match, extends the hold, writes the event and the sales notice, and returns the error
    for the caller to raise *after* its transaction commits (raising inside would roll the
    match back). A booking already matched or denied returns the error without writing."""
    if booking.screening_status == ScreeningStatus.CLEARED:
        return None
    if booking.screening_status in (ScreeningStatus.MATCH, ScreeningStatus.DENIED):
        return screening_review_error()
    organisation = booking.organisation
    hits = denied_parties_screen(
        names=[organisation.name, booking.customer_organisation], country=organisation.country
    )
    if not hits:
        booking.screening_status = ScreeningStatus.CLEAR
        return None
    booking.screening_status = ScreeningStatus.MATCH
    booking.screening_note = "\n".join(hit.describe() for hit in hits)
    if booking.hold_expires_at is not None:
        booking.hold_expires_at = max(booking.hold_expires_at, now + SCREENING_HOLD)
    booking.save(
        update_fields=["screening_status", "screening_note", "hold_expires_at", "updated_at"]
    )
    event = _event(
        booking,
        type=SCREENING_REVIEW_EVENT,
        actor=actor,
        reason=booking.screening_note,
        # How the confirmation was asked for, so clearing it can finish it the same way.
        data={"on_account": on_account, "hold_expires_at": booking.hold_expires_at.isoformat()}
        if booking.hold_expires_at
        else {"on_account": on_account},
        now=now,
    )
    outbox_write(
        topic="booking.screening_notice",
        payload={"booking_id": booking.pk, "event_id": event.pk},
        dedupe_key=f"booking.screening_notice:{event.pk}",
    )
    logger.warning("booking %s held for denied-party review", booking.reference)
    return screening_review_error()


def _requested_on_account(booking: Booking) -> bool:
    data = (
        BookingEvent.objects.filter(booking=booking, type=SCREENING_REVIEW_EVENT)
        .order_by("-pk")
        .values_list("data", flat=True)
        .first()
    )
    return bool(data and data.get("on_account"))


def _record_decision(
    booking: Booking, decision: str, *, actor: Actor, note: str, now: datetime
) -> None:
    """Sales' decision on a matched booking (locked): its status, the note, the event."""
    booking.screening_status = decision
    booking.screening_note = "\n".join(filter(None, [booking.screening_note, note]))
    booking.save(update_fields=["screening_status", "screening_note", "updated_at"])
    event_type = {
        ScreeningStatus.CLEARED: SCREENING_CLEARED_EVENT,
        ScreeningStatus.DENIED: SCREENING_DENIED_EVENT,
    }[ScreeningStatus(decision)]
    _event(
        booking, type=event_type, actor=actor, reason=note, data={"screening": decision}, now=now
    )


def _not_matched(booking: Booking, to_status: str) -> InvalidTransition:
    return InvalidTransition(
        from_status=booking.screening_status,
        to_status=to_status,
        message=_("Booking %(ref)s is not waiting for a screening decision.")
        % {"ref": booking.reference},
    )


def booking_screening_clear(
    *, booking_id: int, actor: Actor, note: str = "", now: datetime | None = None
) -> Booking:
    """Sales found the match to be someone else: record ``cleared`` (with the note and who),
    then finish the confirmation that was stopped: a card payment authorised meanwhile is
    confirmed and captured, an on-account confirmation is confirmed on account (within the
    credit limit). Otherwise the hold stays held for sales to confirm. A hold that lapsed
    meanwhile is not revived: its card authorisation is released.

    Idempotent for a cleared booking. Raises ``InvalidTransition`` unless the booking is
    matched or cleared; what ``booking_confirm`` raises (e.g. ``CreditLimitExceeded``: the
    booking stays cleared and held)."""
    from bookings.services import booking_confirm  # services imports this module

    now = now or timezone.now()
    with transaction.atomic():
        booking = booking_qs_for_update().get(pk=booking_id)
        if booking.screening_status == ScreeningStatus.MATCH:
            _record_decision(booking, ScreeningStatus.CLEARED, actor=actor, note=note, now=now)
        elif booking.screening_status != ScreeningStatus.CLEARED:
            raise _not_matched(booking, ScreeningStatus.CLEARED)
    card = list(
        booking.payments.filter(
            provider=PaymentProvider.STRIPE,
            status__in=(PaymentStatus.AUTHORISED, PaymentStatus.SUCCEEDED),
        )
    )
    status = booking.status_at(now)
    if status == BookingStatus.HELD and (card or _requested_on_account(booking)):
        with transaction.atomic():
            booking = booking_confirm(
                booking_id=booking.pk,
                actor=actor,
                on_account=not card,
                reason=_("Denied-party screening cleared."),
                now=now,
            )
            for payment in card:
                if payment.status == PaymentStatus.AUTHORISED:
                    outbox_write(
                        topic="payment.capture",
                        payload={"payment_id": payment.pk},
                        dedupe_key=f"payment.capture:{payment.pk}",
                    )
    elif status != BookingStatus.HELD and status != BookingStatus.CONFIRMED:
        with transaction.atomic():
            _release(card)
    return booking


def _release(payments: list[Payment]) -> None:
    """Queue the release of each card authorisation (never captured: nothing to refund)."""
    for payment in payments:
        if payment.status == PaymentStatus.AUTHORISED:
            outbox_write(
                topic="payment.release",
                payload={"payment_id": payment.pk, "notify": False, "reason": ""},
                dedupe_key=f"payment.release:{payment.pk}",
            )


def booking_screening_deny(
    *, booking_id: int, actor: Actor, note: str = "", now: datetime | None = None
) -> Booking:
    """Sales confirmed the match: record ``denied``, cancel the booking (``booking_cancel``:
    a hold was never paid, so nothing is refunded) and release any card authorisation.
    Idempotent for a denied booking. Raises ``InvalidTransition`` unless it is matched."""
    from bookings.services import booking_cancel  # services imports this module

    now = now or timezone.now()
    with transaction.atomic():
        # Lock order: the class, then the booking (booking_cancel takes them again).
        slot_class_id = Booking.objects.values_list("slot_class_id", flat=True).get(pk=booking_id)
        slot_class_qs_for_update().get(pk=slot_class_id)
        booking = booking_qs_for_update().get(pk=booking_id)
        if booking.screening_status == ScreeningStatus.DENIED:
            return booking
        if booking.screening_status != ScreeningStatus.MATCH:
            raise _not_matched(booking, ScreeningStatus.DENIED)
        _record_decision(booking, ScreeningStatus.DENIED, actor=actor, note=note, now=now)
        booking = booking_cancel(
            booking_id=booking.pk,
            actor=actor,
            reason=_("The booking could not be accepted after a compliance review."),
            now=now,
        )
        _release(
            list(
                booking.payments.filter(
                    provider=PaymentProvider.STRIPE, status=PaymentStatus.AUTHORISED
                )
            )
        )
    return booking


@outbox_handler("booking.screening_notice")
def handle_screening_notice(message: OutboxMessage) -> None:
    """Tell sales a booking is held for a denied-party review."""
    recipient = getattr(settings, "MOONSLOT_SALES_EMAIL", "")
    if not recipient:
        return
    booking = Booking.objects.select_related("organisation", "slot_class__mission").get(
        pk=message.payload["booking_id"]
    )
    if booking.screening_status != ScreeningStatus.MATCH:
        return  # decided already
    admin_url = settings.SITE_URL + reverse("admin:bookings_booking_change", args=[booking.pk])
    body = (
        f"Booking {booking.reference} ({booking.organisation.name}"
        f"{', for ' + booking.customer_organisation if booking.customer_organisation else ''}"
        f") was not confirmed: the customer may be on the denied-party list.\n\n"
        f"{booking.screening_note}\n\n"
        f"The hold is kept until {booking.hold_expires_at:%Y-%m-%d %H:%M %Z}. Clear or deny "
        f"it from the booking's page (actions “Clear screening” and “Deny”):\n{admin_url}\n"
    )
    EmailMessage(
        subject=f"[Moonslot] Screening review: booking {booking.reference}",
        body=body,
        to=[recipient],
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": "screening"},
    ).send()
