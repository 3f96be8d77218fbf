"""Bearer API-key authentication for the reseller API."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.models import ApiKey, Organisation
from accounts.services import InvalidApiKey, api_key_authenticate


class ApiClient:
    """``request.user`` for a keyed request: the reseller organisation behind the key."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.organisation: Organisation = api_key.organisation
        self.pk = None

    def __str__(self) -> str:
        return f"api:{self.api_key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = get_authorization_header(request)
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != self.keyword:
            raise exceptions.AuthenticationFailed(
                _("Send the API key as 'Authorization: Bearer <key>'.")
            )
        try:
            raw_key = parts[1].decode("ascii")
            api_key = api_key_authenticate(raw_key)
        except (UnicodeDecodeError, InvalidApiKey) as exc:
            raise exceptions.AuthenticationFailed(
                _("The API key is malformed, unknown or revoked.")
            ) from exc
        return ApiClient(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="moonslot"'
