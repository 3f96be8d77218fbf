"""Billing documents: invoices (per instalment), receipts (per succeeded payment) and credit
notes (per succeeded refund), numbered without gaps and issued by a worker.

Queueing is an outbox row written in the caller's transaction (``documents_queue_for_*``), so
a payment recorded is a receipt owed even if the broker is down. The outbox handler then, in
steps that each check what is already done (a rerun after a crash repeats nothing):

1. numbers the document and freezes its figures, in one transaction holding the row lock of
   the (kind, year) ``DocumentSequence``; a second run finds the document (one per
   instalment, payment or refund, by constraint) and takes no number, and a rolled back
   attempt gives its number back, so numbers have no gaps;
2. builds the PDF if it has none;
3. claims ``emailed_at`` with a conditional UPDATE before sending, so two runs never both
   send (a worker dying between the claim and the send loses that e-mail: the document stays
   downloadable from the booking and the admin; a send that fails releases the claim).

Tax (Japan's qualified-invoice rules): prices include consumption tax. The tax a document
shows is computed once per rate over the document's total at that rate, never per line, and
rounded down: ``tax = floor(total_incl * rate / (100 + rate))``. The rules let the seller
pick the rounding, once per invoice and rate; rounding down never shows more tax than the
price holds. USD documents follow the same rule in cents. A zero-rated class shows a 0% line;
an exempt class shows no tax line at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from bookings.models import (
    BillingDocument,
    Booking,
    DocumentKind,
    DocumentSequence,
    Instalment,
    OutboxMessage,
    Payment,
    Refund,
)
from bookings.outbox import outbox_handler, outbox_write

logger = logging.getLogger(__name__)

ISSUE_TOPIC = "document.issue"

NUMBER_PREFIX = {
    DocumentKind.INVOICE: "INV",
    DocumentKind.RECEIPT: "RCT",
    DocumentKind.CREDIT_NOTE: "CRN",
}


# --- queueing (called inside the transaction that makes the document due) ----------------


def _queue(kind: str, object_id: int) -> OutboxMessage | None:
    return outbox_write(
        topic=ISSUE_TOPIC,
        payload={"kind": kind, "object_id": object_id},
        dedupe_key=f"{ISSUE_TOPIC}:{kind}:{object_id}",
    )


def documents_queue_for_payment(payment: Payment) -> OutboxMessage | None:
    """A receipt for a succeeded payment (card or bank transfer). Call it in the transaction
    that records the success; calling it again for the same payment writes nothing."""
    return _queue(DocumentKind.RECEIPT, payment.pk)


def documents_queue_for_refund(refund: Refund) -> OutboxMessage | None:
    """A credit note for a succeeded refund; idempotent like the others."""
    return _queue(DocumentKind.CREDIT_NOTE, refund.pk)


def documents_queue_for_instalment(instalment: Instalment) -> OutboxMessage | None:
    """An invoice for an instalment; idempotent like the others."""
    return _queue(DocumentKind.INVOICE, instalment.pk)


# --- tax ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaxLine:
    rate_percent: int
    taxable_amount: int  # tax included, minor units
    tax_amount: int  # minor units

    def as_dict(self) -> dict[str, int]:
        return {
            "rate_percent": self.rate_percent,
            "taxable_amount": self.taxable_amount,
            "tax_amount": self.tax_amount,
        }


def tax_included(total_incl: int, rate_percent: int) -> int:
    """The consumption tax included in a tax-inclusive total, rounded down."""
    return (total_incl * rate_percent) // (100 + rate_percent)


def tax_lines(amounts: Iterable[tuple[int | None, int]]) -> list[TaxLine]:
    """Group (rate in percent or None for exempt, tax-inclusive amount) by rate and compute
    the tax once per rate. Exempt amounts give no line. Highest rate first."""
    totals: dict[int, int] = {}
    for rate, amount in amounts:
        if rate is None:
            continue
        totals[rate] = totals.get(rate, 0) + amount
    return [
        TaxLine(rate, total, tax_included(total, rate))
        for rate, total in sorted(totals.items(), reverse=True)
    ]


# --- issuing --------------------------------------------------------------------------------


def _booking_of(kind: str, object_id: int) -> tuple[Booking, dict[str, Any], int, str]:
    """The booking, the document's foreign keys, its total and currency."""
    related = ("booking__organisation", "booking__slot_class", "booking__created_by")
    if kind == DocumentKind.INVOICE:
        instalment = Instalment.objects.select_related(*related).get(pk=object_id)
        return (
            instalment.booking,
            {"instalment": instalment},
            instalment.amount,
            instalment.currency,
        )
    payment_related = tuple(f"payment__{name}" for name in related)
    if kind == DocumentKind.RECEIPT:
        payment = Payment.objects.select_related(*related).get(pk=object_id)
        return (
            payment.booking,
            {"payment": payment, "instalment": payment.instalment},
            payment.amount,
            payment.currency,
        )
    if kind == DocumentKind.CREDIT_NOTE:
        refund = Refund.objects.select_related("payment", *payment_related).get(pk=object_id)
        return (
            refund.payment.booking,
            {"refund": refund, "payment": refund.payment},
            refund.amount,
            refund.currency,
        )
    raise ValueError(f"unknown document kind {kind!r}")


def _existing(kind: str, object_id: int) -> BillingDocument | None:
    field = {
        DocumentKind.INVOICE: "instalment_id",
        DocumentKind.RECEIPT: "payment_id",
        DocumentKind.CREDIT_NOTE: "refund_id",
    }[DocumentKind(kind)]
    return BillingDocument.objects.filter(kind=kind, **{field: object_id}).first()


def buyer_name(booking: Booking) -> str:
    """Whom the document is issued to: the organisation that pays (a reseller, a company),
    or, for a personal account, the person's name as given at booking."""
    from accounts.models import OrganisationKind

    if booking.organisation.kind == OrganisationKind.PERSONAL:
        person = booking.customer_name
        if not person and booking.created_by is not None:
            person = booking.created_by.get_full_name()
        return person or booking.organisation.name
    return booking.organisation.name


def _next_number(kind: str, issued_at: datetime) -> str:
    """Take the next number of the kind's sequence for the year; the caller's transaction
    holds the sequence row's lock until it commits, so numbers are given in commit order and
    a rollback gives its number back."""
    year = timezone.localtime(issued_at).year
    DocumentSequence.objects.get_or_create(kind=kind, year=year)
    sequence = DocumentSequence.objects.select_for_update().get(kind=kind, year=year)
    sequence.last_number += 1
    sequence.save(update_fields=["last_number"])
    return f"{NUMBER_PREFIX[DocumentKind(kind)]}-{year}-{sequence.last_number:06d}"


def billing_document_issue(
    *, kind: str, object_id: int, now: datetime | None = None
) -> BillingDocument:
    """Number the document of ``kind`` for the instalment, payment or refund ``object_id``
    and freeze its figures. Idempotent: an existing document is returned as it is."""
    from marketplace.models import TAX_RATE_PERCENT

    existing = _existing(kind, object_id)
    if existing is not None:
        return existing
    booking, links, total, currency = _booking_of(kind, object_id)
    issued_at = now or timezone.now()
    rate = TAX_RATE_PERCENT[booking.slot_class.tax_treatment]
    lines = tax_lines([(rate, total)])
    try:
        with transaction.atomic():
            number = _next_number(kind, issued_at)
            # Another worker may have issued it while this one waited for the lock.
            existing = _existing(kind, object_id)
            if existing is not None:
                transaction.set_rollback(True)
                return existing
            return BillingDocument.objects.create(
                number=number,
                kind=kind,
                booking=booking,
                currency=currency,
                total_amount=total,
                tax_lines=[line.as_dict() for line in lines],
                seller_registration_number=settings.MOONSLOT_SELLER_REGISTRATION_NUMBER,
                buyer_name=buyer_name(booking)[:200],
                issued_at=issued_at,
                **links,
            )
    except IntegrityError:
        existing = _existing(kind, object_id)
        if existing is None:
            raise
        return existing


@outbox_handler(ISSUE_TOPIC)
def handle_document_issue(message: OutboxMessage) -> None:
    document = billing_document_issue(
        kind=message.payload["kind"], object_id=message.payload["object_id"]
    )
    billing_document_deliver(document_id=document.pk)


def billing_document_deliver(*, document_id: int) -> None:
    """Build the document's PDF if it has none and e-mail it once (see the module's notes).
    With nobody to e-mail (a reseller without a notification address) it stays unsent."""
    from bookings.billing_pdf import billing_document_pdf
    from bookings.notifications import _language, booking_recipients

    document = BillingDocument.objects.select_related(
        "booking__organisation",
        "booking__created_by",
        "booking__slot_class__mission",
        "instalment",
        "payment",
        "refund",
    ).get(pk=document_id)
    language = _language(document.booking)
    if document.pdf is None:
        pdf = billing_document_pdf(document, language=language)
        BillingDocument.objects.filter(pk=document.pk, pdf__isnull=True).update(pdf=pdf)
        document.pdf = pdf
    recipients = booking_recipients(document.booking)
    if document.emailed_at is not None or not recipients:
        return
    claimed_at = timezone.now()
    claimed = BillingDocument.objects.filter(pk=document.pk, emailed_at__isnull=True).update(
        emailed_at=claimed_at
    )
    if not claimed:
        return
    try:
        _send(document, recipients, language)
    except Exception:
        BillingDocument.objects.filter(pk=document.pk, emailed_at=claimed_at).update(
            emailed_at=None
        )
        raise


SUBJECTS = {
    DocumentKind.INVOICE: _("Invoice %(number)s for booking %(ref)s"),
    DocumentKind.RECEIPT: _("Receipt %(number)s for booking %(ref)s"),
    DocumentKind.CREDIT_NOTE: _("Credit note %(number)s for booking %(ref)s"),
}


def _send(document: BillingDocument, recipients: list[str], language: str) -> None:
    booking = document.booking
    with translation.override(language):
        subject = "[Moonslot] " + str(SUBJECTS[DocumentKind(document.kind)]) % {
            "number": document.number,
            "ref": booking.reference,
        }
        body = render_to_string(
            "bookings/email/billing_document.txt",
            {
                "document": document,
                "booking": booking,
                "instalment": document.instalment,
                "site_url": settings.SITE_URL,
            },
        )
    message = EmailMessage(
        subject=subject,
        body=body,
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Document": document.number},
    )
    message.attach(f"{document.number}.pdf", bytes(document.pdf or b""), "application/pdf")
    message.send()


# --- configuration check ------------------------------------------------------------------

REGISTRATION_NUMBER = re.compile(r"T\d{13}")
DEMO_REGISTRATION_NUMBER = "T0000000000000"


@checks.register()
def check_seller_registration_number(**kwargs: Any) -> list[checks.CheckMessage]:
    """The qualified-invoice issuer number printed on every document: T and 13 digits."""
    number = getattr(settings, "MOONSLOT_SELLER_REGISTRATION_NUMBER", "")
    if not REGISTRATION_NUMBER.fullmatch(number):
        return [
            checks.Error(
                f"MOONSLOT_SELLER_REGISTRATION_NUMBER is {number!r}: a qualified-invoice "
                "registration number is T followed by 13 digits.",
                id="bookings.E101",
            )
        ]
    return []


@checks.register(deploy=True)
def check_seller_registration_number_is_real(**kwargs: Any) -> list[checks.CheckMessage]:
    if getattr(settings, "MOONSLOT_SELLER_REGISTRATION_NUMBER", "") == DEMO_REGISTRATION_NUMBER:
        return [
            checks.Warning(
                "MOONSLOT_SELLER_REGISTRATION_NUMBER is the demo value: invoices would carry "
                "no valid registration number.",
                id="bookings.W101",
            )
        ]
    return []
