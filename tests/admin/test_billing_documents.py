"""The billing documents' admin: sales and finance list, search and download them; nobody
edits or deletes an issued document; operations do not see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from bookings.billing import documents_queue_for_instalment, documents_queue_for_payment
from bookings.models import BillingDocument
from marketplace.models import TaxTreatment
from tests.admin.helpers import admin_client_with_mfa
from tests.bookings.billing_helpers import (  # noqa: F401 (cjk_font: a fixture)
    bank_payment,
    cjk_font,
    confirmed_booking,
    days,
    instalment,
    plan_class,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cjk_font")]

Capture = Callable[..., Any]
LIST = "admin:bookings_billingdocument_changelist"


def issue_documents(capture: Capture, count: int) -> list[BillingDocument]:
    slot_class = plan_class(tax=TaxTreatment.STANDARD)
    with capture(execute=True):
        for _ in range(count):
            booking = confirmed_booking(slot_class)
            due = instalment(booking, amount=1_100_000, due_at=timezone.now() + days(30))
            documents_queue_for_instalment(due)
            documents_queue_for_payment(bank_payment(booking, amount=550_000, instalment=due))
    return list(BillingDocument.objects.order_by("pk"))


def test_sales_list_search_and_download_documents_read_only(
    sales: User,
    django_capture_on_commit_callbacks: Capture,
    django_assert_max_num_queries: Any,
) -> None:
    documents = issue_documents(django_capture_on_commit_callbacks, 3)
    client = admin_client_with_mfa(sales)

    with django_assert_max_num_queries(12):
        page = client.get(reverse(LIST))
    assert page.status_code == 200
    html = page.content.decode()
    for document in documents:
        assert document.number in html
    assert "10% ¥100,000" in html  # the invoice's tax
    assert "10% ¥50,000" in html  # the receipt's
    # The same page with twice the documents costs the same.
    issue_documents(django_capture_on_commit_callbacks, 3)
    with django_assert_max_num_queries(12):
        assert client.get(reverse(LIST)).status_code == 200

    invoice = documents[0]
    found = client.get(reverse(LIST), {"q": invoice.number}).content.decode()
    assert invoice.number in found
    assert documents[2].number not in found
    by_booking = client.get(reverse(LIST), {"q": invoice.booking.reference}).content.decode()
    assert invoice.number in by_booking
    assert documents[1].number in by_booking  # the receipt for the same booking

    change = client.get(reverse("admin:bookings_billingdocument_change", args=[invoice.pk]))
    assert change.status_code == 200
    assert b'name="_save"' not in change.content  # view only
    pdf_url = reverse("admin:bookings_billingdocument_pdf", args=[invoice.pk])
    assert pdf_url in change.content.decode()
    download = client.get(pdf_url)
    assert download.status_code == 200
    assert download["Content-Type"] == "application/pdf"
    assert download.content == bytes(invoice.pdf or b"")

    delete = reverse("admin:bookings_billingdocument_delete", args=[invoice.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:bookings_billingdocument_add")).status_code == 403
    assert BillingDocument.objects.filter(pk=invoice.pk).exists()


def test_finance_may_download_but_operations_see_no_documents(
    finance: User, operations: User, django_capture_on_commit_callbacks: Capture
) -> None:
    [invoice, _receipt] = issue_documents(django_capture_on_commit_callbacks, 1)
    pdf_url = reverse("admin:bookings_billingdocument_pdf", args=[invoice.pk])

    assert admin_client_with_mfa(finance).get(pdf_url).status_code == 200

    ops = admin_client_with_mfa(operations)
    assert ops.get(reverse(LIST)).status_code == 403
    assert ops.get(pdf_url).status_code == 403
