"""The OpenAPI document: valid OpenAPI 3, agreeing with shared/API.md, strict enough to
generate clients from, and matched by what the endpoints really send."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from openapi_spec_validator import validate as validate_spec

from accounts.models import Organisation
from accounts.services import api_key_issue
from marketplace.models import Mission, MissionStatus, ScheduleChange
from tests.factories import MissionFactory, ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema, openapi_document

pytestmark = pytest.mark.django_db

LIST = "/api/v1/missions/"
DETAIL = "/api/v1/missions/{code}/"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def schemas() -> dict[str, Any]:
    components: dict[str, Any] = openapi_document()["components"]["schemas"]
    return components


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def enum_of(schema: dict[str, Any]) -> list[str]:
    """The enum a property refers to (directly, through $ref, or an allOf of one $ref)."""
    if "allOf" in schema:
        (schema,) = schema["allOf"]
    if "$ref" in schema:
        schema = schemas()[schema["$ref"].rsplit("/", 1)[1]]
    enum: list[str] = schema["enum"]
    return enum


# --- the document itself -------------------------------------------------------------------


def test_document_is_valid_openapi_3():
    document = openapi_document()

    validate_spec(document)  # raises on any violation
    assert document["openapi"].startswith("3.")


def test_generation_has_no_warnings_or_errors(tmp_path: Path):
    # What CI's `manage.py spectacular --validate --fail-on-warn` checks, in the suite.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )

    assert (tmp_path / "schema.yaml").stat().st_size > 0


def test_missions_paths_are_documented_for_get_only():
    paths = openapi_document()["paths"]

    assert set(paths[LIST]) & HTTP_METHODS == {"get"}
    assert set(paths[DETAIL]) & HTTP_METHODS == {"get"}


def test_bearer_scheme_is_declared_and_optional_on_missions():
    document = openapi_document()

    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    for path in (LIST, DETAIL):
        assert document["paths"][path]["get"]["security"] == [{}, {"bearer": []}]


def test_every_operation_documents_401_and_429_with_their_headers():
    for path, method, operation in operations():
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert "WWW-Authenticate" in responses["401"]["headers"], where
        assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer", where
        for status in ("401", "429"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, where


def test_error_component_is_the_contract_body():
    error = schemas()["Error"]

    assert error["required"] == ["detail", "code"]
    assert error["properties"]["detail"]["type"] == "string"
    assert error["properties"]["code"]["type"] == "string"
    assert error["properties"]["fields"] == {
        **error["properties"]["fields"],
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    }
    assert error["properties"]["available_g"]["type"] == "integer"
    assert error["properties"]["available_units"]["type"] == "integer"


def test_missions_document_their_error_responses():
    paths = openapi_document()["paths"]
    list_responses = paths[LIST]["get"]["responses"]
    detail_responses = paths[DETAIL]["get"]["responses"]

    assert set(list_responses) == {"200", "400", "401", "404", "429"}
    assert set(detail_responses) == {"200", "401", "404", "429"}
    for responses in (list_responses, detail_responses):
        for status, response in responses.items():
            if status != "200":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}


def test_list_parameters_are_status_page_and_page_size():
    parameters = {p["name"]: p for p in openapi_document()["paths"][LIST]["get"]["parameters"]}

    assert set(parameters) == {"status", "page", "page_size"}
    # An empty ?status= means no filter, and the document says so.
    assert parameters["status"]["schema"]["enum"] == [*MissionStatus.values, ""]
    assert parameters["page"]["schema"]["type"] == "integer"
    assert parameters["page_size"]["schema"]["type"] == "integer"


def test_enums_are_those_of_the_contract():
    mission = schemas()["Mission"]["properties"]
    slot_class = schemas()["SlotClass"]["properties"]
    money = schemas()["Money"]["properties"]

    assert enum_of(mission["status"]) == [
        "planned",
        "on_sale",
        "sales_closed",
        "integration",
        "launched",
        "landed",
        "completed",
        "failed",
    ]
    assert enum_of(slot_class["destination"]) == ["lunar_surface", "lunar_orbit"]
    assert enum_of(slot_class["pricing"]) == ["per_kg", "per_unit"]
    assert enum_of(slot_class["channels"]["items"]) == ["web", "api", "admin"]
    assert enum_of(money["currency"]) == ["JPY", "USD"]


def test_response_components_require_every_property():
    for name in ("Mission", "SlotClass", "ScheduleChange", "Money", "PaginatedMissionList"):
        component = schemas()[name]
        assert set(component["required"]) == set(component["properties"]), name


def test_types_nullability_and_money_width():
    mission = schemas()["Mission"]["properties"]
    slot_class = schemas()["SlotClass"]["properties"]
    money = schemas()["Money"]["properties"]

    assert money["amount"] == {**money["amount"], "type": "integer", "format": "int64"}
    assert mission["landing_site"]["nullable"] is True
    for key in ("unit_mass_g", "capacity_units", "available_units", "min_quantity", "max_quantity"):
        assert slot_class[key]["type"] == "integer", key
        assert slot_class[key]["nullable"] is True, key
    for key in ("id", "capacity_g", "available_g", "min_mass_g", "max_mass_g", "mass_step_g"):
        assert slot_class[key]["type"] == "integer", key
        assert not slot_class[key].get("nullable"), key
    assert slot_class["max_dimensions_mm"]["items"]["type"] == "integer"
    assert slot_class["max_dimensions_mm"]["minItems"] == 3
    assert slot_class["max_dimensions_mm"]["maxItems"] == 3
    for key in ("launch_window_start", "launch_window_end", "booking_cutoff"):
        assert mission[key]["format"] == "date-time", key
    page = schemas()["PaginatedMissionList"]["properties"]
    assert page["next"]["nullable"] is True
    assert page["previous"]["nullable"] is True
    assert page["count"]["type"] == "integer"


# --- real responses against the document ---------------------------------------------------


@pytest.fixture
def catalogue() -> None:
    mission = cast(Mission, MissionFactory(code="M3", landing_site=None))
    SlotClassFactory(mission=mission, prices={"JPY": 5_000_000_000, "USD": 3_400_000_000})
    SlotClassFactory.per_unit(mission=mission, sold_on_admin=False, name_ja="")
    now = timezone.now()
    ScheduleChange.objects.create(
        mission=mission,
        old_window_start=mission.launch_window_start - timedelta(days=365),
        old_window_end=mission.launch_window_end - timedelta(days=365),
        new_window_start=mission.launch_window_start,
        new_window_end=mission.launch_window_end,
        reason="Lander integration slipped a year.",
        announced_at=now,
    )
    MissionFactory(code="M4", status=MissionStatus.COMPLETED)


def test_list_and_detail_bodies_match_the_document(api_client, catalogue):
    page = assert_matches_schema(api_client.get(LIST), LIST, "get", 200)
    paged = assert_matches_schema(api_client.get(LIST, {"page_size": 1}), LIST, "get", 200)
    finished = assert_matches_schema(
        api_client.get(LIST, {"status": "completed"}), LIST, "get", 200
    )
    detail = assert_matches_schema(api_client.get("/api/v1/missions/M3/"), DETAIL, "get", 200)

    assert page["count"] == 1
    assert paged["next"] is None
    assert [item["code"] for item in finished["results"]] == ["M4"]
    assert len(detail["slot_classes"]) == 2


def test_error_bodies_match_the_document(api_client, catalogue):
    assert_matches_schema(api_client.get(LIST, {"status": "nope"}), LIST, "get", 400)
    assert_matches_schema(api_client.get(LIST, {"page": 9}), LIST, "get", 404)
    assert_matches_schema(api_client.get("/api/v1/missions/NOPE/"), DETAIL, "get", 404)

    api_client.credentials(HTTP_AUTHORIZATION="Bearer nope")
    assert_matches_schema(api_client.get(LIST), LIST, "get", 401)
    assert_matches_schema(api_client.get("/api/v1/missions/M3/"), DETAIL, "get", 401)


def test_throttled_body_matches_the_document(api_client, catalogue):
    rates = {"anon": "1/min", "api_key": "1/min"}
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        api_client.get(LIST)
        assert_matches_schema(api_client.get(LIST), LIST, "get", 429)
        assert_matches_schema(api_client.get("/api/v1/missions/M3/"), DETAIL, "get", 429)


def test_keyed_response_matches_the_document(api_client, catalogue):
    reseller = cast(Organisation, ResellerFactory())
    raw_key = api_key_issue(organisation=reseller).raw_key
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    assert_matches_schema(api_client.get(LIST), LIST, "get", 200)


def test_schema_check_catches_an_undocumented_key(api_client, catalogue):
    """The helper must fail on a body the document does not describe, or it proves nothing."""
    response = api_client.get("/api/v1/missions/M3/")
    body = response.json()
    body["slot_classes"][0]["surprise"] = 1
    response.content = json.dumps(body).encode()

    with pytest.raises(AssertionError, match="surprise"):
        assert_matches_schema(response, DETAIL, "get", 200)


def test_schema_check_catches_a_wrong_type_and_a_missing_key(api_client, catalogue):
    response = api_client.get("/api/v1/missions/M3/")
    body = response.json()
    body["slot_classes"][0]["available_g"] = "12"
    del body["slot_classes"][1]["unit_mass_g"]
    response.content = json.dumps(body).encode()

    with pytest.raises(AssertionError) as failure:
        assert_matches_schema(response, DETAIL, "get", 200)
    assert "available_g" in str(failure.value)
    assert "unit_mass_g" in str(failure.value)


# --- serving the document ------------------------------------------------------------------


def test_schema_is_json_when_the_client_accepts_json(api_client):
    response = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content) == openapi_document()


def test_schema_is_json_with_format_json(api_client):
    response = api_client.get("/api/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_schema_defaults_to_yaml(api_client):
    response = api_client.get("/api/v1/schema/")

    assert response.status_code == 200
    assert yaml.safe_load(response.content)["paths"].keys() == openapi_document()["paths"].keys()


def test_docs_page_answers_with_html(api_client):
    response = api_client.get("/api/v1/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    # Swagger UI's start-up script is served beside the page and names the schema.
    assert b'<script src="/api/v1/docs/?script="></script>' in response.content
    assert b"/api/v1/schema/" in api_client.get("/api/v1/docs/?script=").content
