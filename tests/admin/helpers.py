"""Test helpers for the back office: staff users in each role, a second factor computed the
way an authenticator app does (RFC 6238, written here independently of allauth), an admin
client that has completed it through allauth's own page, and bookings bulk-created with the
slot class's counters kept consistent."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import secrets
import struct
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.contrib.auth.models import Group
from django.db.models import F
from django.test import Client
from django.utils import timezone

from accounts.models import Organisation, User
from accounts.roles import Role
from bookings.models import (
    Booking,
    BookingStatus,
    PayloadDeclaration,
    Payment,
    PaymentStatus,
    ReviewStatus,
)
from bookings.services import new_reference
from marketplace.models import Channel, SlotClass
from tests.factories import UserFactory

# A fixed secret for test staff (base32, 20 bytes); each test's staff get their own user.
TEST_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
PASSWORD = "correct-horse-battery"


def totp_code(secret: str, *, at: float | None = None, period: int = 30, digits: int = 6) -> str:
    """RFC 6238 TOTP (HMAC-SHA1), as an authenticator app computes it."""
    counter = int((time.time() if at is None else at) // period)
    key = base64.b32decode(secret, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def post_totp(client: Client, url: str, secret: str) -> Any:
    """POST the current code for ``secret`` to ``url``. A code computed in the last instant of
    its 30-second step can reach the server in the next one and be refused (allauth allows
    no drift): only then, once, send the new step's code."""
    for _attempt in range(2):
        step = int(time.time() // 30)
        response = client.post(url, {"code": totp_code(secret)})
        if response.status_code != 200 or int(time.time() // 30) == step:
            break
    return response


def read_streamed_csv(response: Any) -> list[dict[str, str]]:
    """The rows of a streamed CSV download (which starts with a byte-order mark)."""
    assert response.streaming
    chunks = cast(Iterator[bytes], response.streaming_content)
    return list(csv.DictReader(io.StringIO(b"".join(chunks).decode("utf-8-sig"))))


def staff_user(*, role: Role | None = None, superuser: bool = False, **fields: Any) -> User:
    """An active staff member with a verified address (allauth's login needs one), in
    ``role``'s group when given."""
    user = UserFactory.create(is_staff=True, is_superuser=superuser, **fields)
    EmailAddress.objects.get_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )
    if role is not None:
        user.groups.add(Group.objects.get(name=role.group_name))
    return user


def may(user: User, *perms: str) -> list[bool]:
    """Whether ``user`` has each permission, read afresh (permission caches are per
    instance)."""
    fresh = User.objects.get(pk=user.pk)
    return [fresh.has_perm(p) for p in perms]


def record_payment(booking: Booking, amount: int, *, attempt: int = 1, **fields: Any) -> Payment:
    """A payment row as the payment services leave it once money has come in (succeeded,
    by bank transfer unless ``provider`` says otherwise), for pages that only read money."""
    return Payment.objects.create(
        booking=booking,
        provider=fields.pop("provider", "bank_transfer"),
        attempt=attempt,
        amount=amount,
        currency=booking.currency,
        status=fields.pop("status", PaymentStatus.SUCCEEDED),
        succeeded_at=fields.pop("succeeded_at", timezone.now()),
        idempotency_key=f"test-{booking.pk}-{attempt}",
        **fields,
    )


def give_totp(user: User, secret: str = TEST_TOTP_SECRET) -> Authenticator:
    """Activate TOTP for ``user`` as allauth stores it (the default adapter keeps the secret
    as given)."""
    authenticator, _ = Authenticator.objects.get_or_create(
        user=user, type=Authenticator.Type.TOTP, defaults={"data": {"secret": secret}}
    )
    return authenticator


def complete_second_factor(client: Client, user: User, *, next_url: str = "/admin/") -> Any:
    """Prove the second factor for a signed-in ``client`` through allauth's
    reauthentication page, as a staff member who signed in before enabling TOTP would.

    Each call gives the user a fresh secret: allauth refuses a code already used in its
    30-second window, and a test may sign the same person in twice."""
    secret = base64.b32encode(secrets.token_bytes(20)).decode()
    Authenticator.objects.update_or_create(
        user=user, type=Authenticator.Type.TOTP, defaults={"data": {"secret": secret}}
    )
    return client.post(
        f"/accounts/2fa/reauthenticate/?next={next_url}", {"code": totp_code(secret)}
    )


def admin_client_with_mfa(user: User) -> Client:
    """A client signed in as ``user`` whose session has passed the second factor, for tests
    of admin pages that are not about signing in. (Tests of the sign-in itself go through the
    login form: see test_mfa.py.)"""
    client = Client()
    client.force_login(user)
    response = complete_second_factor(client, user)
    assert response.status_code == 302, (
        f"the second factor was refused: {response.status_code} "
        f"{response.get('Location', '')} {response.content[:500]!r}"
    )
    return client


def bulk_bookings(
    slot_class: SlotClass,
    organisation: Organisation,
    count: int,
    *,
    status: str = BookingStatus.HELD,
    mass_g: int | None = None,
    currency: str = "JPY",
    price_amount: int = 1_000_000,
    channel: str = Channel.ADMIN,
    hold_expires_at: datetime | None = None,
    on_account: bool = False,
    review_status: str = ReviewStatus.DECLARED,
    **fields: Any,
) -> list[Booking]:
    """``count`` bookings in one INSERT (and their payload rows in another), adding what
    they take to the class's counters as the services would: held (live or lapsed) and
    confirmed bookings count, cancelled and expired ones do not."""
    now = timezone.now()
    mass_g = mass_g or slot_class.min_mass_g
    quantity = mass_g // (slot_class.unit_mass_g or 1) if slot_class.is_per_unit else None
    if status == BookingStatus.HELD and hold_expires_at is None:
        hold_expires_at = now + timedelta(days=7)
    times: dict[str, Any] = {}
    if status == BookingStatus.CONFIRMED:
        times["confirmed_at"] = now
    elif status == BookingStatus.CANCELLED:
        times["cancelled_at"] = now
    elif status == BookingStatus.EXPIRED:
        times["expired_at"] = now
    existing = set(Booking.objects.values_list("reference", flat=True))
    references: set[str] = set()
    while len(references) < count:
        reference = new_reference()
        if reference not in existing:
            references.add(reference)
    bookings = Booking.objects.bulk_create(
        [
            Booking(
                reference=reference,
                organisation=organisation,
                channel=channel,
                slot_class=slot_class,
                mass_g=mass_g,
                quantity=quantity,
                currency=currency,
                price_amount=price_amount,
                status=status,
                hold_expires_at=hold_expires_at,
                on_account=on_account,
                created_at=now,
                **times,
                **fields,
            )
            for reference in sorted(references)
        ]
    )
    PayloadDeclaration.objects.bulk_create(
        [
            PayloadDeclaration(
                booking=b, name=f"Payload {b.reference}", review_status=review_status
            )
            for b in bookings
        ]
    )
    if status in (BookingStatus.HELD, BookingStatus.CONFIRMED):
        SlotClass.objects.filter(pk=slot_class.pk).update(
            taken_g=F("taken_g") + mass_g * count,
            taken_units=F("taken_units") + (quantity or 0) * count,
        )
        slot_class.refresh_from_db(fields=["taken_g", "taken_units"])
    return bookings
