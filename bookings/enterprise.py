"""Enterprise holds: sales hold capacity for a customer company for days, and the customer
completes the hold through a link, accepting the contract terms before it can be confirmed.

The link carries ``Booking.completion_token`` (``secrets.token_urlsafe(32)``: 256 random
bits), which is the credential: whoever holds the link may read the booking's terms and accept
them. The token is stored as it is because the field holds the token itself; storing only its
SHA-256 digest would be better (a database reader could not use the links) and needs a model
change. Every comparison after the indexed lookup is constant-time.

Paying needs more than the link: the pay page is for members (owners and bookers) of the
booking's organisation. After accepting, a customer signs in (or signs up; allauth verifies
the address) with the e-mail address sales invited, and ``enterprise_customer_join`` makes
them a booker of that organisation. The link alone never pays, cancels or sees other bookings.

The services own their transactions, write a ``BookingEvent`` for each change and queue the
e-mail in the outbox in the same transaction (STYLE.md).
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.exceptions import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from accounts.models import MemberRole, Membership, Organisation, OrganisationKind, User
from bookings.exceptions import (
    BookingError,
    BookingValidationError,
    HoldExpired,
    InvalidTransition,
)
from bookings.locks import booking_qs_for_update
from bookings.models import Booking, BookingEvent, BookingStatus, OutboxMessage
from bookings.outbox import outbox_handler, outbox_write
from bookings.services import Actor, _event, booking_hold
from bookings.validation import CustomerInput, PayloadInput
from marketplace.models import Channel

logger = logging.getLogger(__name__)

HOLD_DAYS_MIN = 1
HOLD_DAYS_MAX = 30
MINUTES_PER_DAY = 24 * 60
# Version names end up in a template name (bookings/contract_<version>.html): keep them tame.
CONTRACT_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$")
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
LINK_TOPIC = "enterprise.completion_link"
LINK_LANGUAGES = ("en", "ja")

# Event types (the events feed shows them; their data never holds the token).
LINK_SENT = "booking.completion_link_sent"
CONTRACT_ACCEPTED = "booking.contract_accepted"
CUSTOMER_JOINED = "booking.customer_joined"


class CompletionLinkInvalid(BookingError):
    """No live enterprise hold has this token (unknown, or the booking has none)."""

    code = "not_found"


class ContractVersionChanged(BookingError):
    """The terms the customer read are not the ones the hold is on any more."""

    code = "invalid"


class NotInvited(BookingError):
    """The signed-in person is not the one the link was sent to."""

    code = "forbidden"


def contract_version_valid(version: str) -> bool:
    return bool(CONTRACT_VERSION_PATTERN.match(version))


def contract_template(version: str) -> str | None:
    """The template holding the text of ``version``'s terms, or None (the page then shows
    the generic terms)."""
    if not contract_version_valid(version):
        return None
    name = f"bookings/contract_{version}.html"
    try:
        get_template(name)
    except TemplateDoesNotExist:
        return None
    return name


def completion_url(token: str) -> str:
    return settings.SITE_URL.rstrip("/") + reverse("bookings:complete", args=[token])


def _queue_link(booking: Booking, event: BookingEvent, language: str) -> None:
    # The payload names the booking, never the token: the handler reads the current one.
    outbox_write(
        topic=LINK_TOPIC,
        payload={"booking_id": booking.pk, "language": language},
        dedupe_key=f"{LINK_TOPIC}:{event.pk}",
    )


def _check_live_hold(booking: Booking, now: datetime) -> None:
    status = booking.status_at(now)
    if status == BookingStatus.EXPIRED:
        raise HoldExpired(f"The hold {booking.reference} has lapsed.")
    if status != BookingStatus.HELD:
        raise InvalidTransition(
            from_status=status,
            to_status=BookingStatus.HELD,
            message=f"Booking {booking.reference} is {status}: it has no hold to complete.",
        )


# --- sales: placing the hold and sending the link ---------------------------------------


@dataclass(frozen=True)
class EnterpriseHoldRequest:
    """What sales enter on the admin page."""

    organisation: Organisation
    slot_class_id: int
    currency: str
    hold_days: int
    customer: CustomerInput
    contract_version: str
    mass_g: int | None = None
    quantity: int | None = None
    payload: PayloadInput | None = None
    language: str = "en"


def enterprise_hold_place(
    request: EnterpriseHoldRequest, *, actor: Actor, now: datetime | None = None
) -> Booking:
    """Hold capacity for a customer company for ``hold_days`` days (channel admin) and send
    its customer the completion link, in one transaction: there is never a hold without its
    link. Raises ``BookingValidationError`` for days, version or e-mail out of bounds, and
    whatever ``booking_hold`` raises. Not idempotent (each call is a new hold)."""
    errors: dict[str, list[str]] = {}
    if not HOLD_DAYS_MIN <= request.hold_days <= HOLD_DAYS_MAX:
        errors["hold_days"] = [
            str(_("A hold lasts from %(min)d to %(max)d days."))
            % {"min": HOLD_DAYS_MIN, "max": HOLD_DAYS_MAX}
        ]
    if not contract_version_valid(request.contract_version):
        errors["contract_version"] = [
            str(_("Letters, digits, dots, dashes and underscores only, up to 20 characters."))
        ]
    if not request.customer.email:
        errors["customer_email"] = [str(_("The completion link is e-mailed to the customer."))]
    if request.organisation.kind != OrganisationKind.CUSTOMER:
        errors["organisation"] = [str(_("Enterprise holds are for customer companies."))]
    if errors:
        raise BookingValidationError(errors)
    now = now or timezone.now()
    with transaction.atomic():
        booking = booking_hold(
            slot_class_id=request.slot_class_id,
            currency=request.currency,
            organisation=request.organisation,
            channel=Channel.ADMIN,
            actor=actor,
            mass_g=request.mass_g,
            quantity=request.quantity,
            payload=request.payload,
            customer=request.customer,
            hold_minutes=request.hold_days * MINUTES_PER_DAY,
            now=now,
        )
        return enterprise_hold_link_issue(
            booking_id=booking.pk,
            actor=actor,
            contract_version=request.contract_version,
            language=request.language,
            now=now,
        )


def enterprise_hold_link_issue(
    *,
    booking_id: int,
    actor: Actor,
    contract_version: str,
    language: str = "en",
    now: datetime | None = None,
) -> Booking:
    """Give a live hold its completion token and contract version, and queue the e-mail with
    the link to the booking's customer. Idempotent: a hold that has a link keeps its token
    and version and nothing is sent again (``enterprise_hold_link_resend`` does that).

    Raises ``HoldExpired`` / ``InvalidTransition`` unless the booking is a live hold,
    ``BookingValidationError`` for a malformed version or a booking without a customer
    e-mail."""
    now = now or timezone.now()
    if not contract_version_valid(contract_version):
        raise BookingValidationError({"contract_version": [str(_("Not a valid version."))]})
    with transaction.atomic():
        booking = booking_qs_for_update().get(pk=booking_id)
        if booking.completion_token:
            return booking
        _check_live_hold(booking, now)
        if not booking.customer_email:
            raise BookingValidationError(
                {"customer_email": [str(_("The booking has no customer e-mail to send to."))]}
            )
        booking.completion_token = secrets.token_urlsafe(32)
        booking.contract_version = contract_version
        booking.save(update_fields=["completion_token", "contract_version", "updated_at"])
        event = _event(
            booking,
            type=LINK_SENT,
            actor=actor,
            now=now,
            data={"contract_version": contract_version},
        )
        _queue_link(booking, event, language)
    return booking


def enterprise_hold_link_resend(
    *, booking_id: int, actor: Actor, language: str = "en", now: datetime | None = None
) -> Booking:
    """E-mail the same link again (a deliberate resend: each call sends one). Raises
    ``CompletionLinkInvalid`` for a booking without a link, ``HoldExpired`` /
    ``InvalidTransition`` unless it is a live hold."""
    now = now or timezone.now()
    with transaction.atomic():
        booking = booking_qs_for_update().get(pk=booking_id)
        if not booking.completion_token:
            raise CompletionLinkInvalid(f"Booking {booking.reference} has no completion link.")
        _check_live_hold(booking, now)
        event = _event(
            booking,
            type=LINK_SENT,
            actor=actor,
            now=now,
            data={"contract_version": booking.contract_version, "resent": True},
        )
        _queue_link(booking, event, language)
    return booking


# --- the customer: reading and accepting ---------------------------------------------------


def enterprise_booking_for_token(token: str) -> Booking | None:
    """The booking whose completion token is ``token``, with what its page shows joined in;
    None for anything else (malformed, unknown). The lookup is by the unique index; the
    constant-time comparison after it keeps a near-miss from being told apart by timing."""
    if not TOKEN_PATTERN.match(token):
        return None
    booking = (
        Booking.objects.select_related("organisation", "slot_class__mission", "payload")
        .filter(completion_token=token)
        .first()
    )
    return booking if booking is not None and _token_matches(booking, token) else None


def _token_matches(booking: Booking, token: str) -> bool:
    stored = booking.completion_token or ""
    return bool(stored) and secrets.compare_digest(stored.encode(), token.encode())


def _locked_for_token(booking_id: int, token: str) -> Booking:
    """The booking, locked, if ``token`` is its completion token."""
    booking = booking_qs_for_update().get(pk=booking_id)
    if not _token_matches(booking, token):
        raise CompletionLinkInvalid("This completion link is not valid.")
    return booking


def enterprise_contract_accept(
    *,
    booking_id: int,
    token: str,
    signer_name: str,
    signer_email: str,
    contract_version: str,
    now: datetime | None = None,
) -> Booking:
    """Record that ``signer_name`` (``signer_email``) accepted ``contract_version`` on behalf
    of the customer, at ``now``, with a ``booking.contract_accepted`` event; under the
    booking's lock. Idempotent: a booking already accepted is returned unchanged (a double
    submit records nothing twice).

    Raises ``CompletionLinkInvalid`` when ``token`` is not the booking's, ``HoldExpired`` /
    ``InvalidTransition`` once the hold lapsed or ended, ``ContractVersionChanged`` when the
    version read is not the booking's."""
    now = now or timezone.now()
    with transaction.atomic():
        booking = _locked_for_token(booking_id, token)
        if booking.contract_accepted_at is not None:
            return booking
        _check_live_hold(booking, now)
        if contract_version != booking.contract_version:
            raise ContractVersionChanged(
                str(
                    _(
                        "The contract terms of this booking changed while you were reading "
                        "them. Please read version %(version)s and accept again."
                    )
                )
                % {"version": booking.contract_version}
            )
        booking.contract_signer_name = signer_name
        booking.contract_signer_email = signer_email
        booking.contract_accepted_at = now
        booking.save(
            update_fields=[
                "contract_signer_name",
                "contract_signer_email",
                "contract_accepted_at",
                "updated_at",
            ]
        )
        _event(
            booking,
            type=CONTRACT_ACCEPTED,
            actor=Actor(label=f"customer:{signer_email}"),
            now=now,
            # The feed shows ``data`` to the organisation: the version, not the person.
            data={"contract_version": booking.contract_version},
            reason=f"Accepted by {signer_name} <{signer_email}> through the completion link.",
        )
    logger.info("booking %s contract accepted", booking.reference)
    return booking


def invited_email_matches(booking: Booking, user: User) -> bool:
    return bool(booking.customer_email) and (
        user.email.strip().lower() == booking.customer_email.strip().lower()
    )


def enterprise_customer_join(
    *, booking_id: int, token: str, user: User, now: datetime | None = None
) -> Membership:
    """Make ``user`` (signed in: allauth verified the address) a booker of the booking's
    organisation, so they can pay it on the pay page. Only the invited address may join, only
    after the contract is accepted, only while the booking is held or confirmed. Idempotent:
    an existing membership is returned as it is (an owner stays an owner).

    Raises ``CompletionLinkInvalid`` for a wrong token, ``NotInvited`` for another address,
    ``InvalidTransition`` before acceptance or after the booking ended."""
    now = now or timezone.now()
    with transaction.atomic():
        booking = _locked_for_token(booking_id, token)
        if not invited_email_matches(booking, user):
            raise NotInvited(
                str(
                    _(
                        "This booking was sent to another e-mail address. Sign in with the "
                        "address the link was sent to."
                    )
                )
            )
        status = booking.status_at(now)
        if booking.contract_accepted_at is None or status not in (
            BookingStatus.HELD,
            BookingStatus.CONFIRMED,
        ):
            raise InvalidTransition(
                from_status=status,
                to_status=status,
                message=str(_("Accept the contract terms of a live booking first.")),
            )
        membership, created = Membership.objects.get_or_create(
            user=user,
            organisation_id=booking.organisation_id,
            defaults={"role": MemberRole.BOOKER},
        )
        if created:
            _event(
                booking,
                type=CUSTOMER_JOINED,
                actor=Actor.for_user(user),
                now=now,
                reason=f"{user.email} joined {booking.organisation} through the completion link.",
            )
    return membership


# --- the e-mail ------------------------------------------------------------------------


@outbox_handler(LINK_TOPIC)
def handle_completion_link(message: OutboxMessage) -> None:
    """E-mail the booking's customer its completion link; nothing once the hold is over."""
    booking = Booking.objects.select_related("slot_class__mission", "organisation").get(
        pk=message.payload["booking_id"]
    )
    if (
        not booking.completion_token
        or not booking.customer_email
        or booking.status_at() != BookingStatus.HELD
    ):
        return
    language = message.payload.get("language") or "en"
    with translation.override(language if language in LINK_LANGUAGES else "en"):
        context = {
            "booking": booking,
            "link": completion_url(booking.completion_token),
            "site_url": settings.SITE_URL,
        }
        body = render_to_string("emails/enterprise_completion_link.txt", context)
        subject = "[Moonslot] " + str(
            _("Complete your booking %(ref)s") % {"ref": booking.reference}
        )
    EmailMessage(
        subject=subject,
        body=body,
        to=[booking.customer_email],
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": LINK_SENT},
    ).send()


__all__ = [
    "CONTRACT_ACCEPTED",
    "LINK_SENT",
    "CompletionLinkInvalid",
    "ContractVersionChanged",
    "EnterpriseHoldRequest",
    "NotInvited",
    "completion_url",
    "contract_template",
    "enterprise_booking_for_token",
    "enterprise_contract_accept",
    "enterprise_customer_join",
    "enterprise_hold_link_issue",
    "enterprise_hold_link_resend",
    "enterprise_hold_place",
]
