"""What happens when a person signs up through allauth: their own organisation is created
(every booking belongs to one) and the language they signed up in becomes the language of
their e-mails."""

from __future__ import annotations

from typing import Any

from allauth.account.signals import user_signed_up
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import translation

from accounts.models import User
from accounts.services import personal_organisation_create


def supported_language(code: str | None) -> str:
    """One of ``settings.LANGUAGES``' codes for ``code`` ("ja-JP" → "ja"), else the default."""
    try:
        return translation.get_supported_language_variant(code or settings.LANGUAGE_CODE)
    except LookupError:
        return settings.LANGUAGE_CODE


def on_user_signed_up(
    sender: Any, *, request: HttpRequest | None, user: User, **kwargs: Any
) -> None:
    # The sign-up page ran in the visitor's language (LocaleMiddleware activated it), so
    # that is the language they read: booking e-mails follow it.
    with transaction.atomic():
        user.preferred_language = supported_language(translation.get_language())
        user.save(update_fields=["preferred_language"])
        personal_organisation_create(user=user)


def connect() -> None:
    user_signed_up.connect(on_user_signed_up, dispatch_uid="accounts.on_user_signed_up")
