"""The reseller API's booking endpoints through HTTP with real keys: holds, the booking's
shape, input validation, domain refusals, confirm, cancel, the payload PATCH, the list and
detail reads. Every response with a body is checked against the OpenAPI document."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import CreditLimit, Organisation
from bookings import services
from bookings.models import (
    REFERENCE_ALPHABET,
    Booking,
    BookingEvent,
    BookingStatus,
    ExportClassification,
    HazardType,
    ReviewStatus,
)
from bookings.services import Actor
from bookings.validation import PayloadInput
from marketplace.models import Mission, MissionStatus, SlotClass
from tests.bookings.api_helpers import (
    BOOKING_KEYS,
    BOOKINGS,
    CANCEL,
    CONFIRM,
    DETAIL,
    PAYLOAD,
    PAYLOAD_KEYS,
    available_g,
    hold_body,
    keyed_client,
    lapse,
    place_hold,
    service_hold,
    taken_g,
    url,
)
from tests.factories import MissionFactory, ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema, openapi_document

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
MAX_INT = 2_147_483_647


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def client(reseller: Organisation) -> APIClient:
    return keyed_client(reseller)


@pytest.fixture
def deck() -> SlotClass:
    """Per kg: ¥180,000,000 or $1,200,000.00 a kilo, 0.5–50 kg in 100 g steps."""
    return SlotClassFactory.create(mission=MissionFactory.create(code="M3"))


@pytest.fixture
def capsule() -> SlotClass:
    """Per unit: 10 g units at ¥30,000 / $200.00, 1–10 per booking, inert only."""
    return SlotClassFactory.per_unit(mission=MissionFactory.create(code="M4"))


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def refused(response: Any, status: int, code: str, path: str = BOOKINGS, method: str = "post"):
    """Assert a documented error body with this status and code; return it."""
    body: dict[str, Any] = assert_matches_schema(response, path, method, status)
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


# --- holds -----------------------------------------------------------------------------------


def test_per_kg_hold_is_201_with_every_key_and_the_contract_price(client, deck):
    before = timezone.now()
    booking = place_hold(
        client,
        deck,
        mass_g=2500,
        customer={"name": "Aiko Tanaka", "email": "aiko@example.jp", "organisation": "Lab"},
    )

    assert set(booking) == BOOKING_KEYS
    assert set(booking["payload"]) == PAYLOAD_KEYS
    assert re.fullmatch(f"[{REFERENCE_ALPHABET}]{{6}}", booking["reference"])
    assert booking["status"] == "held"
    assert booking["mission"] == "M3"
    assert booking["slot_class"] == deck.pk
    assert booking["mass_g"] == 2500
    assert booking["quantity"] is None
    # ¥180,000,000 a kilo × 2.5 kg
    assert booking["price"] == {"amount": 450_000_000, "currency": "JPY"}
    expires = parse_time(booking["hold_expires_at"])
    api_hold = timedelta(minutes=deck.hold_minutes_api)
    assert before + api_hold <= expires <= timezone.now() + api_hold
    assert booking["confirmed_at"] is None
    assert booking["cancelled_at"] is None
    assert booking["refund"] is None
    assert booking["customer"] == {
        "name": "Aiko Tanaka",
        "email": "aiko@example.jp",
        "organisation": "Lab",
    }
    assert booking["payload"] == {
        "name": None,
        "description": None,
        "mass_g": None,
        "dimensions_mm": None,
        "power_w": None,
        "data_kbps": None,
        "hazards": [],
        "export_classification": None,
        "review_status": "declared",
    }
    assert booking["channel"] == "api"
    assert booking["on_account"] is False
    stored = Booking.objects.get(reference=booking["reference"])
    assert stored.channel == "api"
    assert stored.api_key is not None
    assert taken_g(deck) == 2500


def test_usd_price_is_rounded_half_up_to_the_cent(client):
    slot_class = SlotClassFactory.create(prices={"JPY": 180_000_000, "USD": 1_234_567})

    booking = place_hold(client, slot_class, mass_g=1100, currency="USD")

    # 1,234,567 ¢/kg × 1.1 kg = 1,358,023.7 ¢
    assert booking["price"] == {"amount": 1_358_024, "currency": "USD"}


def test_price_above_two_to_the_31_is_sent_whole(client):
    # A tonne at a million dollars a kilo: $1,000,000,000.00 = 10¹¹ cents.
    tonne = SlotClassFactory.create(
        capacity_g=1_000_000, max_mass_g=1_000_000, prices={"USD": 100_000_000}
    )

    booking = place_hold(client, tonne, mass_g=1_000_000, currency="USD")

    assert booking["price"] == {"amount": 100_000_000_000, "currency": "USD"}


def test_per_unit_hold_takes_a_quantity_and_prices_per_unit(client, capsule):
    booking = place_hold(client, capsule, quantity=3)
    usd = place_hold(client, capsule, quantity=2, currency="USD")

    assert (booking["quantity"], booking["mass_g"]) == (3, 30)
    assert booking["price"] == {"amount": 90_000, "currency": "JPY"}
    assert usd["price"] == {"amount": 40_000, "currency": "USD"}
    capsule.refresh_from_db()
    assert (capsule.taken_g, capsule.taken_units) == (50, 5)


def test_hold_with_a_full_payload_reads_it_back_with_every_hazard_key(client, deck):
    payload = {
        "name": "Rover",
        "description": "A small rover.",
        "mass_g": 2400,
        "dimensions_mm": [100, 100, 150],
        "power_w": 5,
        "data_kbps": 16,
        "hazards": [
            {"type": "lithium_battery", "energy_wh": 40},
            {"type": "other", "description": "A spring."},
        ],
        "export_classification": "EAR99",
    }

    booking = place_hold(client, deck, mass_g=2500, payload=payload)

    assert booking["payload"] == {
        **payload,
        "hazards": [
            {
                "type": "lithium_battery",
                "energy_wh": 40,
                "meop_kpa": None,
                "mass_g": None,
                "description": None,
            },
            {
                "type": "other",
                "energy_wh": None,
                "meop_kpa": None,
                "mass_g": None,
                "description": "A spring.",
            },
        ],
        # An "other" hazard is read by a person: the payload starts in safety review.
        "review_status": "safety_review",
    }


def test_optional_objects_and_fields_may_be_null(client, deck):
    booking = place_hold(
        client,
        deck,
        customer=None,
        payload={"name": None, "dimensions_mm": None, "hazards": None, "power_w": None},
    )

    assert booking["customer"] == {"name": None, "email": None, "organisation": None}
    assert booking["payload"]["hazards"] == []
    assert booking["payload"]["dimensions_mm"] is None


def test_capacity_shown_in_the_catalogue_follows_holds_cancels_and_lapses(client, deck):
    full = deck.capacity_g
    assert available_g(client, deck) == full

    first = place_hold(client, deck, mass_g=2000)
    second = place_hold(client, deck, mass_g=3000)
    assert available_g(client, deck) == full - 5000

    cancelled = client.post(url(CANCEL, first["reference"]))
    assert_matches_schema(cancelled, CANCEL, "post", 200)
    assert available_g(client, deck) == full - 3000

    lapse(second["reference"])  # no sweep: the catalogue frees it at once
    assert available_g(client, deck) == full


# --- input validation ------------------------------------------------------------------------


def in_payload(**fields: Any) -> dict[str, Any]:
    return {"payload": fields}


def hazards(*items: dict[str, Any]) -> dict[str, Any]:
    return {"payload": {"hazards": list(items)}}


BATTERY = "lithium_battery"
BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("negative mass", {"mass_g": -1000}, "mass_g"),
    ("zero mass", {"mass_g": 0}, "mass_g"),
    ("huge mass", {"mass_g": MAX_INT + 1}, "mass_g"),
    ("enormous mass", {"mass_g": 10**40}, "mass_g"),
    ("mass as string", {"mass_g": "1000"}, "mass_g"),
    ("mass as bool", {"mass_g": True}, "mass_g"),
    ("mass as float", {"mass_g": 1000.0}, "mass_g"),
    ("mass as list", {"mass_g": [1000]}, "mass_g"),
    ("mass as object", {"mass_g": {"g": 1000}}, "mass_g"),
    ("null mass", {"mass_g": None}, "mass_g"),
    ("negative quantity", {"quantity": -1}, "quantity"),
    ("quantity as string", {"quantity": "2"}, "quantity"),
    ("unknown slot class", {"slot_class": 987_654}, "slot_class"),
    ("zero slot class", {"slot_class": 0}, "slot_class"),
    ("huge slot class", {"slot_class": 2**63}, "slot_class"),
    ("slot class as string", {"slot_class": "12"}, "slot_class"),
    ("slot class as bool", {"slot_class": True}, "slot_class"),
    ("null slot class", {"slot_class": None}, "slot_class"),
    ("currency as number", {"currency": 392}, "currency"),
    ("garbage currency", {"currency": "yen!"}, "currency"),
    ("lower-case currency", {"currency": "jpy"}, "currency"),
    ("empty currency", {"currency": ""}, "currency"),
    ("null currency", {"currency": None}, "currency"),
    ("unknown top-level field", {"colour": "red"}, "colour"),
    ("customer not an object", {"customer": "Aiko"}, "customer"),
    ("bad customer e-mail", {"customer": {"email": "not-an-address"}}, "customer.email"),
    ("customer e-mail as number", {"customer": {"email": 42}}, "customer.email"),
    ("customer name as number", {"customer": {"name": 7}}, "customer.name"),
    ("customer name too long", {"customer": {"name": "x" * 201}}, "customer.name"),
    ("unknown customer field", {"customer": {"colour": "red"}}, "customer.colour"),
    ("payload not an object", {"payload": ["Rover"]}, "payload"),
    ("unknown payload field", in_payload(colour="red"), "payload.colour"),
    ("review status is not input", in_payload(review_status="accepted"), "payload.review_status"),
    ("payload name as bool", in_payload(name=False), "payload.name"),
    ("payload mass negative", in_payload(mass_g=-5), "payload.mass_g"),
    ("payload mass huge", in_payload(mass_g=MAX_INT + 1), "payload.mass_g"),
    ("two dimensions", in_payload(dimensions_mm=[100, 100]), "payload.dimensions_mm"),
    ("four dimensions", in_payload(dimensions_mm=[1, 1, 1, 1]), "payload.dimensions_mm"),
    ("dimensions not a list", in_payload(dimensions_mm="1x1x1"), "payload.dimensions_mm"),
    ("zero dimension", in_payload(dimensions_mm=[100, 0, 100]), "payload.dimensions_mm.1"),
    ("string dimension", in_payload(dimensions_mm=[1, 1, "1"]), "payload.dimensions_mm.2"),
    ("huge dimension", in_payload(dimensions_mm=[MAX_INT + 1, 1, 1]), "payload.dimensions_mm.0"),
    ("negative power", in_payload(power_w=-1), "payload.power_w"),
    ("float power", in_payload(power_w=1.5), "payload.power_w"),
    ("huge power", in_payload(power_w=MAX_INT + 1), "payload.power_w"),
    ("hazards not a list", in_payload(hazards={"type": "other"}), "payload.hazards"),
    ("unknown hazard type", hazards({"type": "plutonium"}), "payload.hazards.0.type"),
    ("battery without energy", hazards({"type": BATTERY}), "payload.hazards.0.energy_wh"),
    ("vessel without pressure", hazards({"type": "pressure_vessel"}), "payload.hazards.0.meop_kpa"),
    ("propellant without mass", hazards({"type": "propellant"}), "payload.hazards.0.mass_g"),
    ("other undescribed", hazards({"type": "other"}), "payload.hazards.0.description"),
    (
        "energy as float",
        hazards({"type": BATTERY, "energy_wh": 4.5}),
        "payload.hazards.0.energy_wh",
    ),
    (
        "unknown hazard field",
        hazards({"type": "other", "description": "x", "colour": 1}),
        "payload.hazards.0.colour",
    ),
    (
        "second hazard bad",
        hazards({"type": "radioactive_source"}, {"type": BATTERY, "energy_wh": 0}),
        "payload.hazards.1.energy_wh",
    ),
    (
        "unknown export class",
        in_payload(export_classification="x"),
        "payload.export_classification",
    ),
]


@pytest.mark.parametrize(
    ("change", "path"), [(c, p) for _name, c, p in BAD_FIELDS], ids=[n for n, _c, _p in BAD_FIELDS]
)
def test_bad_field_is_400_invalid_at_its_dotted_path(client, deck, change, path):
    response = client.post(BOOKINGS, hold_body(deck, **change), format="json")

    body = refused(response, 400, "invalid")
    assert path in body["fields"], body
    assert all(isinstance(m, str) and m for m in body["fields"][path])
    assert taken_g(deck) == 0
    assert not Booking.objects.exists()


def test_missing_required_fields_are_each_named(client):
    body = refused(client.post(BOOKINGS, {}, format="json"), 400, "invalid")

    assert set(body["fields"]) == {"slot_class", "currency"}


def test_unknown_fields_are_named_together_with_other_errors(client, deck):
    response = client.post(
        BOOKINGS, hold_body(deck, mass_g=-1, colour="red", size="L"), format="json"
    )

    body = refused(response, 400, "invalid")
    assert body["fields"]["colour"] == ["Unknown field."]
    assert body["fields"]["size"] == ["Unknown field."]
    assert "mass_g" in body["fields"]


def test_unprintable_unknown_field_names_are_escaped_not_a_500(client, deck):
    raw = json.dumps(hold_body(deck)).replace("{", '{"bad\\u0000name": 1, "\\ud800": 2, ', 1)

    response = client.post(BOOKINGS, raw, content_type="application/json")

    body = refused(response, 400, "invalid")
    assert set(body["fields"]) == {"bad\\u0000name", "\\ud800"}


@pytest.mark.parametrize(
    "raw",
    ['{"slot_class": 1,', "not json", '{"mass_g": NaN}', "[" * 100_000 + "]" * 100_000],
    ids=["truncated", "text", "nan", "deeply-nested"],
)
def test_malformed_json_is_400_parse_error(client, raw):
    response = client.post(BOOKINGS, raw, content_type="application/json")

    refused(response, 400, "parse_error")


def test_body_that_is_not_an_object_is_400_invalid(client):
    body = refused(client.post(BOOKINGS, [1, 2], format="json"), 400, "invalid")

    assert "dictionary" in body["detail"]


@pytest.mark.parametrize(
    ("limits", "change", "path", "needle"),
    [
        ({}, {"mass_g": 400}, "mass_g", "minimum"),
        ({}, {"mass_g": 50_100}, "mass_g", "maximum"),
        ({}, {"mass_g": 1050}, "mass_g", "steps"),
        ({}, {"mass_g": None, "quantity": 2}, "quantity", "by mass"),
        ({}, {"payload": {"dimensions_mm": [100, 900, 100]}}, "payload.dimensions_mm", "900 mm"),
        ({}, {"payload": {"power_w": 21}}, "payload.power_w", "20 W"),
        ({}, {"payload": {"mass_g": 1001}}, "payload.mass_g", "weighs more"),
    ],
    ids=["below-min", "above-max", "off-step", "quantity-on-per-kg", "too-long", "power", "heavy"],
)
def test_class_limits_are_400_invalid_naming_the_field(client, deck, limits, change, path, needle):
    body_in = hold_body(deck, **change)
    if body_in.get("mass_g") is None:
        body_in.pop("mass_g")

    body = refused(client.post(BOOKINGS, body_in, format="json"), 400, "invalid")

    assert needle in " ".join(body["fields"][path])
    assert taken_g(deck) == 0


def test_per_unit_class_needs_a_quantity_within_its_limits(client, capsule):
    no_quantity = client.post(
        BOOKINGS, {"slot_class": capsule.pk, "currency": "JPY", "mass_g": 20}, format="json"
    )
    too_many = client.post(BOOKINGS, hold_body(capsule, quantity=11), format="json")
    powered = client.post(BOOKINGS, hold_body(capsule, payload={"power_w": 1}), format="json")

    assert "quantity" in refused(no_quantity, 400, "invalid")["fields"]
    assert "10 units" in refused(too_many, 400, "invalid")["fields"]["quantity"][0]
    assert "payload.power_w" in refused(powered, 400, "invalid")["fields"]


# --- domain refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["EUR", "USD"])
def test_currency_the_class_does_not_offer_is_400_currency_not_offered(client, currency):
    yen_only = SlotClassFactory.create(prices={"JPY": 1_000_000})

    response = client.post(BOOKINGS, hold_body(yen_only, currency=currency), format="json")

    body = refused(response, 400, "currency_not_offered")
    assert "JPY" in body["detail"]
    assert "fields" not in body


def test_per_kg_hold_beyond_capacity_is_409_with_what_is_left(client):
    small = SlotClassFactory.create(capacity_g=3000, max_mass_g=3000)
    place_hold(client, small, mass_g=2000)

    response = client.post(BOOKINGS, hold_body(small, mass_g=1100), format="json")

    body = refused(response, 409, "insufficient_capacity")
    assert body["available_g"] == 1000
    assert "available_units" not in body
    assert taken_g(small) == 2000


def test_per_unit_hold_beyond_capacity_gives_units_and_grams_left(client):
    capsules = SlotClassFactory.per_unit(capacity_units=5, max_quantity=5)
    place_hold(client, capsules, quantity=3)

    body = refused(
        client.post(BOOKINGS, hold_body(capsules, quantity=3), format="json"),
        409,
        "insufficient_capacity",
    )

    assert (body["available_units"], body["available_g"]) == (2, 20)


def test_mission_past_cutoff_or_not_on_sale_is_409_sales_closed(client):
    past_cutoff = SlotClassFactory.create(
        mission=MissionFactory.create(booking_cutoff=timezone.now() - timedelta(minutes=1))
    )
    planned = SlotClassFactory.create(mission=MissionFactory.create(status=MissionStatus.PLANNED))

    for slot_class in (past_cutoff, planned):
        response = client.post(BOOKINGS, hold_body(slot_class), format="json")
        refused(response, 409, "sales_closed")
        assert taken_g(slot_class) == 0


def test_class_not_sold_through_the_api_is_403_channel_not_allowed(client):
    web_only = SlotClassFactory.create(sold_on_api=False)

    refused(client.post(BOOKINGS, hold_body(web_only), format="json"), 403, "channel_not_allowed")
    assert taken_g(web_only) == 0


def test_hold_past_the_organisations_cap_is_409_hold_limit_exceeded(deck):
    capped = ResellerFactory.create(held_mass_cap_g=3000)
    client = keyed_client(capped)
    place_hold(client, deck, mass_g=2000)

    response = client.post(BOOKINGS, hold_body(deck, mass_g=1100), format="json")

    refused(response, 409, "hold_limit_exceeded")
    assert taken_g(deck) == 2000


# --- confirm ---------------------------------------------------------------------------------


def test_confirm_is_on_account_and_repeating_it_changes_nothing(client, deck):
    booking = place_hold(client, deck)
    path = url(CONFIRM, booking["reference"])

    confirmed = assert_matches_schema(client.post(path), CONFIRM, "post", 200)
    again = assert_matches_schema(client.post(path, {}, format="json"), CONFIRM, "post", 200)

    assert confirmed["status"] == "confirmed"
    assert confirmed["on_account"] is True
    assert confirmed["confirmed_at"] is not None
    assert confirmed["hold_expires_at"] is None
    assert again == confirmed
    assert BookingEvent.objects.filter(type="booking.confirmed").count() == 1
    assert taken_g(deck) == 1000


def test_confirm_after_the_hold_lapsed_is_409_hold_expired_swept_or_not(client, deck):
    unswept = place_hold(client, deck)
    swept = place_hold(client, deck)
    lapse(swept["reference"])
    services.bookings_expire()
    lapse(unswept["reference"])
    assert Booking.objects.get(reference=swept["reference"]).status == "expired"
    assert Booking.objects.get(reference=unswept["reference"]).status == "held"

    for booking in (unswept, swept):
        response = client.post(url(CONFIRM, booking["reference"]))
        refused(response, 409, "hold_expired", CONFIRM)


def test_confirm_from_cancelled_is_409_invalid_state(client, deck):
    booking = place_hold(client, deck)
    client.post(url(CANCEL, booking["reference"]))

    refused(client.post(url(CONFIRM, booking["reference"])), 409, "invalid_state", CONFIRM)


def test_confirm_past_the_credit_limit_is_403_and_leaves_the_hold(client, reseller):
    slot_class = SlotClassFactory.create(prices={"JPY": 1_000_000})
    CreditLimit.objects.create(organisation=reseller, currency="JPY", amount=2_500_000)
    first = place_hold(client, slot_class, mass_g=2000)
    second = place_hold(client, slot_class, mass_g=1000)
    assert_matches_schema(client.post(url(CONFIRM, first["reference"])), CONFIRM, "post", 200)

    response = client.post(url(CONFIRM, second["reference"]))

    body = refused(response, 403, "credit_limit_exceeded", CONFIRM)
    assert "credit limit" in body["detail"]
    detail = client.get(url(DETAIL, second["reference"]))
    assert assert_matches_schema(detail, DETAIL, "get", 200)["status"] == "held"


def test_confirm_and_cancel_refuse_unknown_body_fields(client, deck):
    booking = place_hold(client, deck)

    for template in (CONFIRM, CANCEL):
        response = client.post(url(template, booking["reference"]), {"colour": 1}, format="json")
        body = refused(response, 400, "invalid", template)
        assert body["fields"] == {"colour": ["Unknown field."]}
    assert Booking.objects.get(reference=booking["reference"]).status == "held"


# --- cancel ----------------------------------------------------------------------------------


def test_cancelling_a_hold_frees_it_with_no_refund_and_records_the_reason(client, deck):
    booking = place_hold(client, deck)

    response = client.post(
        url(CANCEL, booking["reference"]), {"reason": "Customer withdrew."}, format="json"
    )

    cancelled = assert_matches_schema(response, CANCEL, "post", 200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["refund"] == {"amount": 0, "currency": "JPY"}
    assert cancelled["cancelled_at"] is not None
    assert cancelled["hold_expires_at"] is None
    assert taken_g(deck) == 0
    event = BookingEvent.objects.get(type="booking.cancelled")
    assert event.reason == "Customer withdrew."


def test_cancelling_a_confirmed_booking_refunds_by_the_policy_tier(client):
    mission = MissionFactory.create(launch_window_start=timezone.now() + timedelta(days=200))
    slot_class = SlotClassFactory.create(mission=mission, tiers={365: 90, 180: 50, 0: 0})
    booking = place_hold(client, slot_class, mass_g=1000)
    client.post(url(CONFIRM, booking["reference"]))

    cancelled = assert_matches_schema(
        client.post(url(CANCEL, booking["reference"])), CANCEL, "post", 200
    )

    assert cancelled["refund"] == {"amount": 90_000_000, "currency": "JPY"}  # 50% of ¥180M


def test_cancelling_cancelled_or_expired_returns_it_unchanged(client, deck):
    cancelled = place_hold(client, deck)
    lapsed = place_hold(client, deck)
    first = assert_matches_schema(
        client.post(url(CANCEL, cancelled["reference"])), CANCEL, "post", 200
    )
    lapse(lapsed["reference"])

    again = assert_matches_schema(
        client.post(url(CANCEL, cancelled["reference"])), CANCEL, "post", 200
    )
    expired = assert_matches_schema(
        client.post(url(CANCEL, lapsed["reference"])), CANCEL, "post", 200
    )

    assert again == first
    assert expired["status"] == "expired"
    assert expired["refund"] is None
    assert BookingEvent.objects.filter(type="booking.cancelled").count() == 1
    assert taken_g(deck) == 0


# --- payload PATCH ---------------------------------------------------------------------------


def test_payload_patch_replaces_the_fields_sent_and_keeps_the_rest(client, deck):
    booking = place_hold(client, deck, mass_g=2000, payload={"name": "Rover", "power_w": 5})
    path = url(PAYLOAD, booking["reference"])

    response = client.patch(
        path,
        {"mass_g": 1900, "dimensions_mm": [100, 200, 300], "export_classification": "ITAR"},
        format="json",
    )

    updated = assert_matches_schema(response, PAYLOAD, "patch", 200)
    assert updated["payload"]["name"] == "Rover"
    assert updated["payload"]["power_w"] == 5
    assert updated["payload"]["mass_g"] == 1900
    assert updated["payload"]["dimensions_mm"] == [100, 200, 300]
    # Complete now, and ITAR: it waits for operations' export review.
    assert updated["payload"]["review_status"] == "export_review"
    assert updated["status"] == "held"

    cleared = client.patch(path, {"power_w": None, "hazards": None}, format="json")
    assert assert_matches_schema(cleared, PAYLOAD, "patch", 200)["payload"]["power_w"] is None


def test_payload_patch_errors_are_prefixed_with_payload(client, deck):
    booking = place_hold(client, deck)
    path = url(PAYLOAD, booking["reference"])

    shape = client.patch(path, {"dimensions_mm": [1, 2], "colour": "red"}, format="json")
    limits = client.patch(path, {"power_w": 99}, format="json")
    empty = client.patch(path, {}, format="json")
    not_object = client.patch(path, [1], format="json")

    shape_body = refused(shape, 400, "invalid", PAYLOAD, "patch")
    assert set(shape_body["fields"]) == {"payload.dimensions_mm", "payload.colour"}
    assert (
        "20 W" in refused(limits, 400, "invalid", PAYLOAD, "patch")["fields"]["payload.power_w"][0]
    )
    assert "payload" in refused(empty, 400, "invalid", PAYLOAD, "patch")["fields"]
    assert "payload" in refused(not_object, 400, "invalid", PAYLOAD, "patch")["fields"]
    assert not BookingEvent.objects.filter(type="payload.updated").exists()


def test_payload_patch_after_the_cutoff_is_409_sales_closed(client, deck):
    booking = place_hold(client, deck)
    Mission.objects.filter(pk=deck.mission_id).update(
        booking_cutoff=timezone.now() - timedelta(seconds=1)
    )

    response = client.patch(url(PAYLOAD, booking["reference"]), {"name": "x"}, format="json")

    refused(response, 409, "sales_closed", PAYLOAD, "patch")


def test_payload_patch_of_cancelled_or_lapsed_booking_is_409_invalid_state(client, deck):
    cancelled = place_hold(client, deck)
    lapsed = place_hold(client, deck)
    client.post(url(CANCEL, cancelled["reference"]))
    lapse(lapsed["reference"])

    for booking in (cancelled, lapsed):
        response = client.patch(url(PAYLOAD, booking["reference"]), {"name": "x"}, format="json")
        refused(response, 409, "invalid_state", PAYLOAD, "patch")


def test_payload_patch_of_a_confirmed_booking_is_allowed(client, deck):
    booking = place_hold(client, deck)
    client.post(url(CONFIRM, booking["reference"]))

    response = client.patch(url(PAYLOAD, booking["reference"]), {"name": "Lander"}, format="json")

    assert assert_matches_schema(response, PAYLOAD, "patch", 200)["payload"]["name"] == "Lander"


# --- reads -----------------------------------------------------------------------------------


def test_detail_matches_the_reference_in_any_case(client, deck):
    booking = place_hold(client, deck)

    response = client.get(url(DETAIL, booking["reference"].lower()))

    assert assert_matches_schema(response, DETAIL, "get", 200) == booking


def test_unknown_reference_is_404_not_found(client):
    refused(client.get(url(DETAIL, "ZZZZZZ")), 404, "not_found", DETAIL, "get")
    refused(client.get(url(DETAIL, "x" * 600)), 404, "not_found", DETAIL, "get")
    refused(client.get(url(DETAIL, "AB%00CD")), 404, "not_found", DETAIL, "get")


def test_lapsed_hold_reads_expired_everywhere_before_any_sweep(client, deck):
    booking = place_hold(client, deck)
    lapse(booking["reference"])

    detail = assert_matches_schema(
        client.get(url(DETAIL, booking["reference"])), DETAIL, "get", 200
    )
    listed = assert_matches_schema(client.get(BOOKINGS), BOOKINGS, "get", 200)

    assert detail["status"] == "expired"
    assert detail["hold_expires_at"] is None
    assert listed["results"][0]["status"] == "expired"
    assert Booking.objects.get(reference=booking["reference"]).status == "held"


def test_list_is_newest_first(client, reseller, deck):
    start = timezone.now()
    older = service_hold(deck, reseller, now=start - timedelta(minutes=2))
    newer = service_hold(deck, reseller, now=start - timedelta(minutes=1))

    page = assert_matches_schema(client.get(BOOKINGS), BOOKINGS, "get", 200)

    assert [b["reference"] for b in page["results"]] == [newer.reference, older.reference]
    assert page["count"] == 2


def test_list_filters_by_live_status_and_mission(client, reseller, deck, capsule):
    live = service_hold(deck, reseller)
    lapsed = service_hold(deck, reseller)
    swept = service_hold(deck, reseller)
    confirmed = service_hold(capsule, reseller, quantity=1)
    cancelled = service_hold(capsule, reseller, quantity=1)
    services.booking_confirm(booking_id=confirmed.pk, actor=SYSTEM)
    services.booking_cancel(booking_id=cancelled.pk, actor=SYSTEM)
    lapse(lapsed.reference)
    lapse(swept.reference)
    services.bookings_expire()

    def listed(**query: str) -> set[str]:
        page = assert_matches_schema(client.get(BOOKINGS, query), BOOKINGS, "get", 200)
        return {b["reference"] for b in page["results"]}

    assert listed(status="held") == {live.reference}
    assert listed(status="expired") == {lapsed.reference, swept.reference}
    assert listed(status="confirmed") == {confirmed.reference}
    assert listed(status="cancelled") == {cancelled.reference}
    assert listed(mission="M4") == {confirmed.reference, cancelled.reference}
    assert listed(mission="M3", status="held") == {live.reference}
    assert len(listed()) == 5


@pytest.mark.parametrize(
    ("query", "field"),
    [({"status": "pending"}, "status"), ({"mission": "NOPE"}, "mission")],
)
def test_unknown_filter_value_is_400_naming_the_filter(client, query, field):
    body = refused(client.get(BOOKINGS, query), 400, "invalid", BOOKINGS, "get")

    assert field in body["fields"]


def test_list_paginates_and_a_page_past_the_end_is_404(client, reseller, deck):
    for _ in range(5):
        service_hold(deck, reseller)

    first = assert_matches_schema(client.get(BOOKINGS, {"page_size": 2}), BOOKINGS, "get", 200)
    last = assert_matches_schema(
        client.get(BOOKINGS, {"page_size": 2, "page": 3}), BOOKINGS, "get", 200
    )
    past = client.get(BOOKINGS, {"page_size": 2, "page": 4})

    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert first["next"] is not None
    assert first["previous"] is None
    assert len(last["results"]) == 1
    assert last["next"] is None
    refused(past, 404, "not_found", BOOKINGS, "get")


# --- query counts ----------------------------------------------------------------------------


def queries_for(client: APIClient, path: str, **query: Any) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, query)
    assert response.status_code == 200, response.content
    return len(captured)


def full_bookings(organisation: Organisation, count: int) -> list[Booking]:
    """Bookings with a payload, hazards and mixed statuses, on several missions."""
    bookings = []
    for index in range(count):
        slot_class = SlotClassFactory.create()
        booking = service_hold(
            slot_class,
            organisation,
            payload=PayloadInput.from_mapping(
                {
                    "name": f"Payload {index}",
                    "dimensions_mm": [10, 10, 10],
                    "hazards": [{"type": "lithium_battery", "energy_wh": 5}],
                }
            ),
        )
        if index % 3 == 1:
            services.booking_confirm(booking_id=booking.pk, actor=SYSTEM)
        if index % 3 == 2:
            services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)
        bookings.append(booking)
    return bookings


def test_list_costs_the_same_queries_for_one_booking_or_a_full_page(django_assert_num_queries):
    small, large = ResellerFactory.create(), ResellerFactory.create()
    full_bookings(small, 1)
    full_bookings(large, 25)
    small_client, large_client = keyed_client(small), keyed_client(large)
    small_client.get(BOOKINGS)  # the key's first use writes last_used_at once
    large_client.get(BOOKINGS)

    few = queries_for(small_client, BOOKINGS)
    many = queries_for(large_client, BOOKINGS, page_size=25)
    filtered = queries_for(large_client, BOOKINGS, page_size=25, status="confirmed")

    assert few == many == filtered
    # key lookup, count, page (bookings joined with class, plan, mission and payload), their
    # instalments, their payments (with refunds when there are payments)
    with django_assert_num_queries(5):
        large_client.get(BOOKINGS, {"page_size": 25})


def test_detail_costs_the_same_queries_whatever_the_booking(django_assert_num_queries):
    reseller = ResellerFactory.create()
    plain = service_hold(SlotClassFactory.create(), reseller)
    (full,) = full_bookings(reseller, 1)
    client = keyed_client(reseller)
    client.get(BOOKINGS)

    assert queries_for(client, url(DETAIL, plain.reference)) == queries_for(
        client, url(DETAIL, full.reference)
    )
    # key lookup, the booking with its joins, its instalments, its payments
    with django_assert_num_queries(4):
        client.get(url(DETAIL, full.reference))


# --- the document ----------------------------------------------------------------------------

KEYED_OPERATIONS = [
    (BOOKINGS, "get"),
    (BOOKINGS, "post"),
    (DETAIL, "get"),
    (PAYLOAD, "patch"),
    (CONFIRM, "post"),
    (CANCEL, "post"),
    ("/api/v1/events/", "get"),
]


def component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi_document()["components"]["schemas"][name]
    return schema


def enum_at(prop: dict[str, Any]) -> list[Any]:
    """The values a property allows, through $ref, allOf or a oneOf with null."""
    values: list[Any] = []
    for option in prop.get("oneOf") or prop.get("allOf") or [prop]:
        target = component(option["$ref"].rsplit("/", 1)[1]) if "$ref" in option else option
        values += target["enum"]
    return values


def test_keyed_operations_need_the_bearer_key_and_document_401_and_429():
    paths = openapi_document()["paths"]
    for path, method in KEYED_OPERATIONS:
        operation = paths[path][method]
        assert operation["security"] == [{"bearer": []}], (path, method)
        codes = operation["responses"]["401"]["content"]["application/json"]["examples"]
        assert {"not_authenticated", "authentication_failed"} <= {
            example["value"]["code"] for example in codes.values()
        }
        assert "429" in operation["responses"]


def test_writes_document_the_idempotency_headers():
    paths = openapi_document()["paths"]
    for path, method in KEYED_OPERATIONS:
        operation = paths[path][method]
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        if method == "get":
            assert "Idempotency-Key" not in headers
            continue
        assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
        success = operation["responses"]["201" if path == BOOKINGS else "200"]
        assert "Idempotent-Replayed" in success["headers"]
        for status in ("400", "409"):
            body = operation["responses"][status]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/Error"}


def test_booking_component_is_strict():
    booking = component("Booking")
    payload = component("Payload")

    assert set(booking["required"]) == set(booking["properties"]) == BOOKING_KEYS
    assert set(payload["required"]) == set(payload["properties"]) == PAYLOAD_KEYS
    assert set(component("Hazard")["required"]) == set(component("Hazard")["properties"])
    assert enum_at(booking["properties"]["status"]) == BookingStatus.values
    assert enum_at(payload["properties"]["review_status"]) == ReviewStatus.values
    assert enum_at(payload["properties"]["export_classification"]) == [
        *ExportClassification.values,
        None,
    ]
    assert enum_at(component("Hazard")["properties"]["type"]) == HazardType.values
    assert None in enum_at(booking["properties"]["refund"]["oneOf"][1])
    assert booking["properties"]["quantity"]["nullable"] is True
    assert booking["properties"]["hold_expires_at"]["nullable"] is True


def test_request_components_refuse_unknown_fields():
    for name in ("BookingHoldRequest", "CustomerRequest", "PayloadRequest", "HazardRequest"):
        assert component(name)["additionalProperties"] is False, name
    assert component("PatchedPayloadRequest")["additionalProperties"] is False
    assert component("BookingConfirmRequest")["additionalProperties"] is False
    assert set(component("BookingHoldRequest")["required"]) == {"slot_class", "currency"}
