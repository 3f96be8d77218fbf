"""Who may call the keyed endpoints, and what a key may see: every endpoint refuses a
request without a valid key, and another organisation's booking is 404 on every verb,
exactly as a missing one, changing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Organisation
from accounts.services import api_key_issue, api_key_revoke
from bookings.models import Booking, BookingEvent
from marketplace.models import SlotClass
from tests.bookings.api_helpers import (
    BOOKINGS,
    CANCEL,
    CONFIRM,
    DETAIL,
    EVENTS,
    PAYLOAD,
    hold_body,
    keyed_client,
    place_hold,
    url,
)
from tests.factories import ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

# (method, document path template, body)
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("get", BOOKINGS, None),
    ("post", BOOKINGS, {}),
    ("get", DETAIL, None),
    ("patch", PAYLOAD, {"name": "x"}),
    ("post", CONFIRM, None),
    ("post", CANCEL, None),
    ("get", EVENTS, None),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _body in ENDPOINTS]
BOOKING_VERBS = [e for e in ENDPOINTS if "{reference}" in e[1]]


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create()


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def reference(reseller: Organisation, deck: SlotClass) -> str:
    booking = place_hold(keyed_client(reseller), deck, payload={"name": "Rover"})
    return str(booking["reference"])


def call(client: APIClient, method: str, template: str, reference: str, body: Any):
    path = url(template, reference)
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, format="json")


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_no_key_is_401_not_authenticated_with_the_bearer_challenge(
    method, template, body, reference
):
    response = call(APIClient(), method, template, reference, body)

    error = assert_matches_schema(response, template, method, 401)
    assert error["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="moonslot"'


def _unknown_key() -> str:
    # Well-formed, but never issued.
    return "msk_0123456789ab_" + "A" * 43


def _revoked_key() -> str:
    issued = api_key_issue(organisation=ResellerFactory.create())
    api_key_revoke(api_key=issued.api_key)
    return issued.raw_key


def _wrong_secret_of_a_real_prefix() -> str:
    issued = api_key_issue(organisation=ResellerFactory.create())
    return issued.raw_key[:-1] + ("A" if issued.raw_key[-1] != "A" else "B")


BAD_CREDENTIALS = {
    "unknown": lambda: f"Bearer {_unknown_key()}",
    "wrong-secret": lambda: f"Bearer {_wrong_secret_of_a_real_prefix()}",
    "malformed": lambda: "Bearer not-a-key",
    "revoked": lambda: f"Bearer {_revoked_key()}",
    "wrong-scheme": lambda: f"Basic {_unknown_key()}",
    "no-key-after-scheme": lambda: "Bearer",
}


@pytest.mark.parametrize("credential", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_bad_key_is_401_authentication_failed(method, template, body, credential, reference):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=credential())

    response = call(client, method, template, reference, body)

    error = assert_matches_schema(response, template, method, 401)
    assert error["code"] == "authentication_failed"
    assert response["WWW-Authenticate"] == 'Bearer realm="moonslot"'


@pytest.mark.parametrize(
    ("method", "template", "body"), BOOKING_VERBS, ids=[f"{m} {p}" for m, p, _b in BOOKING_VERBS]
)
def test_another_organisations_booking_is_404_and_unchanged(method, template, body, reference):
    before = Booking.objects.get(reference=reference)
    events = BookingEvent.objects.count()
    stranger = keyed_client()

    response = call(stranger, method, template, reference, body)
    missing = call(stranger, method, template, "ZZZZZZ", body)

    error = assert_matches_schema(response, template, method, 404)
    assert error == assert_matches_schema(missing, template, method, 404)
    assert error["code"] == "not_found"
    after = Booking.objects.get(reference=reference)
    assert (after.status, after.updated_at) == (before.status, before.updated_at)
    assert after.payload.name == "Rover"
    assert BookingEvent.objects.count() == events


def test_another_organisations_booking_is_404_whatever_the_case(reference):
    response = keyed_client().get(url(DETAIL, reference.lower()))

    assert assert_matches_schema(response, DETAIL, "get", 404)["code"] == "not_found"


def test_list_and_events_show_only_the_keys_organisation(reseller, deck, reference):
    other = keyed_client()
    theirs = place_hold(other, deck)
    other.post(url(CONFIRM, theirs["reference"]))
    mine = keyed_client(reseller)

    my_list = assert_matches_schema(mine.get(BOOKINGS), BOOKINGS, "get", 200)
    their_list = assert_matches_schema(other.get(BOOKINGS), BOOKINGS, "get", 200)
    my_events = assert_matches_schema(mine.get(EVENTS), EVENTS, "get", 200)
    their_events = assert_matches_schema(other.get(EVENTS), EVENTS, "get", 200)

    assert [b["reference"] for b in my_list["results"]] == [reference]
    assert [b["reference"] for b in their_list["results"]] == [theirs["reference"]]
    assert {e["booking"] for e in my_events["results"]} == {reference}
    assert [e["type"] for e in their_events["results"]] == ["booking.held", "booking.confirmed"]
    assert {e["booking"] for e in their_events["results"]} == {theirs["reference"]}


def test_a_second_key_of_the_same_organisation_sees_the_same_bookings(reseller, reference):
    response = keyed_client(reseller).get(url(DETAIL, reference))

    assert assert_matches_schema(response, DETAIL, "get", 200)["reference"] == reference


def test_a_revoked_key_can_no_longer_hold(reseller, deck):
    issued = api_key_issue(organisation=reseller)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.raw_key}")
    assert_matches_schema(
        client.post(BOOKINGS, hold_body(deck), format="json"), BOOKINGS, "post", 201
    )
    api_key_revoke(api_key=issued.api_key)

    response = client.post(BOOKINGS, hold_body(deck), format="json")

    assert assert_matches_schema(response, BOOKINGS, "post", 401)["code"] == "authentication_failed"
    assert Booking.objects.count() == 1
