"""Payment pages and the Stripe webhook (namespace ``payments``)."""

from django.urls import URLPattern, URLResolver, path

from bookings import payment_views, webhooks

app_name = "payments"

urlpatterns: list[URLPattern | URLResolver] = [
    # A slug keeps stray bytes out of the lookup, as on the booking pages.
    path("bookings/<slug:reference>/pay/", payment_views.pay, name="pay"),
    path("bookings/<slug:reference>/pay/card/", payment_views.pay_card, name="card"),
    path(
        "bookings/<slug:reference>/pay/<int:payment_id>/complete/",
        payment_views.pay_complete,
        name="complete",
    ),
    path("stripe/webhook/", webhooks.stripe_webhook, name="stripe-webhook"),
]
