"""Included at ``/api/v1/`` by ``config.urls``: the keyed endpoints of the reseller API."""

from django.urls import URLPattern, URLResolver, path

from bookings.api import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("bookings/", views.BookingListView.as_view(), name="api-booking-list"),
    path(
        "bookings/<str:reference>/",
        views.BookingDetailView.as_view(),
        name="api-booking-detail",
    ),
    path(
        "bookings/<str:reference>/payload/",
        views.BookingPayloadView.as_view(),
        name="api-booking-payload",
    ),
    path(
        "bookings/<str:reference>/confirm/",
        views.BookingConfirmView.as_view(),
        name="api-booking-confirm",
    ),
    path(
        "bookings/<str:reference>/cancel/",
        views.BookingCancelView.as_view(),
        name="api-booking-cancel",
    ),
    path("events/", views.EventFeedView.as_view(), name="api-event-feed"),
]
