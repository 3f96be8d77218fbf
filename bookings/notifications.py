"""Outbox handlers that tell people what happened to their bookings.

Moonslot e-mails the person who booked on the site, or the organisation's notification
address (resellers: their desk; never the reseller's end customer)."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from bookings.models import Booking, BookingEvent, BookingStatus, OutboxMessage
from bookings.outbox import outbox_handler
from marketplace.models import Channel

SUBJECTS = {
    "booking.held": _("Booking %(ref)s is held"),
    "booking.confirmed": _("Booking %(ref)s is confirmed"),
    "booking.cancelled": _("Booking %(ref)s is cancelled"),
    "booking.expired": _("Your hold %(ref)s has expired"),
    "booking.hold_reminder": _("Your hold %(ref)s expires soon"),
}


def booking_recipients(booking: Booking) -> list[str]:
    if booking.channel == Channel.WEB and booking.created_by is not None:
        return [booking.created_by.email]
    email = booking.organisation.notification_email
    return [email] if email else []


def _language(booking: Booking) -> str:
    if booking.channel == Channel.WEB and booking.created_by is not None:
        return booking.created_by.preferred_language or "en"
    return "en"


def send_booking_email(booking: Booking, event_type: str, event: BookingEvent | None) -> int:
    recipients = booking_recipients(booking)
    if not recipients or event_type not in SUBJECTS:
        return 0
    with translation.override(_language(booking)):
        context = {
            "booking": booking,
            "event": event,
            "event_type": event_type,
            "site_url": settings.SITE_URL,
        }
        body = render_to_string("emails/booking_event.txt", context)
        subject = "[Moonslot] " + str(SUBJECTS[event_type]) % {"ref": booking.reference}
    message = EmailMessage(
        subject=subject,
        body=body,
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": event_type},
    )
    return message.send()


@outbox_handler("booking.notify")
def handle_booking_notify(message: OutboxMessage) -> None:
    booking = Booking.objects.select_related(
        "organisation", "created_by", "slot_class__mission"
    ).get(pk=message.payload["booking_id"])
    event = BookingEvent.objects.filter(pk=message.payload.get("event_id")).first()
    send_booking_email(booking, message.payload["type"], event)


@outbox_handler("bookings.expired")
def handle_bookings_expired(message: OutboxMessage) -> None:
    """One sweep of a class: tell each booking's contact its hold lapsed."""
    expired_at = datetime.fromisoformat(message.payload["expired_at"])
    bookings = Booking.objects.select_related(
        "organisation", "created_by", "slot_class__mission"
    ).filter(
        slot_class_id=message.payload["slot_class_id"],
        status=BookingStatus.EXPIRED,
        expired_at=expired_at,
    )
    for booking in bookings.iterator(chunk_size=500):
        send_booking_email(booking, "booking.expired", None)


@outbox_handler("booking.hold_reminder")
def handle_hold_reminder(message: OutboxMessage) -> None:
    booking = Booking.objects.select_related(
        "organisation", "created_by", "slot_class__mission"
    ).get(pk=message.payload["booking_id"])
    if booking.status_at() == BookingStatus.HELD:  # confirmed or lapsed since: say nothing
        send_booking_email(booking, "booking.hold_reminder", None)
