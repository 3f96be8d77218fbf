"""Payment pages and the Stripe webhook (namespace ``payments``)."""

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

app_name = "payments"


def pay_placeholder(request: HttpRequest, reference: str) -> HttpResponse:
    # Replaced by the Stripe payment page.
    return HttpResponse(status=501)


urlpatterns: list[URLPattern | URLResolver] = [
    path("bookings/<str:reference>/pay/", pay_placeholder, name="pay"),
]
