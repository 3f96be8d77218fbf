"""Billing documents in the back office: read-only (a number once issued never changes),
searchable by number and booking reference, each PDF one click away. Sales and finance see
them through ``bookings.view_billingdocument`` (``accounts.roles``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from bookings.document_views import billing_document_response
from bookings.models import BillingDocument
from marketplace.money import Money


@admin.register(BillingDocument)
class BillingDocumentAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "kind",
        "booking_link",
        "buyer_name",
        "total_shown",
        "tax_shown",
        "issued_at",
        "emailed_at",
        "pdf_link",
    )
    list_filter = ("kind", "currency", ("emailed_at", admin.EmptyFieldListFilter))
    search_fields = ("=number", "=booking__reference", "buyer_name")
    list_select_related = ("booking",)
    date_hierarchy = "issued_at"
    ordering = ("-issued_at", "-pk")
    fields = (
        "number",
        "kind",
        "booking_link",
        "instalment",
        "payment",
        "refund",
        "buyer_name",
        "seller_registration_number",
        "total_shown",
        "tax_shown",
        "issued_at",
        "emailed_at",
        "pdf_link",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[BillingDocument]:
        # The PDF stays in the database: lists only need to know whether there is one.
        return (
            super()
            .get_queryset(request)
            .defer("pdf")
            .annotate(has_pdf=ExpressionWrapper(Q(pdf__isnull=False), output_field=BooleanField()))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("booking"), ordering="booking__reference")
    def booking_link(self, document: BillingDocument) -> str:
        url = reverse("admin:bookings_booking_change", args=[document.booking_id])
        return format_html('<a href="{}">{}</a>', url, document.booking.reference)

    @admin.display(description=_("total (tax included)"), ordering="total_amount")
    def total_shown(self, document: BillingDocument) -> str:
        return document.total.format()

    @admin.display(description=_("consumption tax"))
    def tax_shown(self, document: BillingDocument) -> str:
        if not document.tax_lines:
            return str(_("not taxed"))
        return format_html_join(
            ", ",
            "{}% {}",
            (
                (line["rate_percent"], Money(line["tax_amount"], document.currency).format())
                for line in document.tax_lines
            ),
        )

    @admin.display(description=_("PDF"))
    def pdf_link(self, document: BillingDocument) -> str:
        if not getattr(document, "has_pdf", False):
            return str(_("being built"))
        url = reverse("admin:bookings_billingdocument_pdf", args=[document.pk])
        return format_html('<a href="{}">{}.pdf</a>', url, document.number)

    def get_urls(self) -> list[URLPattern]:
        download = path(
            "<int:pk>/pdf/",
            self.admin_site.admin_view(self.pdf_view),
            name="bookings_billingdocument_pdf",
        )
        return [download, *super().get_urls()]

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        document = BillingDocument.objects.filter(pk=pk, pdf__isnull=False).first()
        if document is None or document.pdf is None:
            raise Http404(_("No PDF for this document yet."))
        return billing_document_response(document.number, document.pdf)
