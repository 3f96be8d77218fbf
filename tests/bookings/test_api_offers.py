"""The reseller API's schedule-change offers: ``GET /bookings/{reference}/offers/`` and
``POST /bookings/{reference}/offers/{offer_id}/answer/``, through HTTP, against the OpenAPI
document, with keys, tenancy, idempotency and the contract's error codes."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Organisation
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    OfferStatus,
)
from marketplace.models import SlotClass
from tests.bookings.api_helpers import BOOKING_KEYS, EVENTS, keyed_client
from tests.bookings.test_reaccommodation import (
    PRICE_PER_KG,
    another_mission_class,
    offer_of,
    place,
    slip,
    taken,
)
from tests.factories import ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

OFFERS = "/api/v1/bookings/{reference}/offers/"
ANSWER = "/api/v1/bookings/{reference}/offers/{offer_id}/answer/"
DETAIL = "/api/v1/bookings/{reference}/"
# key, booking, offers (with change, mission and target joined), move targets and their prices,
# and the key's last-use stamp (written at most once a minute)
QUERIES = 6


def offers_url(booking: Booking) -> str:
    return OFFERS.replace("{reference}", booking.reference.lower())


def answer_url(booking: Booking, offer_id: int) -> str:
    return ANSWER.replace("{reference}", booking.reference).replace("{offer_id}", str(offer_id))


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def client(reseller: Organisation) -> APIClient:
    return keyed_client(reseller)


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create(capacity_g=100_000)


@pytest.fixture
def booking(deck: SlotClass, reseller: Organisation) -> Booking:
    booking = place(deck, reseller)
    slip(deck.mission)
    return booking


@pytest.fixture
def target() -> SlotClass:
    return another_mission_class(name="Deck on M+")


def answer(client: APIClient, booking: Booking, body: dict[str, Any], **headers: Any) -> Any:
    return client.post(answer_url(booking, offer_of(booking).pk), body, format="json", **headers)


# --- reading -----------------------------------------------------------------------------


def test_the_offers_list_gives_the_choices_targets_and_refund(
    client: APIClient, booking: Booking, target: SlotClass, django_assert_max_num_queries: Any
) -> None:
    another_mission_class(sold_on_api=False)  # not a target of an API booking

    with django_assert_max_num_queries(QUERIES):
        response = client.get(offers_url(booking))

    page = assert_matches_schema(response, OFFERS, "get", 200)
    (offer,) = page["results"]
    assert page["count"] == 1
    assert offer["id"] == offer_of(booking).pk
    assert offer["booking"] == booking.reference
    assert offer["mission"] == booking.slot_class.mission.code
    assert offer["status"] == "open"
    assert offer["choices"] == ["stay", "move", "cancel"]
    assert [t["slot_class"] for t in offer["move_targets"]] == [target.pk]
    assert offer["move_targets"][0]["mission"] == target.mission.code
    assert offer["move_targets"][0]["available_g"] == 100_000
    assert offer["cancel_refund"] == {"amount": PRICE_PER_KG, "currency": "JPY"}
    assert offer["moved_to"] is None
    assert offer["answered_at"] is None


def test_the_list_costs_the_same_queries_with_more_targets(
    client: APIClient, booking: Booking, django_assert_max_num_queries: Any
) -> None:
    for _ in range(6):
        another_mission_class()

    with django_assert_max_num_queries(QUERIES):
        page = assert_matches_schema(client.get(offers_url(booking)), OFFERS, "get", 200)

    assert len(page["results"][0]["move_targets"]) == 6


def test_a_booking_without_offers_has_an_empty_list(
    client: APIClient, reseller: Organisation, deck: SlotClass
) -> None:
    fresh = place(deck, reseller)

    page = assert_matches_schema(client.get(offers_url(fresh)), OFFERS, "get", 200)

    assert page == {"count": 0, "next": None, "previous": None, "results": []}


# --- keys and tenancy ----------------------------------------------------------------------


def test_offers_need_a_key(api_client: APIClient, booking: Booking) -> None:
    listing = api_client.get(offers_url(booking))
    answered = api_client.post(answer_url(booking, offer_of(booking).pk), {"choice": "stay"})

    assert assert_matches_schema(listing, OFFERS, "get", 401)["code"] == "not_authenticated"
    assert assert_matches_schema(answered, ANSWER, "post", 401)["code"] == "not_authenticated"
    assert offer_of(booking).status == OfferStatus.OPEN


def test_another_organisations_booking_and_its_offer_are_not_found(booking: Booking) -> None:
    stranger = keyed_client()

    listing = stranger.get(offers_url(booking))
    answered = answer(stranger, booking, {"choice": "cancel"})

    assert assert_matches_schema(listing, OFFERS, "get", 404)["code"] == "not_found"
    assert assert_matches_schema(answered, ANSWER, "post", 404)["code"] == "not_found"
    assert Booking.objects.get(pk=booking.pk).status == BookingStatus.CONFIRMED


def test_an_offer_of_another_booking_is_not_found(
    client: APIClient, booking: Booking, deck: SlotClass, reseller: Organisation
) -> None:
    other = place(deck, reseller)
    offer_id = offer_of(booking).pk

    wrong_booking = client.post(answer_url(other, offer_id), {"choice": "stay"}, format="json")
    huge_id = client.post(answer_url(booking, 2**70), {"choice": "stay"}, format="json")
    not_a_number = client.post(
        answer_url(booking, offer_id).replace(f"/{offer_id}/", "/null,null/"),
        {"choice": "stay"},
        format="json",
    )

    assert assert_matches_schema(wrong_booking, ANSWER, "post", 404)["code"] == "not_found"
    assert assert_matches_schema(huge_id, ANSWER, "post", 404)["code"] == "not_found"
    assert assert_matches_schema(not_a_number, ANSWER, "post", 404)["code"] == "not_found"
    assert offer_of(booking).status == OfferStatus.OPEN


# --- answering ---------------------------------------------------------------------------


def test_staying_through_the_api(client: APIClient, booking: Booking) -> None:
    body = assert_matches_schema(answer(client, booking, {"choice": "stay"}), ANSWER, "post", 200)

    assert body["status"] == "stayed"
    assert body["choices"] == []
    assert body["answered_at"] is not None
    assert offer_of(booking).status == OfferStatus.STAYED


def test_moving_through_the_api_keeps_the_reference_and_price(
    client: APIClient, booking: Booking, target: SlotClass
) -> None:
    response = answer(client, booking, {"choice": "move", "slot_class": target.pk})

    body = assert_matches_schema(response, ANSWER, "post", 200)
    assert (body["status"], body["moved_to"]) == ("moved", target.pk)
    detail = assert_matches_schema(
        client.get(DETAIL.replace("{reference}", booking.reference)), DETAIL, "get", 200
    )
    assert set(detail) == BOOKING_KEYS
    assert detail["reference"] == booking.reference
    assert detail["slot_class"] == target.pk
    assert detail["mission"] == target.mission.code
    assert detail["price"] == {"amount": booking.price_amount, "currency": "JPY"}
    feed = assert_matches_schema(client.get(EVENTS), EVENTS, "get", 200)
    assert "offer.moved" in [event["type"] for event in feed["results"]]


def test_cancelling_through_the_api_refunds_everything(
    client: APIClient, booking: Booking, deck: SlotClass
) -> None:
    before = taken(deck)[0]

    body = assert_matches_schema(answer(client, booking, {"choice": "cancel"}), ANSWER, "post", 200)

    assert body["status"] == "cancelled"
    detail = client.get(DETAIL.replace("{reference}", booking.reference)).json()
    assert detail["status"] == "cancelled"
    assert detail["refund"] == {"amount": booking.price_amount, "currency": "JPY"}
    assert taken(deck)[0] == before - booking.mass_g


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"choice": "move"}, "slot_class"),
        ({"choice": "stay", "slot_class": 1}, "slot_class"),
        ({"choice": "fly"}, "choice"),
        ({"choice": "stay", "colour": "red"}, "colour"),
        ({"choice": "move", "slot_class": "12"}, "slot_class"),
        ({}, "choice"),
    ],
    ids=[
        "move-without-class",
        "class-with-stay",
        "unknown-choice",
        "unknown-field",
        "text-id",
        "empty",
    ],
)
def test_malformed_answers_are_400_naming_the_field(
    client: APIClient, booking: Booking, body: dict[str, Any], field: str
) -> None:
    error = assert_matches_schema(answer(client, booking, body), ANSWER, "post", 400)

    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert offer_of(booking).status == OfferStatus.OPEN


def test_a_move_to_an_unknown_or_unsuitable_class_is_400_on_slot_class(
    client: APIClient, booking: Booking, deck: SlotClass
) -> None:
    same_mission = SlotClassFactory.create(mission=deck.mission)

    unknown = answer(client, booking, {"choice": "move", "slot_class": 2_000_000_000})
    unsuitable = answer(client, booking, {"choice": "move", "slot_class": same_mission.pk})

    for response in (unknown, unsuitable):
        error = assert_matches_schema(response, ANSWER, "post", 400)
        assert error["code"] == "invalid"
        assert list(error["fields"]) == ["slot_class"]


def test_a_move_to_a_class_without_room_is_409_with_what_is_left(
    client: APIClient, booking: Booking
) -> None:
    full = another_mission_class(capacity_g=1500, max_mass_g=1500)
    place(full, ResellerFactory.create(), mass_g=1000)

    response = answer(client, booking, {"choice": "move", "slot_class": full.pk})

    error = assert_matches_schema(response, ANSWER, "post", 409)
    assert (error["code"], error["available_g"]) == ("insufficient_capacity", 500)
    assert Booking.objects.get(pk=booking.pk).slot_class_id != full.pk


def test_a_move_to_a_class_without_the_bookings_currency_is_400_currency_not_offered(
    client: APIClient, booking: Booking
) -> None:
    dollars_only = another_mission_class(prices={"USD": 1_200_000_00})

    response = answer(client, booking, {"choice": "move", "slot_class": dollars_only.pk})

    error = assert_matches_schema(response, ANSWER, "post", 400)
    assert error["code"] == "currency_not_offered"


def test_another_answer_to_an_answered_offer_is_409_invalid_state(
    client: APIClient, booking: Booking
) -> None:
    answer(client, booking, {"choice": "stay"})

    again = answer(client, booking, {"choice": "stay"})
    other = answer(client, booking, {"choice": "cancel"})

    assert assert_matches_schema(again, ANSWER, "post", 200)["status"] == "stayed"
    assert assert_matches_schema(other, ANSWER, "post", 409)["code"] == "invalid_state"


# --- idempotency -------------------------------------------------------------------------


def test_a_replayed_answer_returns_the_first_response_and_changes_nothing(
    client: APIClient, booking: Booking, target: SlotClass
) -> None:
    body = {"choice": "move", "slot_class": target.pk}
    key = {"HTTP_IDEMPOTENCY_KEY": "move-1"}

    first = answer(client, booking, body, **key)
    replay = answer(client, booking, body, **key)
    reused = answer(client, booking, {"choice": "stay"}, **key)

    assert assert_matches_schema(first, ANSWER, "post", 200) == (
        assert_matches_schema(replay, ANSWER, "post", 200)
    )
    assert replay["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert assert_matches_schema(reused, ANSWER, "post", 409)["code"] == "idempotency_key_reused"
    assert taken(target)[0] == booking.mass_g
    assert BookingEvent.objects.filter(booking=booking, type=EventType.OFFER_MOVED).count() == 1


def test_a_refused_answer_is_replayed_as_refused(client: APIClient, booking: Booking) -> None:
    full = another_mission_class(capacity_g=1500, max_mass_g=1500)
    place(full, ResellerFactory.create(), mass_g=1000)
    body = {"choice": "move", "slot_class": full.pk}

    first = answer(client, booking, body, HTTP_IDEMPOTENCY_KEY="k")
    # The class gets room meanwhile: the key still answers with the stored 409.
    SlotClass.objects.filter(pk=full.pk).update(capacity_g=5000, max_mass_g=5000)
    replay = answer(client, booking, body, HTTP_IDEMPOTENCY_KEY="k")

    assert first.status_code == replay.status_code == 409
    assert replay["Idempotent-Replayed"] == "true"
    assert offer_of(booking).status == OfferStatus.OPEN
