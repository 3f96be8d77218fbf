"""Instalments falling due: a reminder before, a notice once overdue, and a flag for sales
after the grace period. Run by Celery beat (``config/celery.py``); every step is safe to run
again, at any time, from two workers at once.

- ``instalments_remind``: each due instalment of a confirmed booking gets one reminder when
  ``due_at - plan.reminder_days`` has come (and not after ``due_at``: then the overdue notice
  speaks instead). Its invoice is issued with the reminder (``bookings.billing``): a
  deposit is paid when the hold is confirmed and gets a receipt, an instalment paid before
  its reminder gets a receipt only, and sales may issue an invoice earlier with
  ``documents_queue_for_instalment``.
- ``instalments_overdue``: one overdue notice per instalment once ``due_at`` has passed; a
  booking with an instalment unpaid ``plan.grace_days`` after it fell due gets
  ``overdue_since`` (the earliest such due date), an event and a note to sales — never a
  cancellation. A flagged booking with nothing past its grace any more is cleared.
  ``booking_overdue_refresh`` does the same for one booking: call it where a payment is
  recorded so the flag goes at once rather than at the next sweep.

Held bookings get none of this: their deposit is what confirms them, and the hold's own
expiry handles a hold left unpaid. Each sweep claims its rows under ``select_for_update(
skip_locked=True)`` and stamps them in the transaction that writes the outbox rows, so the
e-mails go once whichever beat or worker runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from bookings.billing import billing_document_issue, documents_queue_for_instalment
from bookings.models import (
    BillingDocument,
    Booking,
    BookingEvent,
    BookingStatus,
    DocumentKind,
    EventType,
    Instalment,
    InstalmentStatus,
    OutboxMessage,
)
from bookings.notifications import _language, booking_recipients
from bookings.outbox import outbox_handler, outbox_write
from marketplace.models import PaymentPlan

REMIND_TOPIC = "instalment.remind"
OVERDUE_TOPIC = "instalment.overdue"
SALES_TOPIC = "booking.overdue_sales"
ACTOR = "system:instalments"
BATCH = 500

SUBJECTS = {
    REMIND_TOPIC: _("Booking %(ref)s: %(label)s of %(amount)s is due on %(due)s"),
    OVERDUE_TOPIC: _("Booking %(ref)s: %(label)s of %(amount)s is overdue"),
}
SALES_SUBJECT = _("Booking %(ref)s is unpaid past the grace period")


def _open_instalments() -> QuerySet[Instalment]:
    """Due instalments with a date, of confirmed bookings sold on a payment plan."""
    return Instalment.objects.filter(
        status=InstalmentStatus.DUE,
        due_at__isnull=False,
        booking__status=BookingStatus.CONFIRMED,
        booking__slot_class__payment_plan__isnull=False,
    )


def _plans() -> list[tuple[int, int, int]]:
    """(id, reminder days, grace days) of every plan: the sweeps query per plan, a handful."""
    return list(PaymentPlan.objects.values_list("pk", "reminder_days", "grace_days"))


def _claim(instalments: QuerySet[Instalment], field: str, now: datetime) -> list[int]:
    """Lock up to BATCH of the instalments (skipping rows another worker holds), stamp
    ``field`` on those still unstamped and return their ids. Call inside a transaction."""
    ids = list(
        instalments.filter(**{f"{field}__isnull": True})
        .order_by("pk")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("pk", flat=True)[:BATCH]
    )
    Instalment.objects.filter(pk__in=ids, **{f"{field}__isnull": True}).update(**{field: now})
    return ids


def instalments_remind(*, now: datetime | None = None) -> int:
    """Send the reminders whose time has come and issue those instalments' invoices.
    Returns how many reminders were queued."""
    now = now or timezone.now()
    queued = 0
    for plan_id, reminder_days, _grace in _plans():
        window = _open_instalments().filter(
            booking__slot_class__payment_plan_id=plan_id,
            due_at__gt=now,
            due_at__lte=now + timedelta(days=reminder_days),
        )
        with transaction.atomic():
            ids = _claim(window, "reminded_at", now)
            for instalment in Instalment.objects.filter(pk__in=ids):
                outbox_write(
                    topic=REMIND_TOPIC,
                    payload={"instalment_id": instalment.pk},
                    dedupe_key=f"{REMIND_TOPIC}:{instalment.pk}",
                )
                documents_queue_for_instalment(instalment)
        queued += len(ids)
    return queued


def instalments_overdue(*, now: datetime | None = None) -> dict[str, int]:
    """Send the overdue notices, flag bookings past the grace period and clear the flag of
    bookings with nothing past it any more. Returns the counts."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = _claim(_open_instalments().filter(due_at__lt=now), "overdue_notified_at", now)
        for instalment in Instalment.objects.filter(pk__in=ids):
            outbox_write(
                topic=OVERDUE_TOPIC,
                payload={"instalment_id": instalment.pk},
                dedupe_key=f"{OVERDUE_TOPIC}:{instalment.pk}",
            )
            # Normally issued with the reminder; a date set already past skipped it.
            documents_queue_for_instalment(instalment)
    past_grace = _past_grace(now)
    flagged = _overdue_flag(Booking.objects.all(), past_grace, now)
    cleared = _overdue_clear(Booking.objects.filter(overdue_since__isnull=False), past_grace, now)
    return {"notified": len(ids), "flagged": flagged, "cleared": cleared}


def booking_overdue_refresh(*, booking_id: int, now: datetime | None = None) -> None:
    """Flag or clear one booking now, as the sweep would. Idempotent; safe inside the
    caller's transaction (it writes its event and outbox row there)."""
    now = now or timezone.now()
    bookings = Booking.objects.filter(pk=booking_id)
    past_grace = _past_grace(now)
    _overdue_flag(bookings, past_grace, now)
    _overdue_clear(bookings, past_grace, now)


def _past_grace(now: datetime) -> Exists:
    """Bookings with an instalment still due after its plan's grace period."""
    grace = Q(pk__in=[])
    for plan_id, _reminder, grace_days in _plans():
        grace |= Q(
            booking__slot_class__payment_plan_id=plan_id,
            due_at__lt=now - timedelta(days=grace_days),
        )
    return Exists(_open_instalments().filter(grace, booking=OuterRef("pk")))


def _overdue_flag(bookings: QuerySet[Booking], past_grace: Exists, now: datetime) -> int:
    with transaction.atomic():
        ids = list(
            bookings.filter(past_grace, overdue_since__isnull=True)
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:BATCH]
        )
        if not ids:
            return 0
        # Overdue since the earliest due date still unpaid (a lock cannot take an aggregate).
        first_due = (
            Instalment.objects.filter(
                booking=OuterRef("pk"), status=InstalmentStatus.DUE, due_at__lt=now
            )
            .order_by("due_at")
            .values("due_at")[:1]
        )
        Booking.objects.filter(pk__in=ids, overdue_since__isnull=True).update(
            overdue_since=Coalesce(Subquery(first_due), Value(now))
        )
        flagged = list(
            Booking.objects.filter(pk__in=ids).only("pk", "organisation_id", "overdue_since")
        )
        events = BookingEvent.objects.bulk_create(
            [
                BookingEvent(
                    booking=booking,
                    organisation_id=booking.organisation_id,
                    type=EventType.BOOKING_OVERDUE,
                    actor=ACTOR,
                    reason="An instalment is unpaid after the grace period.",
                    data={"overdue_since": _iso(booking.overdue_since)},
                    created_at=now,
                )
                for booking in flagged
            ]
        )
        for event in events:
            outbox_write(
                topic=SALES_TOPIC,
                payload={
                    "booking_id": event.booking_id,
                    "event_id": event.pk,
                    "at": now.isoformat(),
                },
                dedupe_key=f"{SALES_TOPIC}:{event.pk}",
            )
    return len(flagged)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _overdue_clear(bookings: QuerySet[Booking], past_grace: Exists, now: datetime) -> int:
    with transaction.atomic():
        locked = list(
            bookings.filter(overdue_since__isnull=False)
            .exclude(past_grace)
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .only("pk", "organisation_id")[:BATCH]
        )
        if not locked:
            return 0
        Booking.objects.filter(pk__in=[b.pk for b in locked]).update(overdue_since=None)
        BookingEvent.objects.bulk_create(
            [
                BookingEvent(
                    booking=booking,
                    organisation_id=booking.organisation_id,
                    type=EventType.BOOKING_OVERDUE_CLEARED,
                    actor=ACTOR,
                    reason="Nothing is unpaid past the grace period any more.",
                    created_at=now,
                )
                for booking in locked
            ]
        )
    return len(locked)


# --- e-mails (outbox handlers) -------------------------------------------------------------


def _instalment(message: OutboxMessage) -> Instalment:
    return Instalment.objects.select_related(
        "booking__organisation", "booking__created_by", "booking__slot_class__mission"
    ).get(pk=message.payload["instalment_id"])


def _send_instalment_email(instalment: Instalment, topic: str, invoice: BillingDocument) -> None:
    booking = instalment.booking
    recipients = booking_recipients(booking)
    if not recipients:
        return
    with translation.override(_language(booking)):
        subject = "[Moonslot] " + str(SUBJECTS[topic]) % {
            "ref": booking.reference,
            "label": instalment.label,
            "amount": instalment.money,
            "due": timezone.localtime(instalment.due_at).date().isoformat()
            if instalment.due_at
            else "",
        }
        body = render_to_string(
            "bookings/email/instalment_notice.txt",
            {
                "booking": booking,
                "instalment": instalment,
                "overdue": topic == OVERDUE_TOPIC,
                "invoice": invoice,
                "site_url": settings.SITE_URL,
            },
        )
    EmailMessage(
        subject=subject,
        body=body,
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": topic},
    ).send()


def _instalment_notice(message: OutboxMessage, topic: str) -> None:
    instalment = _instalment(message)
    if instalment.status != InstalmentStatus.DUE:  # paid or cancelled since: nothing to say
        return
    # The invoice is numbered here if its own outbox row has not run yet, so the notice can
    # name it (idempotent: that row then finds it, and only builds and sends it).
    invoice = billing_document_issue(kind=DocumentKind.INVOICE, object_id=instalment.pk)
    _send_instalment_email(instalment, topic, invoice)


@outbox_handler(REMIND_TOPIC)
def handle_instalment_remind(message: OutboxMessage) -> None:
    _instalment_notice(message, REMIND_TOPIC)


@outbox_handler(OVERDUE_TOPIC)
def handle_instalment_overdue(message: OutboxMessage) -> None:
    _instalment_notice(message, OVERDUE_TOPIC)


@outbox_handler(SALES_TOPIC)
def handle_booking_overdue_sales(message: OutboxMessage) -> None:
    """Tell sales a booking is past its grace period, with what is unpaid."""
    booking = Booking.objects.select_related("organisation", "slot_class__mission").get(
        pk=message.payload["booking_id"]
    )
    if booking.overdue_since is None:  # settled before this was sent
        return
    at = datetime.fromisoformat(message.payload["at"])
    unpaid = list(booking.instalments.filter(status=InstalmentStatus.DUE, due_at__lt=at))
    with translation.override(settings.LANGUAGE_CODE):
        body = render_to_string(
            "bookings/email/booking_overdue_sales.txt",
            {"booking": booking, "unpaid": unpaid, "site_url": settings.SITE_URL},
        )
        subject = "[Moonslot sales] " + str(SALES_SUBJECT) % {"ref": booking.reference}
    EmailMessage(
        subject=subject,
        body=body,
        to=[settings.MOONSLOT_SALES_EMAIL],
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": SALES_TOPIC},
    ).send()
