"""Included at ``/api/v1/`` by ``config.urls``: the keyed endpoints of the reseller API."""

from django.urls import URLPattern, URLResolver, path

from bookings.api import offers, views, webhook_endpoints
from bookings.api import waitlist as waitlist_api

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
    # Schedule-change offers and rebooking (bookings.api.offers).
    path(
        "bookings/<str:reference>/offers/",
        offers.OfferListView.as_view(),
        name="api-booking-offers",
    ),
    path(
        "bookings/<str:reference>/offers/<str:offer_id>/answer/",
        offers.OfferAnswerView.as_view(),
        name="api-booking-offer-answer",
    ),
    path(
        "bookings/<str:reference>/rebook/",
        offers.BookingRebookView.as_view(),
        name="api-booking-rebook",
    ),
    # The waitlist and reseller webhook URLs (bookings.api.waitlist, .webhook_endpoints).
    path("waitlist/", waitlist_api.WaitlistListView.as_view(), name="api-waitlist-list"),
    path(
        "waitlist/<str:entry_id>/",
        waitlist_api.WaitlistDetailView.as_view(),
        name="api-waitlist-detail",
    ),
    path(
        "waitlist/<str:entry_id>/withdraw/",
        waitlist_api.WaitlistWithdrawView.as_view(),
        name="api-waitlist-withdraw",
    ),
    path("webhooks/", webhook_endpoints.WebhookEndpointListView.as_view(), name="api-webhooks"),
    path(
        "webhooks/<str:endpoint_id>/",
        webhook_endpoints.WebhookEndpointDetailView.as_view(),
        name="api-webhook-detail",
    ),
    path(
        "webhooks/<str:endpoint_id>/enable/",
        webhook_endpoints.WebhookEndpointEnableView.as_view(),
        name="api-webhook-enable",
    ),
]
