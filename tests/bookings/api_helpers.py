"""Shared helpers of the reseller API's booking tests: keyed clients with real keys, request
bodies, and the document's path templates (for ``assert_matches_schema``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organisation
from accounts.services import api_key_issue
from bookings import services
from bookings.models import Booking
from bookings.services import Actor
from marketplace.models import SlotClass
from tests.factories import ResellerFactory
from tests.openapi_helpers import assert_matches_schema

BOOKINGS = "/api/v1/bookings/"
EVENTS = "/api/v1/events/"
# Path templates as the OpenAPI document names them.
DETAIL = "/api/v1/bookings/{reference}/"
PAYLOAD = "/api/v1/bookings/{reference}/payload/"
CONFIRM = "/api/v1/bookings/{reference}/confirm/"
CANCEL = "/api/v1/bookings/{reference}/cancel/"

BOOKING_KEYS = {
    "reference",
    "status",
    "mission",
    "slot_class",
    "mass_g",
    "quantity",
    "price",
    "hold_expires_at",
    "confirmed_at",
    "cancelled_at",
    "refund",
    "customer",
    "payload",
    "created_at",
    "channel",
    "on_account",
    # What is paid and owed (issue 5).
    "payment_plan",
    "instalments",
    "paid",
    "due",
    "overdue",
    "payment_reference",
    "bank_transfer_required",
}
PAYLOAD_KEYS = {
    "name",
    "description",
    "mass_g",
    "dimensions_mm",
    "power_w",
    "data_kbps",
    "hazards",
    "export_classification",
    "review_status",
}


def bearer_client(raw_key: str) -> APIClient:
    """An API client sending ``raw_key`` (one per thread in the concurrency tests)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def keyed_client(reseller: Organisation | None = None) -> APIClient:
    """An API client sending a fresh real key of ``reseller`` (a new reseller if None)."""
    organisation = reseller if reseller is not None else ResellerFactory.create()
    return bearer_client(api_key_issue(organisation=organisation).raw_key)


def url(template: str, reference: str) -> str:
    return template.replace("{reference}", reference)


def hold_body(slot_class: SlotClass, /, **overrides: Any) -> dict[str, Any]:
    """A valid hold request for ``slot_class`` (1 kg or 1 unit, JPY), with overrides."""
    body: dict[str, Any] = {"slot_class": slot_class.pk, "currency": "JPY"}
    if slot_class.is_per_unit:
        body["quantity"] = slot_class.min_quantity or 1
    else:
        body["mass_g"] = 1000
    body.update(overrides)
    return body


def place_hold(client: APIClient, slot_class: SlotClass, /, **overrides: Any) -> dict[str, Any]:
    """POST a hold, check it is a documented 201, and return the booking."""
    response = client.post(BOOKINGS, hold_body(slot_class, **overrides), format="json")
    booking: dict[str, Any] = assert_matches_schema(response, BOOKINGS, "post", 201)
    return booking


def service_hold(slot_class: SlotClass, organisation: Organisation, **kwargs: Any) -> Booking:
    """A hold placed through the service, as the API would (1 kg or 1 unit, JPY)."""
    kwargs.setdefault("currency", "JPY")
    if slot_class.is_per_unit:
        kwargs.setdefault("quantity", slot_class.min_quantity or 1)
    else:
        kwargs.setdefault("mass_g", 1000)
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=organisation,
        channel="api",
        actor=Actor.system("test"),
        **kwargs,
    )


def taken_g(slot_class: SlotClass) -> int:
    """The class's capacity counter as stored now."""
    slot_class.refresh_from_db()
    return slot_class.taken_g


def lapse(reference: str, *, minutes_ago: int = 1) -> None:
    """Move a hold's expiry into the past, as if time had passed (no sweep runs)."""
    Booking.objects.filter(reference=reference).update(
        hold_expires_at=timezone.now() - timedelta(minutes=minutes_ago)
    )


def available_g(client: APIClient, slot_class: SlotClass) -> int:
    """What the public catalogue shows as free in ``slot_class``."""
    path = f"/api/v1/missions/{slot_class.mission.code}/"
    mission = assert_matches_schema(client.get(path), "/api/v1/missions/{code}/", "get", 200)
    (shown,) = [item for item in mission["slot_classes"] if item["id"] == slot_class.pk]
    return int(shown["available_g"])
