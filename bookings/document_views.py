"""Customers download their invoices, receipts and credit notes as PDF.

Any member of the booking's organisation may download its documents; to anyone else a
document is as absent as a missing one (404), so numbers reveal nothing."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from bookings.models import BillingDocument


def billing_document_response(document_number: str, pdf: bytes | memoryview) -> HttpResponse:
    """The PDF as a download (shared with the admin's download view)."""
    response = HttpResponse(bytes(pdf), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{document_number}.pdf"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_safe
def billing_document_download(request: HttpRequest, reference: str, number: str) -> HttpResponse:
    user_id = int(request.user.pk or 0)  # login_required: a signed-in user
    document = (
        BillingDocument.objects.filter(
            number=number,
            booking__reference=reference.upper(),
            booking__organisation__memberships__user_id=user_id,
            pdf__isnull=False,
        )
        .only("number", "pdf")
        .first()
    )
    if document is None or document.pdf is None:
        raise Http404(_("No document has that number."))
    return billing_document_response(document.number, document.pdf)
