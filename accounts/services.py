"""Writes for accounts: organisations and reseller API keys."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import (
    ApiKey,
    MemberRole,
    Membership,
    Organisation,
    OrganisationKind,
    User,
)
from config.db import CompiledGet

API_KEY_PATTERN = re.compile(r"^msk_(?P<prefix>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


@transaction.atomic
def reseller_get_or_create(*, name: str) -> tuple[Organisation, bool]:
    """The reseller called ``name``; created with no credit limit and no hold cap (sales set
    them later). Raises ``ValueError`` if an organisation of another kind has the name."""
    name = name.strip()
    if not name:
        raise ValueError("A reseller needs a name.")
    organisation, created = Organisation.objects.get_or_create(
        name=name, defaults={"kind": OrganisationKind.RESELLER}
    )
    if not organisation.is_reseller:
        raise ValueError(f"{name!r} exists but is not a reseller.")
    return organisation, created


def api_key_issue(
    *, organisation: Organisation, name: str = "", created_by: User | None = None
) -> IssuedKey:
    """Create a key for a reseller. The raw key is returned once and never stored."""
    if not organisation.is_reseller:
        raise ValueError("API keys are issued to resellers only.")
    while True:
        prefix = secrets.token_hex(6)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    raw_key = f"msk_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        organisation=organisation,
        name=name,
        prefix=prefix,
        digest=api_key_digest(raw_key),
        created_by=created_by,
    )
    return IssuedKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key; revoking a revoked key changes nothing."""
    if api_key.revoked_at is None:
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


class InvalidApiKey(Exception):
    pass


# Every API request reads its key with its organisation: compiled once, not per request.
_API_KEY_BY_PREFIX: CompiledGet[ApiKey] = CompiledGet(
    lambda: ApiKey.objects.select_related("organisation"), "prefix", "example"
)


def api_key_authenticate(raw_key: str) -> ApiKey:
    """The active key for ``raw_key`` (one indexed read, constant-time digest comparison),
    touching ``last_used_at`` at most once a minute. Raises ``InvalidApiKey``."""
    match = API_KEY_PATTERN.match(raw_key)
    if match is None:
        raise InvalidApiKey("malformed")
    try:
        api_key = _API_KEY_BY_PREFIX.get(match["prefix"])
    except ApiKey.DoesNotExist:
        api_key = None
    if api_key is None or not hmac.compare_digest(api_key.digest, api_key_digest(raw_key)):
        raise InvalidApiKey("unknown")
    if api_key.revoked_at is not None:
        raise InvalidApiKey("revoked")
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional, so a burst of requests writes the row once, not once each.
        from django.db.models import Q

        ApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


@transaction.atomic
def personal_organisation_create(*, user: User) -> Organisation:
    """The person's own organisation, created at sign-up (idempotent per user)."""
    existing = Organisation.objects.filter(
        kind=OrganisationKind.PERSONAL, memberships__user=user
    ).first()
    if existing:
        return existing
    base = f"{user.email} (personal)"
    name = base
    suffix = 1
    while Organisation.objects.filter(name=name).exists():
        suffix += 1
        name = f"{base} {suffix}"
    organisation = Organisation.objects.create(
        name=name, kind=OrganisationKind.PERSONAL, notification_email=user.email
    )
    Membership.objects.create(user=user, organisation=organisation, role=MemberRole.OWNER)
    return organisation
