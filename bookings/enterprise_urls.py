"""The enterprise-hold completion pages (``bookings.enterprise_views``), included by
``bookings.urls`` without a namespace of their own: ``bookings:complete`` and
``bookings:complete-join``."""

from django.urls import URLPattern, URLResolver, path

from bookings import enterprise_views

urlpatterns: list[URLPattern | URLResolver] = [
    # Completion tokens are URL-safe base64, which the slug converter matches exactly.
    path("complete/<slug:token>/", enterprise_views.complete, name="complete"),
    path("complete/<slug:token>/join/", enterprise_views.complete_join, name="complete-join"),
]
