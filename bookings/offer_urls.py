"""The schedule-change and rebooking pages (``bookings.offer_views``), included by
``bookings.urls`` without a namespace of their own, so their names are ``bookings:offer``
and ``bookings:rebook``."""

from django.urls import URLPattern, URLResolver, path

from bookings import offer_views

urlpatterns: list[URLPattern | URLResolver] = [
    path("bookings/<slug:reference>/schedule-change/", offer_views.booking_offer, name="offer"),
    path("bookings/<slug:reference>/rebook/", offer_views.booking_rebook_view, name="rebook"),
]
