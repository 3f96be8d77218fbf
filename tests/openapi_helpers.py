"""Check real API responses against the generated OpenAPI document.

Use it on every response an API test gets, success and error alike::

    from tests.openapi_helpers import assert_matches_schema

    response = api_client.post("/api/v1/bookings/", body, format="json")
    booking = assert_matches_schema(response, "/api/v1/bookings/", "post", 201)

``path`` is the document's path template (``/api/v1/bookings/{reference}/``), not the URL.
The helper fails when the status is not the one expected, when the operation does not
document that status, when the body is not JSON, or when the body does not match the
documented schema. It validates strictly: every object schema is closed (a key the response
sends but the document does not declare fails), ``required``, ``nullable``, enums and formats
(``date-time``, ``int64``) are enforced. The document itself stays open for clients (extra
fields may come later); only this check is closed, so what we send is always documented.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from jsonschema import FormatChecker
from openapi_schema_validator import OAS30ReadValidator
from referencing import Registry

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

# jsonschema's own checkers (date-time via rfc3339-validator) plus OpenAPI's integer formats.
FORMAT_CHECKER = FormatChecker()


@FORMAT_CHECKER.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or _INT32[0] <= value <= _INT32[1]


@FORMAT_CHECKER.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or _INT64[0] <= value <= _INT64[1]


@cache
def openapi_document() -> dict[str, Any]:
    """The document ``/api/v1/schema/`` serves, as plain JSON data (lazy strings rendered)."""
    raw = SchemaGenerator(urlconf="config.urls").get_schema(request=None, public=True)
    rendered: dict[str, Any] = json.loads(OpenApiJsonRenderer().render(raw))
    return rendered


def _closed(schema: Any, *, in_all_of: bool = False) -> Any:
    """A copy where every object schema with ``properties`` forbids undeclared keys. Members
    of an ``allOf`` stay open: each sees only its part of the properties."""
    if isinstance(schema, list):
        return [_closed(item, in_all_of=in_all_of) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value, in_all_of=(key == "allOf")) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed and not in_all_of:
        closed["additionalProperties"] = False
    return closed


@cache
def _strict_components() -> dict[str, Any]:
    closed: dict[str, Any] = _closed(copy.deepcopy(openapi_document().get("components", {})))
    return closed


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema the document gives for this operation's response."""
    document = openapi_document()
    assert path in document["paths"], f"{path} is not in the OpenAPI document"
    operation = document["paths"][path].get(method.lower())
    assert operation is not None, f"{method.upper()} {path} is not in the OpenAPI document"
    responses = operation.get("responses", {})
    assert str(status) in responses, (
        f"{method.upper()} {path} does not document a {status} response "
        f"(documented: {sorted(responses)})"
    )
    content = responses[str(status)].get("content", {})
    assert "application/json" in content, f"{status} of {method.upper()} {path} has no JSON body"
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def assert_matches_schema(response: Any, path: str, method: str, status: int) -> Any:
    """Assert ``response`` has ``status`` and a JSON body valid under the documented schema
    (closed objects); return the parsed body."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.content[:500]!r}"
    )
    content_type = response.get("Content-Type", "")
    assert content_type.startswith("application/json"), f"not JSON: {content_type}"
    body = json.loads(response.content)
    schema = _closed(copy.deepcopy(response_schema(path, method, status)))
    # "#/components/..." references resolve against this root, as in the document.
    root = {"allOf": [schema], "components": _strict_components()}
    # An empty registry: nothing outside the document may be fetched.
    validator = OAS30ReadValidator(root, registry=Registry(), format_checker=FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
    if errors:
        details = "\n".join(
            f"- at {'.'.join(map(str, error.path)) or '(root)'}: {error.message}"
            for error in errors[:10]
        )
        raise AssertionError(
            f"{method.upper()} {path} {status} does not match the OpenAPI document:\n{details}"
        )
    return body


__all__ = [
    "FORMAT_CHECKER",
    "assert_matches_schema",
    "openapi_document",
    "response_schema",
]
