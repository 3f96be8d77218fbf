"""The waitlist and webhook URLs in the reseller API, through HTTP with real keys: every
response checked against the served OpenAPI document, scope (another organisation's entry
or URL is 404), idempotent POSTs, and the queries a list costs."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Organisation
from bookings import services
from bookings.models import Booking, BookingStatus, WaitlistEntry, WaitlistStatus, WebhookEndpoint
from bookings.services import Actor
from marketplace.models import MissionStatus, SlotClass
from tests.bookings.api_helpers import CONFIRM, keyed_client, url
from tests.factories import MissionFactory, OrganisationFactory, ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema, openapi_document

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
WAITLIST = "/api/v1/waitlist/"
ENTRY = "/api/v1/waitlist/{entry_id}/"
WITHDRAW = "/api/v1/waitlist/{entry_id}/withdraw/"
WEBHOOKS = "/api/v1/webhooks/"
WEBHOOK = "/api/v1/webhooks/{endpoint_id}/"
ENABLE = "/api/v1/webhooks/{endpoint_id}/enable/"
ENTRY_KEYS = {
    "id",
    "status",
    "mission",
    "slot_class",
    "mass_g",
    "quantity",
    "currency",
    "channel",
    "position",
    "offer_booking",
    "offer_expires_at",
    "offered_at",
    "created_at",
}


def entry_url(template: str, entry_id: int) -> str:
    return template.replace("{entry_id}", str(entry_id)).replace("{endpoint_id}", str(entry_id))


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def client(reseller: Organisation) -> APIClient:
    return keyed_client(reseller)


@pytest.fixture
def sold_out() -> tuple[SlotClass, Booking]:
    """A 10 kg class held in full by someone else."""
    slot_class = SlotClassFactory.create(capacity_g=10_000, max_mass_g=10_000)
    booking = services.booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=OrganisationFactory.create(),
        channel="api",
        actor=SYSTEM,
        mass_g=10_000,
    )
    return slot_class, booking


def join(client: APIClient, slot_class: SlotClass, **body: Any) -> dict[str, Any]:
    body = {"slot_class": slot_class.pk, "mass_g": 2_000, "currency": "JPY", **body}
    response = client.post(WAITLIST, body, format="json")
    entry: dict[str, Any] = assert_matches_schema(response, WAITLIST, "post", 201)
    return entry


# --- joining ------------------------------------------------------------------------------


def test_joining_a_sold_out_class_is_201_with_the_place_in_the_queue(client, sold_out):
    slot_class, _booking = sold_out
    first = join(client, slot_class)
    second = join(client, slot_class, mass_g=3_000)

    assert set(first) == ENTRY_KEYS
    assert first["status"] == "waiting"
    assert (first["position"], second["position"]) == (1, 2)
    assert first["mission"] == slot_class.mission.code
    assert first["slot_class"] == slot_class.pk
    assert (first["mass_g"], first["quantity"], first["currency"]) == (2_000, None, "JPY")
    assert first["channel"] == "api"
    assert first["offer_booking"] is None
    assert first["offer_expires_at"] is None
    assert WaitlistEntry.objects.get(pk=first["id"]).api_key is not None


def test_a_class_with_room_now_is_409_capacity_available(client):
    slot_class = SlotClassFactory.create(capacity_g=10_000, max_mass_g=10_000)

    response = client.post(
        WAITLIST, {"slot_class": slot_class.pk, "mass_g": 2_000, "currency": "JPY"}, format="json"
    )

    body = assert_matches_schema(response, WAITLIST, "post", 409)
    assert body["code"] == "capacity_available"
    assert body["available_g"] == 10_000
    assert not WaitlistEntry.objects.exists()


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"mass_g": 450}, 400, "invalid", "mass_g"),
        ({"mass_g": 2_050}, 400, "invalid", "mass_g"),
        ({"mass_g": "2000"}, 400, "invalid", "mass_g"),
        ({"colour": "red"}, 400, "invalid", "colour"),
        ({"slot_class": 999_999}, 400, "invalid", "slot_class"),
        ({"currency": "EUR"}, 400, "currency_not_offered", None),
        ({"quantity": 2}, 400, "invalid", "quantity"),
    ],
)
def test_joining_is_refused_like_a_hold(client, sold_out, change, status, code, field):
    slot_class, _booking = sold_out
    body = {"slot_class": slot_class.pk, "mass_g": 2_000, "currency": "JPY", **change}

    response = client.post(WAITLIST, body, format="json")

    refused = assert_matches_schema(response, WAITLIST, "post", status)
    assert refused["code"] == code
    if field:
        assert field in refused["fields"]


def test_a_class_not_on_sale_or_not_sold_through_the_api_cannot_be_joined(client):
    closed = SlotClassFactory.create(mission=MissionFactory.create(status=MissionStatus.PLANNED))
    web_only = SlotClassFactory.create(sold_on_api=False)

    for slot_class, status, code in (
        (closed, 409, "sales_closed"),
        (web_only, 403, "channel_not_allowed"),
    ):
        response = client.post(
            WAITLIST,
            {"slot_class": slot_class.pk, "mass_g": 1_000, "currency": "JPY"},
            format="json",
        )
        assert assert_matches_schema(response, WAITLIST, "post", status)["code"] == code


def test_without_a_key_the_waitlist_and_webhooks_are_401(api_client):
    for path, method in (
        (WAITLIST, "get"),
        (WAITLIST, "post"),
        (WEBHOOKS, "get"),
        (WEBHOOKS, "post"),
    ):
        response = getattr(api_client, method)(path, {}, format="json")
        assert assert_matches_schema(response, path, method, 401)["code"] == "not_authenticated"


def test_joining_is_idempotent_under_an_idempotency_key(client, sold_out):
    slot_class, _booking = sold_out
    body = {"slot_class": slot_class.pk, "mass_g": 2_000, "currency": "JPY"}

    first = client.post(WAITLIST, body, format="json", HTTP_IDEMPOTENCY_KEY="join-1")
    again = client.post(WAITLIST, body, format="json", HTTP_IDEMPOTENCY_KEY="join-1")
    other = client.post(
        WAITLIST, {**body, "mass_g": 3_000}, format="json", HTTP_IDEMPOTENCY_KEY="join-1"
    )

    assert assert_matches_schema(first, WAITLIST, "post", 201) == again.json()
    assert again["Idempotent-Replayed"] == "true"
    assert assert_matches_schema(other, WAITLIST, "post", 409)["code"] == "idempotency_key_reused"
    assert WaitlistEntry.objects.count() == 1


# --- reading --------------------------------------------------------------------------------


def test_the_list_shows_only_the_keys_own_entries_and_filters_by_status(client, reseller, sold_out):
    slot_class, _booking = sold_out
    mine = join(client, slot_class)
    theirs = join(keyed_client(), slot_class)
    withdrawn = join(client, slot_class, mass_g=1_000)
    client.post(entry_url(WITHDRAW, withdrawn["id"]), format="json")

    listed = assert_matches_schema(client.get(WAITLIST), WAITLIST, "get", 200)
    waiting = assert_matches_schema(
        client.get(WAITLIST, {"status": "waiting"}), WAITLIST, "get", 200
    )

    assert [e["id"] for e in listed["results"]] == [withdrawn["id"], mine["id"]]
    assert [e["id"] for e in waiting["results"]] == [mine["id"]]
    assert theirs["id"] not in {e["id"] for e in listed["results"]}
    bad = client.get(WAITLIST, {"status": "sleeping"})
    assert assert_matches_schema(bad, WAITLIST, "get", 400)["fields"].keys() == {"status"}


def test_another_organisations_entry_is_404_on_every_verb(client, sold_out):
    slot_class, _booking = sold_out
    theirs = join(keyed_client(), slot_class)

    for template, method in ((ENTRY, "get"), (WITHDRAW, "post")):
        response = getattr(client, method)(entry_url(template, theirs["id"]), format="json")
        assert assert_matches_schema(response, template, method, 404)["code"] == "not_found"
    huge = client.get(entry_url(ENTRY, 10**30))
    assert assert_matches_schema(huge, ENTRY, "get", 404)["code"] == "not_found"
    assert WaitlistEntry.objects.get(pk=theirs["id"]).status == WaitlistStatus.WAITING


def test_an_offer_shows_its_hold_which_confirms_like_any_hold(client, sold_out):
    slot_class, blocking = sold_out
    entry = join(client, slot_class)
    services.booking_cancel(booking_id=blocking.pk, actor=SYSTEM)

    offered = assert_matches_schema(client.get(entry_url(ENTRY, entry["id"])), ENTRY, "get", 200)
    assert offered["status"] == "offered"
    assert offered["position"] is None
    offer = Booking.objects.get(reference=offered["offer_booking"])
    assert offered["offer_expires_at"] is not None
    assert offered["offered_at"] is not None

    confirmed = client.post(url(CONFIRM, offer.reference), format="json")
    assert assert_matches_schema(confirmed, CONFIRM, "post", 200)["status"] == "confirmed"
    booked = assert_matches_schema(client.get(entry_url(ENTRY, entry["id"])), ENTRY, "get", 200)
    assert booked["status"] == "booked"
    assert booked["offer_booking"] == offer.reference
    assert booked["offer_expires_at"] is None


def test_the_list_costs_the_same_queries_for_one_entry_or_a_page(
    client, reseller, sold_out, django_assert_num_queries
):
    slot_class, blocking = sold_out
    for _ in range(5):
        join(client, slot_class, mass_g=1_000)
    other = SlotClassFactory.create(capacity_g=10_000, max_mass_g=10_000)
    services.booking_hold(
        slot_class_id=other.pk, currency="JPY", organisation=OrganisationFactory.create(),
        channel="api", actor=SYSTEM, mass_g=10_000,
    )  # fmt: skip
    for _ in range(5):
        join(client, other, mass_g=1_000)
    services.booking_cancel(booking_id=blocking.pk, actor=SYSTEM)  # some offered now

    # key lookup, count, the page (entries with class, mission, offer booking, positions)
    with django_assert_num_queries(3):
        response = client.get(WAITLIST, {"page_size": 20})
    assert len(response.json()["results"]) == 10


# --- withdrawing ------------------------------------------------------------------------------


def test_withdrawing_is_200_and_repeating_it_changes_nothing(client, sold_out):
    slot_class, _booking = sold_out
    entry = join(client, slot_class)
    path = entry_url(WITHDRAW, entry["id"])

    first = assert_matches_schema(client.post(path, format="json"), WITHDRAW, "post", 200)
    again = assert_matches_schema(client.post(path, {}, format="json"), WITHDRAW, "post", 200)

    assert first["status"] == again["status"] == "withdrawn"
    refused = client.post(path, {"reason": "x"}, format="json")
    assert assert_matches_schema(refused, WITHDRAW, "post", 400)["fields"].keys() == {"reason"}


def test_withdrawing_an_offer_declines_it_and_a_booked_entry_is_409(client, sold_out):
    slot_class, blocking = sold_out
    declined = join(client, slot_class)
    kept = join(client, slot_class, mass_g=3_000)
    services.booking_cancel(booking_id=blocking.pk, actor=SYSTEM)

    response = client.post(entry_url(WITHDRAW, declined["id"]), format="json")

    assert assert_matches_schema(response, WITHDRAW, "post", 200)["status"] == "withdrawn"
    offer = Booking.objects.get(waitlist_entry__pk=declined["id"])
    assert offer.status == BookingStatus.CANCELLED
    kept_offer = Booking.objects.get(waitlist_entry__pk=kept["id"])
    services.booking_confirm(booking_id=kept_offer.pk, actor=SYSTEM, on_account=True)
    refused = client.post(entry_url(WITHDRAW, kept["id"]), format="json")
    assert assert_matches_schema(refused, WITHDRAW, "post", 409)["code"] == "invalid_state"


# --- webhook URLs -------------------------------------------------------------------------------


def test_registering_a_url_shows_its_secret_once(client, reseller):
    response = client.post(WEBHOOKS, {"url": "https://hooks.example.com/moonslot"}, format="json")

    created = assert_matches_schema(response, WEBHOOKS, "post", 201)
    assert created["secret"] == WebhookEndpoint.objects.get(pk=created["id"]).secret
    assert created["is_active"] is True
    listed = assert_matches_schema(client.get(WEBHOOKS), WEBHOOKS, "get", 200)
    (shown,) = listed["results"]
    assert "secret" not in shown
    detail = assert_matches_schema(
        client.get(entry_url(WEBHOOK, created["id"])), WEBHOOK, "get", 200
    )
    assert "secret" not in detail
    assert detail["url"] == "https://hooks.example.com/moonslot"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://hooks.example.com/in"},
        {"url": "https://10.1.2.3/in"},
        {"url": "not a url"},
        {"url": "https://hooks.example.com/\x00"},
        {"url": 42},
        {"url": "https://hooks.example.com/in", "events": ["booking.held"]},
        {},
    ],
)
def test_an_unusable_url_is_400_invalid(client, body):
    response = client.post(WEBHOOKS, body, format="json")

    assert assert_matches_schema(response, WEBHOOKS, "post", 400)["code"] == "invalid"
    assert not WebhookEndpoint.objects.exists()


def test_registering_is_idempotent_and_bounded(client):
    body = {"url": "https://hooks.example.com/in"}
    first = client.post(WEBHOOKS, body, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    again = client.post(WEBHOOKS, body, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    assert again.json() == assert_matches_schema(first, WEBHOOKS, "post", 201)
    for n in range(4):
        client.post(WEBHOOKS, {"url": f"https://hooks.example.com/{n}"}, format="json")

    sixth = client.post(WEBHOOKS, {"url": "https://hooks.example.com/6"}, format="json")

    assert assert_matches_schema(sixth, WEBHOOKS, "post", 400)["fields"].keys() == {"url"}
    assert WebhookEndpoint.objects.count() == 5


def test_another_organisations_url_is_404_and_deleting_removes_it(client):
    theirs_client = keyed_client()
    theirs = theirs_client.post(WEBHOOKS, {"url": "https://a.example.com/"}, format="json").json()
    mine = client.post(WEBHOOKS, {"url": "https://b.example.com/"}, format="json").json()

    for template, method in ((WEBHOOK, "get"), (WEBHOOK, "delete"), (ENABLE, "post")):
        response = getattr(client, method)(entry_url(template, theirs["id"]), format="json")
        assert assert_matches_schema(response, template, method, 404)["code"] == "not_found"
    assert WebhookEndpoint.objects.filter(pk=theirs["id"]).exists()

    deleted = client.delete(entry_url(WEBHOOK, mine["id"]))
    assert deleted.status_code == 204
    gone = client.get(entry_url(WEBHOOK, mine["id"]))
    assert assert_matches_schema(gone, WEBHOOK, "get", 404)["code"] == "not_found"


def test_enabling_a_disabled_url_resets_its_failures(client):
    created = client.post(WEBHOOKS, {"url": "https://hooks.example.com/in"}, format="json").json()
    WebhookEndpoint.objects.filter(pk=created["id"]).update(
        is_active=False, consecutive_failures=20
    )

    response = client.post(entry_url(ENABLE, created["id"]), format="json")

    enabled = assert_matches_schema(response, ENABLE, "post", 200)
    assert enabled["is_active"] is True
    assert enabled["consecutive_failures"] == 0
    assert enabled["disabled_at"] is None


def test_the_new_paths_are_in_the_document_with_their_tags():
    paths = openapi_document()["paths"]

    assert set(paths[WAITLIST]) >= {"get", "post"}
    assert set(paths[WEBHOOK]) >= {"get", "delete"}
    for path in (WAITLIST, ENTRY, WITHDRAW, WEBHOOKS, WEBHOOK, ENABLE):
        for method, operation in paths[path].items():
            if method in {"get", "post", "delete"}:
                assert "401" in operation["responses"], (path, method)
    assert "capacity_available" in str(paths[WAITLIST]["post"]["responses"]["409"])


@pytest.mark.parametrize("query", ["page=", "page=0", "page_size=-3", "page_size=abc", "page=1.5"])
@pytest.mark.parametrize("path", [WAITLIST, WEBHOOKS])
def test_a_page_the_document_does_not_allow_is_400_naming_it(client, path, query):
    response = client.get(f"{path}?{query}")

    refused = assert_matches_schema(response, path, "get", 400)
    assert set(refused["fields"]) == {query.split("=")[0]}
