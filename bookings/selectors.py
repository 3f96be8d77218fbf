"""Reads of bookings, always within one organisation (tenancy is explicit: every selector
takes it). Each returns bookings with what their representation needs joined in, and the
``live_status`` annotation, so a page costs the same number of queries at any size."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Organisation
from bookings.models import REFERENCE_LENGTH, Booking
from bookings.querysets import BookingQuerySet


def _for_display(organisation: Organisation, now: datetime) -> BookingQuerySet:
    return (
        Booking.objects.for_organisation(organisation)
        .with_live_status(now)
        .select_related("slot_class__mission", "slot_class__payment_plan", "payload")
    )


def _with_money(bookings: BookingQuerySet) -> BookingQuerySet:
    """What each booking's money summary reads (``bookings.plans.booking_money_summary``):
    its instalments and payments with their refunds, one query each whatever the count."""
    return bookings.prefetch_related("instalments", "payments__refunds")


def booking_list(
    *,
    organisation: Organisation,
    status: str | None = None,
    mission_code: str | None = None,
    now: datetime | None = None,
) -> QuerySet[Booking]:
    """The organisation's bookings, newest first. ``status`` is the live status: ``held``
    means holds still running, ``expired`` includes holds lapsed but not yet swept."""
    now = now or timezone.now()
    bookings = _with_money(_for_display(organisation, now))
    if status:
        bookings = bookings.with_live_status_in([status], now)
    if mission_code:
        bookings = bookings.filter(slot_class__mission__code=mission_code)
    return bookings.order_by("-created_at", "-pk")


def booking_get(
    *,
    organisation: Organisation,
    reference: str,
    now: datetime | None = None,
    with_money: bool = False,
) -> Booking:
    """One of the organisation's bookings by reference, in any case (references are stored
    in capitals). Another organisation's booking is as absent as a missing one: raises
    ``Booking.DoesNotExist`` for both, and for a reference that cannot exist (no query: a
    NUL character, say, is refused by PostgreSQL itself). ``with_money`` also prefetches
    what its money summary reads, for showing the booking."""
    reference = reference.upper()
    if not (reference.isascii() and reference.isalnum() and len(reference) <= REFERENCE_LENGTH):
        raise Booking.DoesNotExist(f"no booking {reference!r}")
    bookings = _for_display(organisation, now or timezone.now())
    return (_with_money(bookings) if with_money else bookings).get(reference=reference)


def booking_as_held(booking: Booking) -> Booking:
    """The booking ``services.booking_hold`` just returned, ready for showing as
    ``booking_get(with_money=True)`` would return it, without reading it back: its class
    comes with the mission and payment plan, its payload is the declaration the hold wrote,
    and a new hold has no payments. Only a class with a payment plan reads its instalments
    (one query); other classes have none."""
    instalments = list(booking.instalments.all()) if booking.slot_class.payment_plan_id else []
    booking._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "instalments": instalments,
        "payments": [],
    }
    return booking


# --- The website: a person sees the bookings of every organisation they belong to -------
# (Imported here so this section stays apart from the organisation-scoped reads above.)
from django.db.models import OuterRef, Subquery  # noqa: E402

from accounts.models import MemberRole, Membership, OrganisationKind, User  # noqa: E402


def _member_bookings(*, user: User, now: datetime) -> BookingQuerySet:
    """Bookings of the user's organisations, each annotated with ``member_role`` (the user's
    role in the booking's organisation), so permission checks need no further query."""
    role = Membership.objects.filter(user=user, organisation=OuterRef("organisation_id"))
    return (
        Booking.objects.filter(
            organisation_id__in=Membership.objects.filter(user=user).values("organisation_id")
        )
        .with_live_status(now)
        .annotate(member_role=Subquery(role.values("role")[:1]))
        .select_related("slot_class__mission", "organisation", "payload")
    )


def booking_list_for_member(*, user: User, now: datetime | None = None) -> QuerySet[Booking]:
    """The "My bookings" page: every booking of every organisation the user is a member
    of (any role), newest first, with live status, class, mission, organisation and payload
    joined in."""
    return _member_bookings(user=user, now=now or timezone.now()).order_by("-created_at", "-pk")


def booking_get_for_member(
    *, user: User, reference: str, now: datetime | None = None, for_cancel: bool = False
) -> Booking:
    """One booking by reference (any case) if the user belongs to its organisation; raises
    ``Booking.DoesNotExist`` otherwise, so another customer's booking is as absent as a
    missing one. ``for_cancel`` also prefetches the class's cancellation tiers."""
    bookings = _member_bookings(user=user, now=now or timezone.now())
    if for_cancel:
        bookings = bookings.prefetch_related("slot_class__cancellation_tiers")
    return bookings.get(reference=reference.upper())


def organisations_bookable_by(*, user: User) -> list[Organisation]:
    """The organisations the user may book for (owner or booker), their personal account
    first, then by name."""
    organisations = Organisation.objects.filter(
        memberships__user=user, memberships__role__in=[MemberRole.OWNER, MemberRole.BOOKER]
    ).order_by("name")
    return sorted(organisations, key=lambda org: org.kind != OrganisationKind.PERSONAL)
