"""``Idempotency-Key`` on the reseller API's writes (shared/API.md, "Idempotency"), through
HTTP with real keys, plus the helper's own contract for failures no request can provoke
(5xx, an escaping exception). The PostgreSQL tests run real concurrent requests."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory

from accounts.models import ApiKey, Organisation
from accounts.services import api_key_issue
from bookings.idempotency import ABANDONED_AFTER, request_digest, run_idempotently
from bookings.models import Booking, BookingEvent, IdempotencyRecord, IdempotencyState
from config.api import ApiError
from marketplace.models import SlotClass
from tests.bookings.api_helpers import (
    BOOKINGS,
    CANCEL,
    CONFIRM,
    DETAIL,
    PAYLOAD,
    bearer_client,
    hold_body,
    keyed_client,
    place_hold,
    service_hold,
    taken_g,
    url,
)
from tests.bookings.concurrency_helpers import Background, run_together, wait_until_blocked_on_lock
from tests.factories import ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

REPLAYED = "Idempotent-Replayed"


@pytest.fixture
def reseller() -> Organisation:
    return ResellerFactory.create()


@pytest.fixture
def client(reseller: Organisation) -> APIClient:
    return keyed_client(reseller)


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create(capacity_g=10_000, max_mass_g=10_000)


def post(client: APIClient, path: str, body: Any = None, *, key: str, raw: str | None = None):
    if raw is not None:
        return client.post(path, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
    if body is None:
        return client.post(path, HTTP_IDEMPOTENCY_KEY=key)
    return client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


# --- replays ---------------------------------------------------------------------------------


def test_same_key_and_body_replays_the_first_response_and_changes_nothing(client, deck):
    body = hold_body(deck, mass_g=2000, customer={"name": "Aiko", "email": "a@example.jp"})
    first = post(client, BOOKINGS, body, key="hold-1")
    created = assert_matches_schema(first, BOOKINGS, "post", 201)
    events = BookingEvent.objects.count()

    # The same JSON spelt differently: other key order, other whitespace.
    respelt = json.dumps(dict(reversed(body.items())), indent=4)
    assert respelt != json.dumps(body)
    again = post(client, BOOKINGS, key="hold-1", raw=respelt)

    assert REPLAYED not in first
    assert again[REPLAYED] == "true"
    assert assert_matches_schema(again, BOOKINGS, "post", 201) == created
    assert Booking.objects.count() == 1
    assert BookingEvent.objects.count() == events
    assert taken_g(deck) == 2000


def test_same_key_with_another_body_is_409_idempotency_key_reused(client, deck):
    post(client, BOOKINGS, hold_body(deck, mass_g=2000), key="hold-1")

    response = post(client, BOOKINGS, hold_body(deck, mass_g=3000), key="hold-1")

    body = assert_matches_schema(response, BOOKINGS, "post", 409)
    assert body["code"] == "idempotency_key_reused"
    assert REPLAYED not in response
    assert Booking.objects.count() == 1
    assert taken_g(deck) == 2000


def test_key_is_scoped_to_the_api_key(reseller, deck):
    body = hold_body(deck)
    mine, colleague = keyed_client(reseller), keyed_client(reseller)
    other_reseller = keyed_client()

    responses = [post(c, BOOKINGS, body, key="same") for c in (mine, colleague, other_reseller)]

    references = {assert_matches_schema(r, BOOKINGS, "post", 201)["reference"] for r in responses}
    assert len(references) == 3
    assert all(REPLAYED not in r for r in responses)


def test_key_is_scoped_to_the_path_without_the_query_string(client, deck):
    first, second = place_hold(client, deck), place_hold(client, deck)

    a = post(client, url(CONFIRM, first["reference"]), key="confirm")
    b = post(client, url(CONFIRM, second["reference"]), key="confirm")
    a_again = post(client, url(CONFIRM, first["reference"]) + "?utm=1", key="confirm")

    assert assert_matches_schema(a, CONFIRM, "post", 200)["reference"] == first["reference"]
    assert assert_matches_schema(b, CONFIRM, "post", 200)["reference"] == second["reference"]
    assert REPLAYED not in b
    assert a_again[REPLAYED] == "true"


def test_body_less_post_counts_as_an_empty_object(client, deck):
    booking = place_hold(client, deck)
    path = url(CONFIRM, booking["reference"])

    first = post(client, path, key="c")
    again = post(client, path, {}, key="c")
    other = post(client, path, {"colour": 1}, key="c")

    assert again[REPLAYED] == "true"
    assert again.json() == first.json()
    assert assert_matches_schema(other, CONFIRM, "post", 409)["code"] == "idempotency_key_reused"


def test_a_4xx_is_stored_and_replayed_even_once_the_cause_is_gone(client, deck):
    blocker = place_hold(client, deck, mass_g=9000)
    refused = post(client, BOOKINGS, hold_body(deck, mass_g=2000), key="big")
    assert assert_matches_schema(refused, BOOKINGS, "post", 409)["code"] == "insufficient_capacity"
    client.post(url(CANCEL, blocker["reference"]))

    replay = post(client, BOOKINGS, hold_body(deck, mass_g=2000), key="big")
    fresh = post(client, BOOKINGS, hold_body(deck, mass_g=2000), key="big-2")

    assert replay[REPLAYED] == "true"
    assert replay.status_code == 409
    assert replay.json() == refused.json()
    assert_matches_schema(fresh, BOOKINGS, "post", 201)


def test_validation_errors_are_stored_and_replayed(client, deck):
    first = post(client, BOOKINGS, hold_body(deck, mass_g=-1), key="bad")
    again = post(client, BOOKINGS, hold_body(deck, mass_g=-1), key="bad")

    assert assert_matches_schema(first, BOOKINGS, "post", 400)["code"] == "invalid"
    assert again[REPLAYED] == "true"
    assert assert_matches_schema(again, BOOKINGS, "post", 400) == first.json()


def test_patch_replay_returns_the_first_response_not_the_current_state(client, deck):
    booking = place_hold(client, deck)
    path = url(PAYLOAD, booking["reference"])
    first = client.patch(path, {"name": "A"}, format="json", HTTP_IDEMPOTENCY_KEY="p")
    client.patch(path, {"name": "B"}, format="json")

    replay = client.patch(path, {"name": "A"}, format="json", HTTP_IDEMPOTENCY_KEY="p")

    assert replay[REPLAYED] == "true"
    assert assert_matches_schema(replay, PAYLOAD, "patch", 200)["payload"]["name"] == "A"
    assert replay.json() == first.json()
    current = client.get(url(DETAIL, booking["reference"]))
    assert assert_matches_schema(current, DETAIL, "get", 200)["payload"]["name"] == "B"


def test_cancel_replay_does_not_cancel_twice(client, deck):
    booking = place_hold(client, deck)
    path = url(CANCEL, booking["reference"])

    first = post(client, path, {"reason": "x"}, key="k")
    again = post(client, path, {"reason": "x"}, key="k")

    assert again.json() == first.json()
    assert BookingEvent.objects.filter(type="booking.cancelled").count() == 1


# --- the key itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "needle"),
    [("k" * 256, "at most 255"), ("", "empty"), ("tab\there", "printable")],
    ids=["too-long", "empty", "control-character"],
)
def test_a_bad_key_is_400_on_the_header_and_nothing_runs(client, deck, key, needle):
    response = post(client, BOOKINGS, hold_body(deck), key=key)

    body = assert_matches_schema(response, BOOKINGS, "post", 400)
    assert body["code"] == "invalid"
    assert needle in body["fields"]["Idempotency-Key"][0]
    assert not Booking.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_a_key_of_255_characters_is_accepted(client, deck):
    key = "k" * 255
    first = post(client, BOOKINGS, hold_body(deck), key=key)
    again = post(client, BOOKINGS, hold_body(deck), key=key)

    assert_matches_schema(first, BOOKINGS, "post", 201)
    assert again[REPLAYED] == "true"


def test_refusals_before_authentication_or_parsing_are_not_stored(deck):
    anonymous = APIClient()
    client = keyed_client()

    unauthenticated = post(anonymous, BOOKINGS, hold_body(deck), key="k")
    malformed = post(client, BOOKINGS, key="k", raw='{"slot_class": ')

    assert unauthenticated.status_code == 401
    assert assert_matches_schema(malformed, BOOKINGS, "post", 400)["code"] == "parse_error"
    assert not IdempotencyRecord.objects.exists()
    assert_matches_schema(post(client, BOOKINGS, hold_body(deck), key="k"), BOOKINGS, "post", 201)


def test_throttled_requests_are_not_stored(client, deck):
    from django.core.cache import cache

    rates = {"anon": "100/min", "api_key": "1/min"}
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        client.get(BOOKINGS)
        throttled = post(client, BOOKINGS, hold_body(deck), key="k")
        assert assert_matches_schema(throttled, BOOKINGS, "post", 429)["code"] == "throttled"
        cache.clear()  # the minute has passed

        retried = post(client, BOOKINGS, hold_body(deck), key="k")

    assert_matches_schema(retried, BOOKINGS, "post", 201)
    assert REPLAYED not in retried


def test_values_postgresql_cannot_store_are_answered_and_replayed(client, deck):
    # NUL is refused inside PostgreSQL text and jsonb: neither the stored path nor the
    # stored error body may contain it.
    body = hold_body(deck, payload={"export_classification": "EAR99\u0000", "colour\u0000": 1})
    first = post(client, BOOKINGS, body, key="nul")
    again = post(client, BOOKINGS, body, key="nul")
    nul_path = post(client, "/api/v1/bookings/AB%00CD/confirm/", key="nul")
    long_path = post(client, "/api/v1/bookings/" + "X" * 600 + "/cancel/", key="nul")

    fields = assert_matches_schema(first, BOOKINGS, "post", 400)["fields"]
    assert set(fields) == {"payload.export_classification", "payload.colour\\u0000"}
    assert again[REPLAYED] == "true"
    assert again.json() == first.json()
    assert assert_matches_schema(nul_path, CONFIRM, "post", 404)["code"] == "not_found"
    assert assert_matches_schema(long_path, CANCEL, "post", 404)["code"] == "not_found"


# --- records in flight, abandoned, expired ---------------------------------------------------


def record(client_key: ApiKey, *, key: str, path: str, body: Any, **fields: Any):
    return IdempotencyRecord.objects.create(
        api_key=client_key, key=key, path=path, request_digest=request_digest(body), **fields
    )


@pytest.fixture
def issued(reseller: Organisation) -> tuple[APIClient, ApiKey]:
    issued = api_key_issue(organisation=reseller)
    return bearer_client(issued.raw_key), issued.api_key


def test_a_duplicate_while_the_first_runs_is_409_idempotency_key_in_use(issued, deck):
    client, api_key = issued
    body = hold_body(deck)
    record(api_key, key="k", path=BOOKINGS, body=body, state=IdempotencyState.IN_PROGRESS)

    same = post(client, BOOKINGS, body, key="k")
    different = post(client, BOOKINGS, hold_body(deck, mass_g=2000), key="k")

    assert assert_matches_schema(same, BOOKINGS, "post", 409)["code"] == "idempotency_key_in_use"
    assert assert_matches_schema(different, BOOKINGS, "post", 409)["code"] == (
        "idempotency_key_reused"
    )
    assert not Booking.objects.exists()


def test_a_claim_abandoned_by_a_dead_process_is_taken_over(issued, deck):
    client, api_key = issued
    body = hold_body(deck)
    record(
        api_key,
        key="k",
        path=BOOKINGS,
        body=body,
        state=IdempotencyState.IN_PROGRESS,
        created_at=timezone.now() - ABANDONED_AFTER - timedelta(seconds=1),
    )

    response = post(client, BOOKINGS, body, key="k")

    assert_matches_schema(response, BOOKINGS, "post", 201)
    assert IdempotencyRecord.objects.get().state == IdempotencyState.COMPLETED


def test_a_record_past_the_ttl_is_replaced(issued, deck):
    client, api_key = issued
    body = hold_body(deck)
    old = record(
        api_key,
        key="k",
        path=BOOKINGS,
        body={"something": "else"},
        state=IdempotencyState.COMPLETED,
        response_status=201,
        response_body={"reference": "OLD"},
        created_at=timezone.now() - settings.MOONSLOT_IDEMPOTENCY_TTL - timedelta(seconds=1),
    )

    response = post(client, BOOKINGS, body, key="k")

    assert assert_matches_schema(response, BOOKINGS, "post", 201)["reference"] != "OLD"
    assert REPLAYED not in response
    assert not IdempotencyRecord.objects.filter(pk=old.pk).exists()


def test_a_record_within_the_ttl_still_replays(client, deck):
    first = post(client, BOOKINGS, hold_body(deck), key="k")
    IdempotencyRecord.objects.update(
        created_at=timezone.now() - settings.MOONSLOT_IDEMPOTENCY_TTL + timedelta(minutes=1)
    )

    again = post(client, BOOKINGS, hold_body(deck), key="k")

    assert again[REPLAYED] == "true"
    assert again.json() == first.json()


# --- the helper's contract for failures ------------------------------------------------------


def keyed_request(body: Any, key: str = "k") -> Request:
    django_request = APIRequestFactory().post(
        BOOKINGS, body, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    return Request(django_request, parsers=[JSONParser()])


def reraise(exc: Exception) -> Response:
    raise exc


def test_5xx_and_429_responses_are_not_stored_so_a_retry_runs(reseller):
    api_key = api_key_issue(organisation=reseller).api_key
    calls: list[int] = []

    def answer(status: int):
        def handler() -> Response:
            calls.append(status)
            return Response({"n": len(calls)}, status=status)

        return handler

    for status in (503, 429, 201, 500):
        response = run_idempotently(
            keyed_request({}), api_key=api_key, handler=answer(status), handle_exception=reraise
        )
        assert response.status_code == (201 if status == 500 else status)

    # 503 and 429 ran and left nothing; 201 ran and was stored; the last call replayed it.
    assert calls == [503, 429, 201]
    assert IdempotencyRecord.objects.get().response_status == 201


def test_an_escaping_error_rolls_the_write_back_and_frees_the_key(reseller, deck):
    api_key = api_key_issue(organisation=reseller).api_key

    def crash_after_writing() -> Response:
        service_hold(deck, reseller)
        raise RuntimeError("the process fell over after the service")

    with pytest.raises(RuntimeError):
        run_idempotently(
            keyed_request({}),
            api_key=api_key,
            handler=crash_after_writing,
            handle_exception=reraise,
        )

    assert not Booking.objects.exists()
    assert taken_g(deck) == 0
    assert not IdempotencyRecord.objects.exists()


def test_a_claim_taken_over_while_its_request_ran_rolls_that_request_back(reseller, deck):
    api_key = api_key_issue(organisation=reseller).api_key

    def taken_over_meanwhile() -> Response:
        service_hold(deck, reseller)
        # What a takeover does to a claim that looks abandoned: delete it and claim anew.
        IdempotencyRecord.objects.all().delete()
        record(api_key, key="k", path=BOOKINGS, body={}, state=IdempotencyState.IN_PROGRESS)
        return Response({"reference": "LOST"}, status=201)

    with pytest.raises(ApiError) as refused:
        run_idempotently(
            keyed_request({}),
            api_key=api_key,
            handler=taken_over_meanwhile,
            handle_exception=reraise,
        )

    assert refused.value.status_code == 409
    assert refused.value.get_codes() == "idempotency_key_in_use"
    # This run's writes rolled back with its lost claim; only the taker's claim is left.
    assert not Booking.objects.exists()
    assert taken_g(deck) == 0
    assert IdempotencyRecord.objects.get().state == IdempotencyState.IN_PROGRESS


def test_handler_errors_are_turned_into_their_response_before_storing(reseller):
    api_key = api_key_issue(organisation=reseller).api_key

    def refuse() -> Response:
        raise ValidationError({"mass_g": ["No."]})

    def as_response(exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return Response({"code": "invalid"}, status=400)

    response = run_idempotently(
        keyed_request({}), api_key=api_key, handler=refuse, handle_exception=as_response
    )

    assert response.status_code == 400
    stored = IdempotencyRecord.objects.get()
    assert (stored.response_status, stored.response_body) == (400, {"code": "invalid"})


# --- real concurrency (PostgreSQL) -----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_duplicate_arriving_while_the_first_waits_for_a_lock_is_in_use(require_postgres):
    reseller = ResellerFactory.create()
    issued = api_key_issue(organisation=reseller)
    deck = SlotClassFactory.create()
    body = hold_body(deck)

    def keyed() -> APIClient:
        return bearer_client(issued.raw_key)

    with transaction.atomic():
        # Hold the class's row lock so the first request stops inside its service call.
        SlotClass.objects.select_for_update().get(pk=deck.pk)
        first = Background(lambda: post(keyed(), BOOKINGS, body, key="k"), name="first")
        wait_until_blocked_on_lock(first.pid)
        duplicate = post(keyed(), BOOKINGS, body, key="k")
    outcome = first.outcome()

    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "idempotency_key_in_use"
    assert outcome.error is None
    assert outcome.value is not None
    created = assert_matches_schema(outcome.value, BOOKINGS, "post", 201)
    replay = post(keyed(), BOOKINGS, body, key="k")
    assert replay[REPLAYED] == "true"
    assert replay.json() == created
    assert Booking.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_make_exactly_one_booking(require_postgres):
    reseller = ResellerFactory.create()
    issued = api_key_issue(organisation=reseller)
    deck = SlotClassFactory.create()
    body = hold_body(deck, mass_g=1500)

    def attempt():
        return post(bearer_client(issued.raw_key), BOOKINGS, body, key="race")

    outcomes = run_together([attempt] * 8)

    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    responses = [o.value for o in outcomes if o.value is not None]
    originals = [r for r in responses if r.status_code == 201 and REPLAYED not in r]
    replays = [r for r in responses if r.status_code == 201 and REPLAYED in r]
    in_use = [r for r in responses if r.status_code == 409]
    assert len(originals) == 1
    assert len(originals) + len(replays) + len(in_use) == 8
    assert all(r.json()["code"] == "idempotency_key_in_use" for r in in_use)
    assert all(r.json() == originals[0].json() for r in replays)
    assert Booking.objects.count() == 1
    assert taken_g(deck) == 1500


def test_records_past_the_ttl_are_purged_by_the_periodic_job() -> None:
    from bookings.tasks import idempotency_records_purge_task

    reseller = ResellerFactory.create()
    api_key = api_key_issue(organisation=reseller).api_key
    old = timezone.now() - timedelta(hours=25)
    for key, created in [("old", old), ("fresh", timezone.now())]:
        IdempotencyRecord.objects.create(
            api_key=api_key,
            key=key,
            path="/api/v1/bookings/",
            request_digest="0" * 64,
            state=IdempotencyState.COMPLETED,
            response_status=201,
            response_body={},
            created_at=created,
        )
    assert idempotency_records_purge_task.delay().get() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["fresh"]
