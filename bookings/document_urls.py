"""Billing document downloads, included into the ``bookings`` namespace."""

from django.urls import URLPattern, path

from bookings import document_views

urlpatterns: list[URLPattern] = [
    path(
        "bookings/<slug:reference>/documents/<slug:number>.pdf",
        document_views.billing_document_download,
        name="document",
    ),
]
