"""The printable invoice, receipt or credit note: portrait A4, in the customer's language.

It prints what a qualified invoice must show: the seller and its registration number, the
buyer, the date, what was sold (reduced-rate items marked), and per tax rate the taxable
total and the tax. Figures come from the document as frozen when it was numbered
(``bookings.billing``); the font is the manifests' CJK font, so Japanese names print.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from bookings.manifest_pdf import FONT, add_cjk_font
from bookings.models import BillingDocument, DocumentKind, PaymentProvider
from marketplace.money import Money

GREY = (90, 90, 90)
REDUCED_RATE_PERCENT = 8


def _title(kind: str) -> str:
    return {
        DocumentKind.INVOICE: _("Invoice"),
        DocumentKind.RECEIPT: _("Receipt"),
        DocumentKind.CREDIT_NOTE: _("Credit note"),
    }[DocumentKind(kind)]


def _date(value: datetime | None) -> str:
    return timezone.localtime(value).date().isoformat() if value else "—"


def _description(document: BillingDocument) -> tuple[str, list[tuple[str, str]]]:
    """The sold (or refunded) line, and the facts of the transaction."""
    booking = document.booking
    what = _("Payload slot %(cls)s on %(mission)s, booking %(ref)s") % {
        "cls": booking.slot_class.display_name,
        "mission": booking.slot_class.mission.display_name,
        "ref": booking.reference,
    }
    facts: list[tuple[str, str]] = []
    instalment = document.instalment
    if instalment is not None:
        what = f"{instalment.label} — {what}"
    if document.kind == DocumentKind.INVOICE and instalment is not None:
        facts.append((_("Due"), _date(instalment.due_at)))
        if booking.payment_reference:
            facts.append((_("Quote on a bank transfer"), booking.payment_reference))
    payment = document.payment
    if document.kind == DocumentKind.RECEIPT and payment is not None:
        facts.append((_("Received"), _date(payment.succeeded_at)))
        facts.append((_("Paid by"), str(PaymentProvider(payment.provider).label)))
    refund = document.refund
    if document.kind == DocumentKind.CREDIT_NOTE and refund is not None:
        what = _("Refund: %(reason)s — %(what)s") % {
            "reason": refund.get_reason_display(),
            "what": what,
        }
        facts.append((_("Refunded"), _date(refund.completed_at or document.issued_at)))
        if payment is not None:
            facts.append((_("Refund of the payment received"), _date(payment.succeeded_at)))
    return what, facts


def billing_document_pdf(document: BillingDocument, *, language: str = "en") -> bytes:
    """The document as PDF bytes. ``document`` should come with its booking, slot class,
    mission, instalment, payment and refund selected. Raises ``ManifestFontMissing``
    without the CJK font."""
    with translation.override(language):
        return _render(document)


def _render(document: BillingDocument) -> bytes:
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(auto=True, margin=18)
    add_cjk_font(pdf)
    title = _title(document.kind)
    pdf.set_title(f"{title} {document.number}")
    pdf.set_creator("Moonslot")
    pdf.add_page()
    width = pdf.epw

    def line(text: str, *, size: float = 10, height: float = 5.5, align: str = "L") -> None:
        pdf.set_font(FONT, size=size)
        pdf.multi_cell(width, height, text, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def pair(label: str, value: str) -> None:
        pdf.set_font(FONT, size=10)
        pdf.set_text_color(*GREY)
        pdf.cell(60, 6, label)
        pdf.set_text_color(0, 0, 0)
        pdf.multi_cell(width - 60, 6, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line(title, size=20, height=10)
    pair(_("Number"), document.number)
    pair(_("Issued"), _date(document.issued_at))
    pdf.ln(3)
    line(_("To: %(name)s") % {"name": document.buyer_name}, size=13, height=7)
    pdf.ln(2)
    pdf.set_text_color(*GREY)
    line(_("Issued by"), size=9)
    pdf.set_text_color(0, 0, 0)
    line(settings.MOONSLOT_SELLER_NAME)
    line(settings.MOONSLOT_SELLER_ADDRESS)
    if document.seller_registration_number:
        line(_("Registration number: %(number)s") % {"number": document.seller_registration_number})
    pdf.ln(4)

    what, facts = _description(document)
    for label, value in facts:
        pair(label, value)
    pdf.ln(3)

    money = document.total
    rates = [entry["rate_percent"] for entry in document.tax_lines]
    rate_text = " / ".join(f"{rate}%" for rate in rates) if rates else _("not taxed")
    reduced = REDUCED_RATE_PERCENT in rates
    if reduced:
        what = f"{what} *"
    pdf.set_font(FONT, size=10)
    pdf.set_fill_color(235, 235, 235)
    pdf.cell(width - 70, 7, _("Description"), fill=True)
    pdf.cell(25, 7, _("Tax rate"), fill=True, align="R")
    pdf.cell(45, 7, _("Amount (tax incl.)"), fill=True, align="R", new_x=XPos.LMARGIN)
    pdf.ln(7)
    top = pdf.get_y()
    pdf.multi_cell(width - 70, 6, what, new_x=XPos.RIGHT, new_y=YPos.TOP)
    bottom = pdf.get_y()
    pdf.set_xy(pdf.l_margin + width - 70, top)
    pdf.cell(25, 6, rate_text, align="R")
    pdf.cell(45, 6, money.format(), align="R")
    pdf.set_y(max(bottom, top + 6) + 2)
    pdf.set_font(FONT, size=12)
    pdf.cell(width - 45, 8, _("Total (tax included)"), align="R")
    pdf.cell(45, 8, money.format(), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)

    line(_("Consumption tax by rate"), size=11, height=7)
    if not document.tax_lines:
        line(_("Not subject to consumption tax."))
    for entry in document.tax_lines:
        line(
            _("%(rate)s%% — taxable total %(taxable)s (tax included), tax %(tax)s")
            % {
                "rate": entry["rate_percent"],
                "taxable": Money(entry["taxable_amount"], document.currency).format(),
                "tax": Money(entry["tax_amount"], document.currency).format(),
            }
        )
    pdf.ln(2)
    pdf.set_text_color(*GREY)
    if reduced:
        line(_("* Reduced-rate item."), size=8, height=4.5)
    line(
        _(
            "Prices include consumption tax. The tax is computed once per rate on this "
            "document's total and rounded down."
        ),
        size=8,
        height=4.5,
    )
    if document.kind == DocumentKind.CREDIT_NOTE:
        line(
            _("This credit note reduces the amount paid by the refund shown."),
            size=8,
            height=4.5,
        )
    pdf.set_text_color(0, 0, 0)
    return bytes(pdf.output())
