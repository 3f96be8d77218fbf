"""Invoices, receipts and credit notes: tax per rate (qualified-invoice rules), gapless
numbers that reruns never repeat, one e-mail each with the PDF, and downloads only for the
booking's own organisation."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from bookings import billing
from bookings.billing import (
    TaxLine,
    billing_document_deliver,
    billing_document_issue,
    documents_queue_for_instalment,
    documents_queue_for_payment,
    tax_lines,
)
from bookings.models import BillingDocument, DocumentKind, DocumentSequence, OutboxMessage
from bookings.outbox import outbox_process
from marketplace.models import TaxTreatment
from tests.bookings.billing_helpers import (  # noqa: F401 (cjk_font: a fixture)
    bank_payment,
    cjk_font,
    confirmed_booking,
    days,
    instalment,
    plan_class,
)
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.stripe_fake import _stripe_sandbox_process, stripe_sandbox  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cjk_font")]

Capture = Callable[..., Any]


def pdf_text(document: BillingDocument) -> str:
    assert document.pdf is not None
    data = bytes(document.pdf)
    assert data.startswith(b"%PDF")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def year() -> int:
    return timezone.localtime().year


def issue_invoice(capture: Capture, **booking_fields: Any) -> BillingDocument:
    booking = confirmed_booking(**booking_fields)
    due = instalment(booking, amount=1_100_000, due_at=timezone.now() + days(10))
    with capture(execute=True):
        documents_queue_for_instalment(due)
    return BillingDocument.objects.get(instalment=due)


# --- tax -------------------------------------------------------------------------------------


def test_the_tax_in_a_tax_inclusive_total_is_computed_once_per_rate_and_rounded_down() -> None:
    # Three ¥105 items at 10%: per item 9.54 → 9 each would be ¥27; once on ¥315 it is ¥28.
    assert tax_lines([(10, 105), (10, 105), (10, 105)]) == [TaxLine(10, 315, 28)]
    # ¥1,100,000 at 10% includes exactly ¥100,000; ¥540,000 at 8% exactly ¥40,000.
    assert tax_lines([(10, 1_100_000), (8, 540_000), (None, 70_000), (0, 30_000)]) == [
        TaxLine(10, 1_100_000, 100_000),
        TaxLine(8, 540_000, 40_000),
        TaxLine(0, 30_000, 0),
    ]
    # ¥1,099 at 10%: 99.9 is rounded down to 99, never up.
    assert tax_lines([(10, 1_099)]) == [TaxLine(10, 1_099, 99)]
    # Exempt amounts give no line at all.
    assert tax_lines([(None, 5_000)]) == []


def test_the_invoice_for_a_jpy_instalment_shows_the_tax_lines_seller_and_buyer(
    django_capture_on_commit_callbacks: Capture, settings: Any
) -> None:
    settings.MOONSLOT_SELLER_REGISTRATION_NUMBER = "T1234567890123"
    organisation = OrganisationFactory.create(name="株式会社ルナペイロード")
    invoice = issue_invoice(django_capture_on_commit_callbacks, organisation=organisation)

    assert invoice.number == f"INV-{year()}-000001"
    assert (invoice.kind, invoice.total_amount, invoice.currency) == ("invoice", 1_100_000, "JPY")
    assert invoice.tax_lines == [
        {"rate_percent": 10, "taxable_amount": 1_100_000, "tax_amount": 100_000}
    ]
    assert invoice.seller_registration_number == "T1234567890123"
    assert invoice.buyer_name == "株式会社ルナペイロード"
    text = pdf_text(invoice)
    for expected in (
        invoice.number,
        "T1234567890123",
        "株式会社ルナペイロード",
        "¥1,100,000",
        "tax ¥100,000",
        "10%",
        str(invoice.booking.payment_reference),
    ):
        assert expected in text, expected


def test_the_invoice_is_e_mailed_once_with_its_pdf_to_the_booker(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    invoice = issue_invoice(django_capture_on_commit_callbacks)
    booker = invoice.booking.created_by
    assert booker is not None

    [message] = mail.outbox
    assert message.to == [booker.email]
    assert message.subject == (
        f"[Moonslot] Invoice {invoice.number} for booking {invoice.booking.reference}"
    )
    [(filename, content, mimetype)] = message.attachments
    assert (filename, mimetype) == (f"{invoice.number}.pdf", "application/pdf")
    assert content == bytes(invoice.pdf or b"")
    assert f"/bookings/{invoice.booking.reference}/documents/{invoice.number}.pdf" in message.body
    assert invoice.emailed_at is not None

    # A rerun of the delivery (a redelivered task) sends nothing more.
    billing_document_deliver(document_id=invoice.pk)
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    ("treatment", "lines", "shown"),
    [
        (
            TaxTreatment.REDUCED,
            [{"rate_percent": 8, "taxable_amount": 1_100_000, "tax_amount": 81_481}],
            "Reduced-rate item",
        ),
        (
            TaxTreatment.ZERO_RATED,
            [{"rate_percent": 0, "taxable_amount": 1_100_000, "tax_amount": 0}],
            "0% — taxable total ¥1,100,000 (tax included), tax ¥0",
        ),
        (TaxTreatment.EXEMPT, [], "Not subject to consumption tax."),
    ],
    ids=["reduced", "zero-rated", "exempt"],
)
def test_reduced_zero_rated_and_exempt_classes(
    django_capture_on_commit_callbacks: Capture,
    treatment: str,
    lines: list[dict[str, int]],
    shown: str,
) -> None:
    invoice = issue_invoice(
        django_capture_on_commit_callbacks, slot_class=plan_class(tax=treatment)
    )
    assert invoice.tax_lines == lines
    assert shown in pdf_text(invoice)


def test_usd_documents_compute_the_tax_in_cents(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking(currency="USD", price=5_500_00)
    payment = bank_payment(booking, amount=1_234_56)  # $1,234.56 includes $112.23 (.232…)
    with django_capture_on_commit_callbacks(execute=True):
        documents_queue_for_payment(payment)

    receipt = BillingDocument.objects.get(payment=payment)
    assert receipt.number == f"RCT-{year()}-000001"
    assert receipt.tax_lines == [
        {"rate_percent": 10, "taxable_amount": 123_456, "tax_amount": 11_223}
    ]
    text = pdf_text(receipt)
    assert "$1,234.56" in text
    assert "tax $112.23" in text
    assert "Bank transfer" in text


# --- numbering and reruns -----------------------------------------------------------------


def test_numbers_are_gapless_per_kind_and_reruns_never_take_another(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking()
    first = instalment(booking, amount=1_000_000, due_at=timezone.now() + days(5))
    second = instalment(booking, amount=2_000_000, due_at=timezone.now() + days(50))
    payment = bank_payment(booking, amount=1_000_000, instalment=first)

    with django_capture_on_commit_callbacks(execute=True):
        documents_queue_for_instalment(first)
        documents_queue_for_instalment(first)  # queued twice: one row (dedupe key)
        documents_queue_for_payment(payment)
    assert OutboxMessage.objects.filter(topic=billing.ISSUE_TOPIC).count() == 2
    # The handler run again for the same object (a lapsed lease) finds the document.
    again = billing_document_issue(kind=DocumentKind.INVOICE, object_id=first.pk)
    with django_capture_on_commit_callbacks(execute=True):
        documents_queue_for_instalment(second)

    numbers = list(
        BillingDocument.objects.order_by("pk").values_list("kind", "number", "instalment_id")
    )
    assert numbers == [
        ("invoice", f"INV-{year()}-000001", first.pk),
        ("receipt", f"RCT-{year()}-000001", first.pk),
        ("invoice", f"INV-{year()}-000002", second.pk),
    ]
    assert again.number == f"INV-{year()}-000001"
    assert len(mail.outbox) == 3


def test_a_crash_while_numbering_gives_the_number_back(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking()
    due = instalment(booking, amount=1_000_000, due_at=timezone.now() + days(5))
    with (
        mock.patch.object(
            BillingDocument.objects, "create", side_effect=RuntimeError("worker died")
        ),
        pytest.raises(RuntimeError),
    ):
        billing_document_issue(kind=DocumentKind.INVOICE, object_id=due.pk)
    assert not BillingDocument.objects.exists()
    assert not DocumentSequence.objects.filter(last_number__gt=0).exists()

    document = billing_document_issue(kind=DocumentKind.INVOICE, object_id=due.pk)
    assert document.number == f"INV-{year()}-000001"


def test_a_failed_send_is_retried_by_the_outbox_with_the_same_number_and_one_e_mail(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    booking = confirmed_booking()
    due = instalment(booking, amount=1_000_000, due_at=timezone.now() + days(5))
    with (
        mock.patch.object(billing, "_send", side_effect=ConnectionError("SMTP down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        documents_queue_for_instalment(due)
    document = BillingDocument.objects.get()
    assert document.pdf is not None
    assert document.emailed_at is None  # the claim was released
    assert mail.outbox == []
    message = OutboxMessage.objects.get(topic=billing.ISSUE_TOPIC)
    assert "SMTP down" in message.last_error

    # The sweep hands the row out again once its retry delay has passed.
    OutboxMessage.objects.filter(pk=message.pk).update(locked_until=None)
    assert outbox_process(message_id=message.pk) is True
    assert outbox_process(message_id=message.pk) is False
    assert BillingDocument.objects.get().number == f"INV-{year()}-000001"
    assert DocumentSequence.objects.get(kind="invoice").last_number == 1
    assert len(mail.outbox) == 1


def test_a_document_with_nobody_to_e_mail_is_issued_and_kept_unsent(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    organisation = OrganisationFactory.create(notification_email="")
    booking = confirmed_booking(organisation=organisation, created_by=None)
    booking.channel = "admin"
    booking.save(update_fields=["channel"])
    payment = bank_payment(booking, amount=500_000)
    with django_capture_on_commit_callbacks(execute=True):
        documents_queue_for_payment(payment)
    receipt = BillingDocument.objects.get()
    assert receipt.pdf is not None
    assert receipt.emailed_at is None
    assert mail.outbox == []


# --- credit notes ----------------------------------------------------------------------------


@pytest.mark.usefixtures("stripe_sandbox")
def test_a_succeeded_refund_issues_a_credit_note(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    from bookings import payments
    from bookings.models import RefundReason
    from bookings.services import Actor
    from tests.bookings.test_payments import paid_booking

    booking = paid_booking(django_capture_on_commit_callbacks, price=1_100_000)
    payment = booking.payments.get()
    with django_capture_on_commit_callbacks(execute=True):
        refund = payments.payment_refund(
            payment_id=payment.pk,
            amount=330_000,
            reason=RefundReason.GOODWILL,
            actor=Actor.system("staff:sales@moonslot.example"),
        )

    note = BillingDocument.objects.get(kind=DocumentKind.CREDIT_NOTE)
    assert (note.number, note.refund_id, note.payment_id) == (
        f"CRN-{year()}-000001",
        refund.pk,
        payment.pk,
    )
    assert note.tax_lines == [{"rate_percent": 10, "taxable_amount": 330_000, "tax_amount": 30_000}]
    text = pdf_text(note)
    assert "Credit note" in text
    assert "Goodwill" in text
    assert f"[Moonslot] Credit note {note.number} for booking {booking.reference}" in [
        str(m.subject) for m in mail.outbox
    ]


# --- downloads -------------------------------------------------------------------------------


def test_members_download_their_documents_and_nobody_else_sees_them(
    django_capture_on_commit_callbacks: Capture,
    django_assert_max_num_queries: Any,
) -> None:
    invoice = issue_invoice(django_capture_on_commit_callbacks)
    url = reverse("bookings:document", args=[invoice.booking.reference.lower(), invoice.number])
    assert url.endswith(f"/documents/{invoice.number}.pdf")

    viewer = UserFactory.create()
    MembershipFactory.create(user=viewer, organisation=invoice.booking.organisation, role="viewer")
    client = Client()
    client.force_login(viewer)
    with django_assert_max_num_queries(3):
        response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert f'filename="{invoice.number}.pdf"' in response["Content-Disposition"]
    assert response.content == bytes(invoice.pdf or b"")

    stranger = UserFactory.create()
    MembershipFactory.create(user=stranger, organisation=OrganisationFactory.create())
    client.force_login(stranger)
    assert client.get(url).status_code == 404
    # Another booking's reference with this number is just as absent.
    other = confirmed_booking(user=stranger)
    assert (
        client.get(reverse("bookings:document", args=[other.reference, invoice.number])).status_code
        == 404
    )

    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]


# --- configuration ---------------------------------------------------------------------------


def test_a_malformed_registration_number_fails_the_system_check(settings: Any) -> None:
    settings.MOONSLOT_SELLER_REGISTRATION_NUMBER = "1234567890123"
    with pytest.raises(SystemCheckError, match="T followed by 13 digits"):
        call_command("check")
    settings.MOONSLOT_SELLER_REGISTRATION_NUMBER = "T1234567890123"
    call_command("check")


# --- concurrency (PostgreSQL) ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres")
def test_workers_racing_to_issue_take_distinct_numbers_without_gaps() -> None:
    from tests.bookings.concurrency_helpers import run_together

    booking = confirmed_booking()
    rows = [
        instalment(booking, amount=1_000_000 + i, due_at=timezone.now() + days(30 + i))
        for i in range(6)
    ]
    # Each instalment's invoice is issued by two workers at once (a redelivered row).
    calls = [
        (lambda pk=row.pk: billing_document_issue(kind=DocumentKind.INVOICE, object_id=pk).number)
        for row in rows + rows
    ]
    with mock.patch("bookings.outbox.outbox_dispatch"):
        outcomes = run_together(calls)

    assert [o.error for o in outcomes] == [None] * len(calls)
    numbers = sorted(BillingDocument.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{year()}-{n:06d}" for n in range(1, 7)]
    # Both workers of an instalment answer with the same document.
    assert [o.value for o in outcomes[:6]] == [o.value for o in outcomes[6:]]
    assert DocumentSequence.objects.get(kind="invoice").last_number == 6
