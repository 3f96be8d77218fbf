"""OpenAPI conventions of the reseller API (drf-spectacular), shared by every endpoint.

What is automatic (``postprocess_api_conventions``, registered in ``SPECTACULAR_SETTINGS``):

- the ``Error`` component (``ERROR_SCHEMA``: ``{"detail", "code", "fields", …}``);
- on every operation a 401 (``authentication_failed``, and ``not_authenticated`` where a key
  is required) with its ``WWW-Authenticate`` header, and a 429 ``throttled`` with
  ``Retry-After``;
- on every paginated list a 404 ``not_found`` (a page past the end) and a 400 ``invalid``
  (a ``page`` or ``page_size`` that is not a whole number of at least 1);
- the ``bearer`` security scheme, from ``ApiKeyAuthenticationScheme``; operations that
  allow anonymous calls list ``{}`` first in their ``security``.

What each view declares: its own error responses, by contract code, with ``error_responses``
(the status comes from the code; several codes sharing a status are merged into one response
whose description and examples list each code)::

    from config.schema import error_responses

    @extend_schema(
        request=BookingCreateSerializer,
        responses={
            201: BookingSerializer,
            **error_responses(
                "invalid", "parse_error", "currency_not_offered", "channel_not_allowed",
                "credit_limit_exceeded", "insufficient_capacity", "sales_closed",
            ),
        },
    )

A code missing from ``ERROR_CODES`` raises ``KeyError`` at import, so a typo cannot reach
the document. Add new contract codes to ``ERROR_CODES`` (and new extra body keys, such as
``available_g``, to ``ERROR_SCHEMA``) in the same change that starts raising them.

Money amounts in responses use ``Int64Field`` (``integer``, ``format: int64``): they pass 2³¹.
Enum component names are fixed in ``SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema_field
from rest_framework import serializers

ERROR_REF = {"$ref": "#/components/schemas/Error"}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Every error answers with this body. Clients must accept codes they do not know yet."
    ),
    "properties": {
        "detail": {"type": "string", "description": "A sentence for a person."},
        "code": {
            "type": "string",
            "description": "The machine code, e.g. invalid, not_found, insufficient_capacity.",
        },
        "fields": {
            "type": "object",
            "description": (
                "Validation errors only: messages by dotted field path "
                "(customer.email, payload.dimensions_mm, payload.hazards.0.energy_wh)."
            ),
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "available_g": {
            "type": "integer",
            "minimum": 0,
            "description": "insufficient_capacity only: the mass still free in the class.",
        },
        "available_units": {
            "type": "integer",
            "minimum": 0,
            "description": "insufficient_capacity on a per-unit class: the units still free.",
        },
    },
    "required": ["detail", "code"],
}

# code -> (status, an example body beyond "code"). The contract's list, in one place.
ERROR_CODES: dict[str, tuple[int, dict[str, Any]]] = {
    "invalid": (
        400,
        {
            "detail": "Some fields are invalid; see fields.",
            "fields": {"mass_g": ["Must be a multiple of the mass step (100 g)."]},
        },
    ),
    "parse_error": (400, {"detail": "JSON parse error - Expecting value: line 1 column 1."}),
    "currency_not_offered": (400, {"detail": "This class is not sold in that currency."}),
    "not_authenticated": (401, {"detail": "Authentication credentials were not provided."}),
    "authentication_failed": (401, {"detail": "The API key is malformed, unknown or revoked."}),
    "channel_not_allowed": (403, {"detail": "This class is not sold through the API."}),
    "credit_limit_exceeded": (403, {"detail": "Confirming this would pass your credit limit."}),
    "not_found": (404, {"detail": "Not found."}),
    "insufficient_capacity": (
        409,
        {"detail": "Not enough capacity left in this class.", "available_g": 1200},
    ),
    "sales_closed": (409, {"detail": "This mission is not on sale."}),
    "hold_limit_exceeded": (409, {"detail": "Your organisation's cap on held mass is reached."}),
    "hold_expired": (409, {"detail": "The hold has expired."}),
    # Joining a waitlist for what the class can take right now.
    "capacity_available": (
        409,
        {
            "detail": "This class has room for that request now: place a hold instead.",
            "available_g": 2000,
        },
    ),
    "invalid_state": (409, {"detail": "This booking cannot change from its current status."}),
    # Denied-party screening stopped a confirmation: the booking stays held for review.
    "screening_review": (
        409,
        {"detail": "This booking needs a compliance review before it can be confirmed."},
    ),
    "idempotency_key_reused": (
        409,
        {"detail": "This Idempotency-Key was used with a different body."},
    ),
    "idempotency_key_in_use": (
        409,
        {"detail": "A request with this Idempotency-Key is still running."},
    ),
    "throttled": (429, {"detail": "Request was throttled. Expected available in 30 seconds."}),
}

RESPONSE_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'The scheme to authenticate with: Bearer realm="moonslot".',
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def _group_by_status(codes: tuple[str, ...]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        status, _example = ERROR_CODES[code]
        if code not in grouped[status]:
            grouped[status].append(code)
    return dict(grouped)


def _description(codes: list[str]) -> str:
    return "Refused; `code` is one of: " + ", ".join(f"`{code}`" for code in codes) + "."


def _example_body(code: str) -> dict[str, Any]:
    _status, example = ERROR_CODES[code]
    return {"detail": example["detail"], "code": code} | {
        key: value for key, value in example.items() if key != "detail"
    }


def _example_name(code: str) -> str:
    # drf-spectacular camelizes the names of OpenApiExample; the hook's own follow suit.
    return "".join(part.capitalize() for part in code.split("_"))


def error_responses(*codes: str) -> dict[int, OpenApiResponse]:
    """``extend_schema(responses=…)`` entries for these contract error codes, one response per
    status, each with the ``Error`` body and an example per code."""
    return {
        status: OpenApiResponse(
            response=ERROR_REF,
            description=_description(status_codes),
            examples=[
                OpenApiExample(code, value=_example_body(code), response_only=True)
                for code in status_codes
            ],
        )
        for status, status_codes in _group_by_status(codes).items()
    }


def _error_response_object(status: int, codes: list[str]) -> dict[str, Any]:
    """The same response as ``error_responses`` builds, as a finished OpenAPI object (for the
    postprocessing hook, which runs after drf-spectacular has rendered the operations)."""
    return {
        "description": _description(codes),
        "content": {
            "application/json": {
                "schema": dict(ERROR_REF),
                "examples": {
                    _example_name(code): {"value": _example_body(code), "summary": code}
                    for code in codes
                },
            }
        },
    }


@extend_schema_field(OpenApiTypes.INT64)
class Int64Field(serializers.IntegerField):
    """An integer documented as ``format: int64``: use it for money amounts (minor units)."""


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents ``ApiKeyAuthentication`` as the ``bearer`` security scheme."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "msk_<prefix>_<secret>",
            "description": (
                "A reseller API key: `Authorization: Bearer <key>`. A key that is present but "
                "malformed, unknown or revoked is refused with 401 authentication_failed on "
                "every endpoint, public ones included."
            ),
        }


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def preprocess_api_endpoints(
    endpoints: list[tuple[str, str, str, Any]], **kwargs: Any
) -> list[tuple[str, str, str, Any]]:
    """Keep only the versioned API in the document. (Being a hook also makes drf-spectacular
    import this module, and so register ``ApiKeyAuthenticationScheme``, before it reads any
    view.)"""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]


def postprocess_api_conventions(
    result: dict[str, Any], generator: Any, **kwargs: Any
) -> dict[str, Any]:
    """Adds what every operation shares; see the module docstring."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_SCHEMA)
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method in _HTTP_METHODS:
                _add_shared_responses(operation)
    return result


def _add_shared_responses(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    security = operation.get("security", [])
    anonymous_allowed = {} in security
    if anonymous_allowed:
        # The contract's reading order: public first, a key optional.
        operation["security"] = [{}] + [item for item in security if item != {}]
    unauthorised = ["authentication_failed"]
    if security and not anonymous_allowed:
        unauthorised.insert(0, "not_authenticated")
    defaults: dict[int, list[str]] = {401: unauthorised, 429: ["throttled"]}
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "query" and p.get("name") == "page" for p in parameters):
        # A page past the end, and a page or page size that is not a whole number ≥ 1.
        defaults[404] = ["not_found"]
        defaults[400] = ["invalid"]
    for status, codes in defaults.items():
        responses.setdefault(str(status), _error_response_object(status, codes))
    for status, headers in RESPONSE_HEADERS.items():
        if str(status) in responses:
            responses[str(status)].setdefault("headers", {}).update(headers)
    operation["responses"] = dict(sorted(responses.items()))
