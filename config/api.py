"""API conventions shared by every endpoint (see shared/API.md): the error body
``{"detail", "code", "fields"}``, pagination and throttles."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.authentication import ApiClient


class Pagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class AnonymousIpThrottle(AnonRateThrottle):
    scope = "anon"


class ApiKeyThrottle(SimpleRateThrottle):
    """Per key, so one busy reseller cannot starve the others."""

    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = request.user
        if isinstance(user, ApiClient):
            return self.cache_format % {"scope": self.scope, "ident": user.api_key.pk}
        return None


class ApiError(exceptions.APIException):
    """A domain error with its contract code and any extra body fields."""

    def __init__(
        self, *, status_code: int, code: str, detail: str, extra: dict[str, Any] | None = None
    ) -> None:
        self.status_code = status_code
        self.extra = extra or {}
        super().__init__(detail=detail, code=code)


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure as ``{"dotted.path": ["message", …]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            for sub_path, messages in flatten_errors(value, path).items():
                flat.setdefault(sub_path, []).extend(messages)
    elif isinstance(errors, list):
        if all(not isinstance(item, dict | list) for item in errors):
            flat[prefix or "non_field_errors"] = [str(item) for item in errors]
        else:
            for index, item in enumerate(errors):
                if not item:
                    continue
                path = f"{prefix}.{index}" if prefix else str(index)
                for sub_path, messages in flatten_errors(item, path).items():
                    flat.setdefault(sub_path, []).extend(messages)
    else:
        flat[prefix or "non_field_errors"] = [str(errors)]
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
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(_("Not found."))
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response

    body: dict[str, Any]
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        general = fields.pop("non_field_errors", [])
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
    response.data = body
    return response
