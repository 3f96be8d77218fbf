"""The website's booking pages (namespace ``bookings``). Payment pages live apart in
``bookings.payment_urls`` (namespace ``payments``)."""

from django.urls import URLPattern, URLResolver, include, path

from bookings import payload_views, views, waitlist_views

app_name = "bookings"

urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "missions/<slug:code>/book/<int:slot_class_id>/",
        views.booking_new,
        name="new",
    ),
    path(
        "missions/<slug:code>/waitlist/<int:slot_class_id>/",
        waitlist_views.waitlist_join_view,
        name="waitlist-join",
    ),
    path("waitlist/", waitlist_views.waitlist_list_view, name="waitlist"),
    path(
        "waitlist/<int:entry_id>/withdraw/",
        waitlist_views.waitlist_withdraw_view,
        name="waitlist-withdraw",
    ),
    path("bookings/", views.booking_list, name="list"),
    # A slug keeps stray bytes out of the lookup; references are matched in any case.
    path("bookings/<slug:reference>/", views.booking_detail, name="detail"),
    path("bookings/<slug:reference>/cancel/", views.booking_cancel_view, name="cancel"),
    path(
        "bookings/<slug:reference>/payload/",
        payload_views.payload_declaration,
        name="payload",
    ),
    path("", include("bookings.offer_urls")),  # schedule-change offers and rebooking
    path("", include("bookings.enterprise_urls")),  # completing an enterprise hold
    path("", include("bookings.document_urls")),  # invoices, receipts, credit notes
]
