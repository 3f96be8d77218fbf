"""API conventions shared by every endpoint (see shared/API.md): the error body
``{"detail", "code", "fields"}``, pagination and throttles.

How an endpoint uses them:

- Raise ``ApiError(status_code=409, code="insufficient_capacity", detail=…,
  extra={"available_g": …})`` for a domain refusal; ``extra`` keys are added to the body.
  Raise DRF's ``ValidationError`` (or let a serializer raise it) for 400 ``invalid``: nested
  errors become ``fields`` with dotted paths (``payload.hazards.0.energy_wh``). Django's own
  ``ValidationError`` (from ``full_clean``) is turned into the same 400.
- List views get ``Pagination`` from settings: ``{"count", "next", "previous", "results"}``,
  ``page_size`` capped at 100, a page past the end is 404 ``not_found``.
- Query parameters: declare them on a ``serializers.Serializer`` (``choice_filter`` for a
  choice set), read them with ``validated_query(QuerySerializer, request)`` and document them
  with ``extend_schema(parameters=[QuerySerializer])``: an unknown value is a 400 naming it.
- Throttles come from settings (per IP for anonymous requests, per key for keyed ones); their
  rates are read when a request arrives, so ``override_settings(REST_FRAMEWORK=…)`` changes
  them in tests.
- The OpenAPI side of these conventions (the ``Error`` component, the 401/429 responses added
  to every operation) lives in ``config.schema``.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle

from accounts.authentication import ApiClient


class Pagination(PageNumberPagination):
    """``?page=`` and ``?page_size=`` (default 20, anything above 100 is read as 100). Both
    are whole numbers of at least 1 when given: anything else (an empty value included) is a
    400 naming the parameter, not silently the default."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        check_page_parameters(request)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        # The contract says absent values are null, never left out: all four keys always come.
        return {
            "type": "object",
            "required": ["count", "next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "minimum": 0, "example": 42},
                "next": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "The next page's URL, or null on the last page.",
                },
                "previous": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "The previous page's URL, or null on the first page.",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "Page number, from 1. A page past the end is 404 not_found.",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": (
                    f"Results per page (default {self.page_size}; anything above "
                    f"{self.max_page_size} is treated as {self.max_page_size})."
                ),
                "schema": {"type": "integer", "minimum": 1},
            },
        ]


def check_page_parameters(request: Request) -> None:
    """Raise a 400 ``invalid`` naming ``page``/``page_size`` unless each given value is a
    whole number of at least 1."""
    errors: dict[str, list[str]] = {}
    for name in ("page", "page_size"):
        for value in request.query_params.getlist(name):
            if not (value.isascii() and value.isdigit() and int(value) >= 1):
                errors[name] = [_("Give a whole number of at least 1.")]
    if errors:
        raise exceptions.ValidationError(errors)


def choice_filter(choices: type[models.Choices], *, help_text: str) -> serializers.ChoiceField:
    """An optional ``?name=`` filter over a choice set, for a query serializer: an unknown value
    is 400 ``invalid`` with a field message that lists the known values."""
    known = ", ".join(str(value) for value in choices.values)
    return serializers.ChoiceField(
        choices=choices.choices,
        required=False,
        # An empty value means no filter (validated_query drops it); documented as such.
        allow_blank=True,
        help_text=help_text,
        error_messages={"invalid_choice": f"Unknown value {{input!r}}; use one of {known}."},
    )


def validated_query(
    serializer_class: type[serializers.Serializer[Any]], request: Request
) -> dict[str, Any]:
    """The request's query parameters validated by ``serializer_class`` (which, passed to
    ``extend_schema(parameters=[…])``, also documents them). An empty value (``?status=``, a
    form with nothing picked) counts as absent. Raises ``ValidationError``: a 400 ``invalid``
    naming the parameter."""
    params = {key: value for key, value in request.query_params.items() if value != ""}
    query = serializer_class(data=params)
    query.is_valid(raise_exception=True)
    validated: dict[str, Any] = query.validated_data
    return validated


class _RatesFromCurrentSettings:
    """DRF copies ``DEFAULT_THROTTLE_RATES`` into a class attribute at import time, so a
    changed setting (``override_settings`` in a test, a reloaded config) would be ignored.
    Reading it per request costs one dict lookup."""

    scope: str

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No default throttle rate set for {self.scope!r} scope")
        rate = rates[self.scope]
        return None if rate is None else str(rate)


class _WindowCounter(SimpleRateThrottle):
    """A sliding-window counter: one integer per fixed window in the cache, the current
    window's count plus the previous one's weighted by how much of it still overlaps the
    last ``duration`` seconds. Two cache round trips whatever the rate (a ``get_many`` and,
    for an allowed request, an ``incr``), instead of DRF's list of every request's time,
    which is read, trimmed, pickled and written back on every request (1,200 floats for
    1200/min); with Redis (``config.cache.RedisCache.window_hit``) one, a script that checks
    and counts atomically, so concurrent requests cannot overshoot the rate either. Refused
    requests are not counted."""

    num_requests: int
    duration: int
    now: float
    current: int
    previous: int

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        current_key, previous_key = f"{self.key}:{window}", f"{self.key}:{window - 1}"
        window_hit = getattr(self.cache, "window_hit", None)
        if window_hit is not None:
            # Redis (config.cache): the same check and count in one atomic round trip.
            allowed, self.current, self.previous = window_hit(
                current_key,
                previous_key,
                limit=self.num_requests,
                weight=1 - (self.now % self.duration) / self.duration,
                timeout=2 * self.duration,
            )
            return True if allowed else self.throttle_failure()
        counts = self.cache.get_many([current_key, previous_key])
        self.current = int(counts.get(current_key, 0))
        self.previous = int(counts.get(previous_key, 0))
        if self._estimate(self.now) + 1 > self.num_requests:
            return self.throttle_failure()
        _increment(self.cache, current_key, timeout=2 * self.duration)
        return True

    def _estimate(self, at: float) -> float:
        elapsed = (at % self.duration) / self.duration
        return self.current + self.previous * (1 - elapsed)

    def wait(self) -> float | None:
        window_end = (self.now // self.duration + 1) * self.duration
        if self.current + 1 > self.num_requests:
            # The next window starts with this one's count as its weighted past.
            needed = 1 - (self.num_requests - 1) / self.current
            return window_end - self.now + max(0.0, needed) * self.duration
        # The previous window's share must fade until one more request fits.
        needed = 1 - (self.num_requests - 1 - self.current) / self.previous
        elapsed = (self.now % self.duration) / self.duration
        return max(0.0, needed - elapsed) * self.duration


def _increment(cache: Any, key: str, *, timeout: int) -> int:
    """Add one to the counter at ``key`` (created with ``timeout``) and return it."""
    try:
        return int(cache.incr(key))
    except ValueError:  # the window's first request
        if cache.add(key, 1, timeout=timeout):
            return 1
        return int(cache.incr(key))


class AnonymousIpThrottle(_RatesFromCurrentSettings, _WindowCounter, AnonRateThrottle):
    """Per client IP, for requests without an API key."""

    scope = "anon"


class ApiKeyThrottle(_RatesFromCurrentSettings, _WindowCounter):
    """Per key, so one busy reseller cannot starve the others."""

    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = request.user
        if isinstance(user, ApiClient):
            return self.cache_format % {"scope": self.scope, "ident": user.api_key.pk}
        return None


class ApiError(exceptions.APIException):
    """A domain error with its contract code and any extra body fields.

    ``raise ApiError(status_code=409, code="sales_closed", detail=_("…"))``. Keys of ``extra``
    (e.g. ``available_g``) are added to the body beside ``detail`` and ``code``; declare them in
    ``config.schema.ERROR_SCHEMA`` when you add a new one.
    """

    def __init__(
        self, *, status_code: int, code: str, detail: str, extra: dict[str, Any] | None = None
    ) -> None:
        self.status_code = status_code
        self.extra = extra or {}
        super().__init__(detail=detail, code=code)


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure as ``{"dotted.path": ["message", …]}``.

    ``{"payload": {"hazards": [{}, {"energy_wh": ["…"]}]}}`` becomes
    ``{"payload.hazards.1.energy_wh": ["…"]}``. A nested serializer's own (non-field) errors
    are reported at the nested field's path (``payload``), top-level ones under
    ``non_field_errors``, which the exception handler turns into the ``detail`` sentence.
    """
    flat: dict[str, list[str]] = {}
    non_field_key = api_settings.NON_FIELD_ERRORS_KEY
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key == non_field_key and prefix:
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for sub_path, messages in flatten_errors(value, path).items():
                flat.setdefault(sub_path, []).extend(messages)
    elif isinstance(errors, list):
        if all(not isinstance(item, dict | list) for item in errors):
            if errors:
                flat[prefix or non_field_key] = [str(item) for item in errors]
        else:
            for index, item in enumerate(errors):
                if not item:
                    continue  # ListSerializer puts {} for the items that were valid
                path = f"{prefix}.{index}" if prefix else str(index)
                for sub_path, messages in flatten_errors(item, path).items():
                    flat.setdefault(sub_path, []).extend(messages)
    else:
        flat[prefix or non_field_key] = [str(errors)]
    return flat


_CODES_BY_CLASS: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ParseError, "parse_error"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.NotFound, "not_found"),
    (exceptions.Throttled, "throttled"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.PermissionDenied, "permission_denied"),
]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error as ``{"detail", "code"[, "fields"][, extra…]}`` (settings'
    ``EXCEPTION_HANDLER``). Anything not an API error (a bug) is left to Django: a 500."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(_("Not found."))
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        # A model's full_clean() in a service: the same 400 as a serializer's refusal.
        errors = as_serializer_error(exc)
        if NON_FIELD_ERRORS in errors:
            errors[api_settings.NON_FIELD_ERRORS_KEY] = errors.pop(NON_FIELD_ERRORS)
        exc = exceptions.ValidationError(detail=errors)
    # Imported here: rest_framework.views reads DEFAULT_THROTTLE_CLASSES (this module) while
    # it loads, so a top-level import fails whenever this module is imported first.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response

    body: dict[str, Any]
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        general = fields.pop(api_settings.NON_FIELD_ERRORS_KEY, [])
        detail = " ".join(general) if general else _("Some fields are invalid; see fields.")
        body = {"detail": detail, "code": "invalid", "fields": fields}
        if not fields:
            body.pop("fields")
        response.status_code = status.HTTP_400_BAD_REQUEST
    else:
        code = next((c for cls, c in _CODES_BY_CLASS if isinstance(exc, cls)), None)
        if code is None:
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) else "error"
        body = {"detail": str(exc.detail), "code": code}
        if isinstance(exc, ApiError):
            body.update(exc.extra)
        if isinstance(exc, exceptions.Throttled) and "Retry-After" not in response:
            # DRF leaves the header out when the wait is unknown or rounds to zero; the
            # contract promises it on every 429.
            response["Retry-After"] = str(max(1, math.ceil(getattr(exc, "wait", None) or 0)))
    response.data = body
    return response
