"""The conventions every endpoint of the reseller API shares (shared/API.md, "Conventions"):
authentication on public endpoints, throttling, and the error body.

The handler tests route to small views defined here (``@pytest.mark.urls(__name__)``), so they
do not depend on any endpoint's own rules.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.test import override_settings
from django.urls import path
from rest_framework import serializers
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey, Organisation
from accounts.services import api_key_issue, api_key_revoke
from config.api import ApiError, flatten_errors
from tests.factories import MissionFactory, ResellerFactory

pytestmark = pytest.mark.django_db

MISSIONS = "/api/v1/missions/"
MISSION = "/api/v1/missions/M3/"
SCHEMA = "/api/v1/schema/"
DOCS = "/api/v1/docs/"
WWW_AUTHENTICATE = 'Bearer realm="moonslot"'


def issue_key() -> tuple[ApiKey, str]:
    issued = api_key_issue(organisation=cast(Organisation, ResellerFactory()))
    return issued.api_key, issued.raw_key


def limit_rates(anon: str, api_key: str) -> Any:
    return override_settings(
        REST_FRAMEWORK={
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"anon": anon, "api_key": api_key},
        }
    )


# --- authentication on public endpoints ----------------------------------------------------


def _bad_headers() -> dict[str, str]:
    _key, raw = issue_key()
    revoked, revoked_raw = issue_key()
    api_key_revoke(api_key=revoked)
    prefix = raw.split("_")[1]
    return {
        "malformed": "Bearer not-a-moonslot-key",
        "unknown": f"Bearer msk_{'0' * 12}_{'A' * 43}",
        "wrong secret": f"Bearer msk_{prefix}_{'B' * 43}",
        "revoked": f"Bearer {revoked_raw}",
        "other scheme": f"Token {raw}",
        "scheme alone": "Bearer",
        "extra part": f"Bearer {raw} extra",
        "not ascii": "Bearer msk_\xe9\xe9\xe9",
    }


BAD_KEY_KINDS = [
    "malformed",
    "unknown",
    "wrong secret",
    "revoked",
    "other scheme",
    "scheme alone",
    "extra part",
    "not ascii",
]


@pytest.mark.parametrize("kind", BAD_KEY_KINDS)
@pytest.mark.parametrize("url", [MISSIONS, MISSION, SCHEMA])
def test_bad_key_on_a_public_endpoint_is_401_authentication_failed(api_client, kind, url):
    MissionFactory(code="M3")
    api_client.credentials(HTTP_AUTHORIZATION=_bad_headers()[kind])

    response = api_client.get(url, HTTP_ACCEPT="application/json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "authentication_failed"
    assert body["detail"]


def test_bad_key_on_the_docs_page_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION=_bad_headers()["revoked"])

    response = api_client.get(DOCS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE


@pytest.mark.parametrize("url", [MISSIONS, MISSION, SCHEMA, DOCS])
def test_public_endpoints_answer_without_a_key(api_client, url):
    MissionFactory(code="M3")

    assert api_client.get(url).status_code == 200


def test_valid_key_is_accepted_on_public_endpoints_and_marks_the_key_used(api_client):
    MissionFactory(code="M3")
    api_key, raw = issue_key()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    listed = api_client.get(MISSIONS)
    detail = api_client.get(MISSION)

    assert listed.status_code == 200
    assert detail.status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_empty_authorization_header_counts_as_no_key(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="")

    assert api_client.get(MISSIONS).status_code == 200


# --- throttling ----------------------------------------------------------------------------


def _assert_throttled(response: Any) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "throttled"


def test_anonymous_requests_are_throttled_per_ip_with_retry_after(api_client):
    with limit_rates(anon="2/min", api_key="1000/min"):
        first = api_client.get(MISSIONS, REMOTE_ADDR="203.0.113.7")
        second = api_client.get(MISSIONS, REMOTE_ADDR="203.0.113.7")
        third = api_client.get(MISSIONS, REMOTE_ADDR="203.0.113.7")
        other_ip = api_client.get(MISSIONS, REMOTE_ADDR="203.0.113.8")

    assert [first.status_code, second.status_code] == [200, 200]
    _assert_throttled(third)
    assert other_ip.status_code == 200


def test_keyed_requests_are_throttled_per_key_not_per_ip(api_client):
    _key, raw = issue_key()
    _other, other_raw = issue_key()
    with limit_rates(anon="1/min", api_key="2/min"):
        keyed = [
            api_client.get(MISSIONS, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code
            for _ in range(3)
        ]
        throttled = api_client.get(MISSIONS, HTTP_AUTHORIZATION=f"Bearer {raw}")
        other_key = api_client.get(MISSIONS, HTTP_AUTHORIZATION=f"Bearer {other_raw}")

    # Two allowed for the key although the anonymous rate of that IP is one a minute.
    assert keyed == [200, 200, 429]
    _assert_throttled(throttled)
    assert other_key.status_code == 200


def test_throttle_rates_follow_the_settings_in_force(api_client):
    with limit_rates(anon="1/min", api_key="1/min"):
        api_client.get(MISSIONS)
        assert api_client.get(MISSIONS).status_code == 429
    with limit_rates(anon="100/min", api_key="100/min"):
        assert api_client.get(MISSIONS).status_code == 200


# --- flatten_errors ------------------------------------------------------------------------


def test_flatten_errors_joins_nested_paths_with_dots():
    errors = {
        "customer": {"email": ["Enter a valid email address."]},
        "payload": {
            "dimensions_mm": ["Ensure this field has no more than 3 elements."],
            "hazards": [{}, {"energy_wh": ["Must be at least 1."]}],
        },
        "mass_g": ["Must be a multiple of 100."],
    }

    assert flatten_errors(errors) == {
        "customer.email": ["Enter a valid email address."],
        "payload.dimensions_mm": ["Ensure this field has no more than 3 elements."],
        "payload.hazards.1.energy_wh": ["Must be at least 1."],
        "mass_g": ["Must be a multiple of 100."],
    }


def test_flatten_errors_names_list_items_by_index():
    # A ListField reports a bad item as {index: [messages]}.
    errors = {"payload": {"dimensions_mm": {0: ["A valid integer is required."]}}}

    assert flatten_errors(errors) == {"payload.dimensions_mm.0": ["A valid integer is required."]}


def test_flatten_errors_puts_a_nested_serializers_own_errors_at_its_path():
    errors = {
        "non_field_errors": ["The body as a whole is wrong."],
        "payload": {"non_field_errors": ["Give either mass_g or quantity."]},
    }

    assert flatten_errors(errors) == {
        "non_field_errors": ["The body as a whole is wrong."],
        "payload": ["Give either mass_g or quantity."],
    }


def test_flatten_errors_of_a_bare_message_list():
    assert flatten_errors(["Wrong."]) == {"non_field_errors": ["Wrong."]}
    assert flatten_errors([]) == {}


# --- the exception handler, through test-only views ----------------------------------------


class _HazardSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=["lithium_battery", "other"])
    energy_wh = serializers.IntegerField(min_value=1, required=False)


class _PayloadSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    dimensions_mm = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=3, max_length=3
    )
    hazards = _HazardSerializer(many=True, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("name") == "refused":
            raise serializers.ValidationError("This payload is refused as a whole.")
        return attrs


class _CustomerSerializer(serializers.Serializer[Any]):
    email = serializers.EmailField()


class _BookingLikeSerializer(serializers.Serializer[Any]):
    customer = _CustomerSerializer()
    payload = _PayloadSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["customer"]["email"].endswith("@refused.example"):
            raise serializers.ValidationError("We cannot take bookings for this customer.")
        return attrs


class _EchoView(APIView):
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        serializer = _BookingLikeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data, status=201)


class _RaisingView(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request, kind: str) -> Response:
        if kind == "api_error":
            raise ApiError(
                status_code=409,
                code="insufficient_capacity",
                detail="Not enough capacity.",
                extra={"available_g": 1200},
            )
        if kind == "django_validation":
            raise DjangoValidationError({"mass_g": ["Too heavy."], "__all__": ["Not today."]})
        if kind == "http404":
            raise Http404("no such thing")
        if kind == "throttled_without_wait":
            raise Throttled(wait=None)
        return Response({"kind": kind})


urlpatterns = [
    path("echo/", _EchoView.as_view()),
    path("raise/<str:kind>/", _RaisingView.as_view()),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    "body", ['{"customer": ', "{'single': 'quotes'}", "[1, 2", "\xff\xfe", '{"a": NaN']
)
def test_malformed_json_is_400_parse_error(api_client, body):
    response = api_client.post("/echo/", data=body, content_type="application/json")

    assert response.status_code == 400
    payload = response.json()
    assert set(payload) == {"detail", "code"}
    assert payload["code"] == "parse_error"


@pytest.mark.urls(__name__)
def test_validation_errors_are_flattened_to_dotted_paths(api_client):
    body = {
        "customer": {"email": "not-an-email"},
        "payload": {
            "name": "Rover",
            "dimensions_mm": [100, 100],
            "hazards": [{"type": "lithium_battery", "energy_wh": 0}, {"type": "other"}],
        },
    }

    response = api_client.post("/echo/", body, format="json")

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert payload["detail"]
    assert set(payload["fields"]) == {
        "customer.email",
        "payload.dimensions_mm",
        "payload.hazards.0.energy_wh",
    }
    assert all(
        isinstance(messages, list) and all(isinstance(m, str) for m in messages)
        for messages in payload["fields"].values()
    )


@pytest.mark.urls(__name__)
def test_nested_serializer_error_is_reported_at_its_field(api_client):
    body = {
        "customer": {"email": "a@example.com"},
        "payload": {"name": "refused", "dimensions_mm": [1, 2, 3]},
    }

    response = api_client.post("/echo/", body, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == {"payload": ["This payload is refused as a whole."]}


@pytest.mark.urls(__name__)
def test_top_level_validation_error_becomes_the_detail_without_fields(api_client):
    body = {"customer": {"email": "a@refused.example"}}

    response = api_client.post("/echo/", body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "We cannot take bookings for this customer.",
        "code": "invalid",
    }


@pytest.mark.urls(__name__)
def test_body_that_is_not_an_object_is_400_invalid(api_client):
    response = api_client.post("/echo/", [1, 2], format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.urls(__name__)
def test_api_error_carries_its_code_and_extra_fields(api_client):
    response = api_client.get("/raise/api_error/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Not enough capacity.",
        "code": "insufficient_capacity",
        "available_g": 1200,
    }


@pytest.mark.urls(__name__)
def test_django_validation_error_is_a_400_invalid_not_a_500(api_client):
    response = api_client.get("/raise/django_validation/")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Not today.",
        "code": "invalid",
        "fields": {"mass_g": ["Too heavy."]},
    }


@pytest.mark.urls(__name__)
def test_http404_is_404_not_found(api_client):
    response = api_client.get("/raise/http404/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


@pytest.mark.urls(__name__)
def test_throttled_with_unknown_wait_still_sends_retry_after(api_client):
    response = api_client.get("/raise/throttled_without_wait/")

    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["code"] == "throttled"


@pytest.mark.urls(__name__)
def test_unsupported_media_type_and_method_have_codes(api_client):
    form = api_client.post("/echo/", {"customer": "x"})  # multipart: only JSON is parsed
    method = api_client.delete("/echo/")

    assert (form.status_code, form.json()["code"]) == (415, "unsupported_media_type")
    assert (method.status_code, method.json()["code"]) == (405, "method_not_allowed")
