"""Booking transitions: the only code that assigns ``Booking.status`` or changes capacity.

Every transition locks what it changes (order: slot class → organisation → booking), is quiet
when the booking is already in the target state (webhook, task and API replays), refuses what
``BOOKING_TRANSITIONS`` does not allow, writes a ``BookingEvent`` and records its side effects
in the outbox, all in one transaction.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Sum
from django.utils import timezone

from accounts.models import ApiKey, CreditLimit, Organisation, User
from bookings import (
    plans,
    waitlist,  # a module import: waitlist imports this module too
)
from bookings.events import event_write as _event
from bookings.exceptions import (
    BookingValidationError,
    ChannelNotAllowed,
    ContractNotAccepted,
    CreditLimitExceeded,
    CurrencyNotOffered,
    HoldExpired,
    HoldLimitExceeded,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
    ScreeningReview,
)
from bookings.locks import booking_qs_for_update, organisation_qs_for_update
from bookings.manifests import manifest_rebuild_for
from bookings.models import (
    BOOKING_TRANSITIONS,
    REFERENCE_ALPHABET,
    REFERENCE_LENGTH,
    Booking,
    BookingEvent,
    BookingStatus,
    EventFeedCursor,
    EventType,
    PayloadDeclaration,
)
from bookings.outbox import outbox_write
from bookings.review import material_snapshot, payload_review_initial, payload_review_route
from bookings.screening import booking_screening_check
from bookings.validation import CustomerInput, PayloadInput, check_payload, check_quantity
from config.db import CompiledGet, insert_row, insert_unless_conflict
from marketplace.locks import (
    slot_class_counters_for_update,
    slot_class_qs_for_update,
    slot_class_take_if_free,
)
from marketplace.models import CancellationTier, Channel, MissionStatus, SlotClass
from marketplace.money import Money

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who caused a transition, for the audit trail."""

    label: str
    user: User | None = None
    api_key: ApiKey | None = None

    @classmethod
    def system(cls, what: str = "system") -> Actor:
        return cls(label=what)

    @classmethod
    def for_user(cls, user: User) -> Actor:
        return cls(label=f"{'staff' if user.is_staff else 'user'}:{user.email}", user=user)

    @classmethod
    def for_api_key(cls, api_key: ApiKey) -> Actor:
        return cls(label=f"api:{api_key.prefix}", api_key=api_key)


# --- helpers ---------------------------------------------------------------------------


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def _notify(booking: Booking, event: BookingEvent) -> None:
    outbox_write(
        topic="booking.notify",
        payload={"booking_id": booking.pk, "event_id": event.pk, "type": event.type},
        dedupe_key=f"booking.notify:{event.pk}",
    )


def refund_tier(booking: Booking, *, now: datetime) -> CancellationTier | None:
    """The cancellation-policy tier a cancellation at ``now`` falls under: the one with the
    most days before launch that still applies. None for an unconfirmed hold (nothing was
    paid) or when no tier applies."""
    if booking.status_at(now) != BookingStatus.CONFIRMED:
        return None
    days_before = (booking.slot_class.mission.launch_window_start - now).days
    tiers = sorted(booking.slot_class.cancellation_tiers.all(), key=lambda t: -t.days_before_launch)
    return next((tier for tier in tiers if days_before >= tier.days_before_launch), None)


def refund_due(booking: Booking, *, now: datetime) -> Money:
    """What the class's cancellation policy gives back if ``booking`` is cancelled at ``now``:
    nothing for an unconfirmed hold; for a confirmed booking, the share of its tier
    (``refund_tier``), rounded down to the minor unit, and on a payment plan never more than
    its instalments received (``plans.refund_cap``)."""
    tier = refund_tier(booking, now=now)
    percent = tier.refund_percent if tier is not None else 0
    amount = booking.price_amount * percent // 100
    cap = plans.refund_cap(booking) if amount else None
    return Money(amount if cap is None else min(amount, cap), booking.currency)


_EXPIRED_EVENT_VALUES = (
    EventType.BOOKING_EXPIRED,
    BookingStatus.HELD,
    BookingStatus.EXPIRED,
    "system:hold-expiry",
    "The hold lapsed before it was confirmed.",
)


def _release_lapsed_holds(slot_class: SlotClass, *, now: datetime) -> int:
    """Expire the class's holds past their expiry, set-based: the bookings' UPDATE, an
    INSERT…SELECT of their events and one save of the counters, which drop by exactly what
    the UPDATE changed. The caller holds the class's row lock. A booking confirmed while this
    waited for its row (a confirm at the last second before expiry) is skipped by the
    UPDATE's own status check and stays confirmed. Returns how many holds were released."""
    if connection.vendor == "postgresql":
        count, mass, units = _expire_lapsed_returning(slot_class.pk, now=now)
    else:
        count, mass, units = _expire_lapsed_serialised(slot_class.pk, now=now)
    if not count:
        return 0
    slot_class.taken_g -= mass
    slot_class.taken_units -= units
    slot_class.save_counters()
    outbox_write(
        topic="bookings.expired",
        payload={"slot_class_id": slot_class.pk, "expired_at": now.isoformat()},
    )
    # Freed capacity goes to the waitlist before any new hold (still under the class lock).
    waitlist.waitlist_offer_freed_capacity(slot_class, now=now)
    return count


def _expire_lapsed_returning(slot_class_id: int, *, now: datetime) -> tuple[int, int, int]:
    """PostgreSQL: one statement updates the lapsed holds, writes an event for each row it
    actually changed and sums what they held, so a row skipped at the last moment is neither
    counted nor given an event."""
    booking_table = Booking._meta.db_table
    event_table = BookingEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH expired AS (
                UPDATE {booking_table}
                SET status = %s, expired_at = %s, updated_at = %s
                WHERE slot_class_id = %s AND status = %s AND hold_expires_at <= %s
                RETURNING id, organisation_id, mass_g, quantity
            ), events AS (
                INSERT INTO {event_table} (booking_id, organisation_id, type, from_status,
                                           to_status, actor, reason, data, created_at)
                SELECT id, organisation_id, %s, %s, %s, %s, %s, '{{}}', %s FROM expired
            )
            SELECT count(*), coalesce(sum(mass_g), 0), coalesce(sum(quantity), 0)
            FROM expired
            """,  # noqa: S608 (table names come from model metadata, values are parameters)
            [
                BookingStatus.EXPIRED,
                now,
                now,
                slot_class_id,
                BookingStatus.HELD,
                now,
                *_EXPIRED_EVENT_VALUES,
                now,
            ],
        )
        count, mass, units = cursor.fetchone() or (0, 0, 0)  # an aggregate answers one row
    return int(count), int(mass), int(units)


def _expire_lapsed_serialised(slot_class_id: int, *, now: datetime) -> tuple[int, int, int]:
    """Other databases (SQLite): transactions take the write lock when they start
    (IMMEDIATE), so nothing can change between counting, writing the events and updating."""
    lapsed = Booking.objects.filter(
        slot_class_id=slot_class_id, status=BookingStatus.HELD, hold_expires_at__lte=now
    )
    totals = lapsed.aggregate(count=Count("pk"), mass=Sum("mass_g"), units=Sum("quantity"))
    count = totals["count"] or 0
    if not count:
        return 0, 0, 0
    booking_table = Booking._meta.db_table
    event_table = BookingEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {event_table} (booking_id, organisation_id, type, from_status,
                                       to_status, actor, reason, data, created_at)
            SELECT id, organisation_id, %s, %s, %s, %s, %s, '{{}}', %s
            FROM {booking_table}
            WHERE slot_class_id = %s AND status = %s AND hold_expires_at <= %s
            """,  # noqa: S608 (table names come from model metadata, values are parameters)
            [*_EXPIRED_EVENT_VALUES, now, slot_class_id, BookingStatus.HELD, now],
        )
    updated = lapsed.update(status=BookingStatus.EXPIRED, expired_at=now, updated_at=now)
    if updated != count:  # the write lock makes this impossible; never corrupt the counters
        raise RuntimeError(f"expired {updated} holds but counted {count}")
    return count, totals["mass"] or 0, totals["units"] or 0


REFERENCE_ATTEMPTS = 12


def _create_with_reference(**fields: object) -> Booking:
    """Insert a booking under a fresh random reference; the unique index decides, so two
    concurrent holds can never share one (no read-then-write), and a collision is retried
    under another without a savepoint (``insert_unless_conflict``)."""
    booking = Booking(**fields)
    _insert_with_fresh_reference(booking)
    return booking


def _insert_with_fresh_reference(booking: Booking) -> None:
    for _attempt in range(REFERENCE_ATTEMPTS):
        booking.reference = new_reference()
        if insert_unless_conflict(booking, conflict="reference"):
            return
    raise RuntimeError("could not find a free booking reference")


def _payload_fields(payload: PayloadInput | None) -> dict[str, object]:
    if payload is None:
        return {}
    values: dict[str, object] = {}
    for name in payload.given:
        value = getattr(payload, name)
        if name == "dimensions_mm":
            dims = value or [None, None, None]
            values.update(length_mm=dims[0], width_mm=dims[1], height_mm=dims[2])
        elif name in ("name", "description"):
            values[name] = value or ""
        elif name == "hazards":
            values[name] = value or []
        elif name == "inert_confirmed":
            values[name] = bool(value)
        else:
            values[name] = value
    return values


# --- transitions -----------------------------------------------------------------------

# The class as a hold reads it, compiled once (compiling it cost three times running it).
_SLOT_CLASS_FOR_HOLD: CompiledGet[SlotClass] = CompiledGet(
    lambda: SlotClass.objects.select_related("mission", "position", "payment_plan"), "pk", 1
)


def booking_hold(
    *,
    slot_class_id: int,
    currency: str,
    organisation: Organisation,
    channel: str,
    actor: Actor,
    mass_g: int | None = None,
    quantity: int | None = None,
    payload: PayloadInput | None = None,
    customer: CustomerInput | None = None,
    hold_minutes: int | None = None,
    terms_version: str = "",
    now: datetime | None = None,
) -> Booking:
    """Place a hold: checks the class's limits, channel, currency, sales window and the
    organisation's cap on held mass, then takes capacity under the class's row lock.

    Raises ``SlotClass.DoesNotExist``, ``BookingValidationError``, ``ChannelNotAllowed``,
    ``CurrencyNotOffered``, ``SalesClosed``, ``InsufficientCapacity``, ``HoldLimitExceeded``.
    Not idempotent by itself: the API's Idempotency-Key makes retries safe.
    """
    now = now or timezone.now()
    # Everything that needs no lock is checked before taking one.
    slot_class = _SLOT_CLASS_FOR_HOLD.get(slot_class_id)
    slot_class.load_price(currency)
    if not slot_class.sells_on(channel):
        raise ChannelNotAllowed(f"This class is not sold through the {Channel(channel).label}.")
    mission = slot_class.mission
    if mission.status != MissionStatus.ON_SALE or now >= mission.booking_cutoff:
        raise SalesClosed(f"Mission {mission.code} is not on sale.")
    if slot_class.price_for(currency) is None:
        offered = ", ".join(sorted(p.currency for p in slot_class.prices.all()))
        raise CurrencyNotOffered(f"{currency} is not offered for this class (offered: {offered}).")
    mass_g, quantity, errors = check_quantity(slot_class, mass_g=mass_g, quantity=quantity)
    errors.update(check_payload(slot_class, payload, booked_mass_g=mass_g))
    if errors:
        raise BookingValidationError(errors)
    price = slot_class.total_price(currency=currency, mass_g=mass_g, quantity=quantity)
    minutes = hold_minutes or slot_class.hold_minutes_for(channel)
    customer = customer or CustomerInput()

    fields = {
        "organisation": organisation,
        "created_by": actor.user,
        "api_key": actor.api_key,
        "channel": channel,
        "slot_class": slot_class,
        "mass_g": mass_g,
        "quantity": quantity,
        "currency": currency,
        "price_amount": price.amount,
        "status": BookingStatus.HELD,
        "hold_expires_at": now + timedelta(minutes=minutes),
        "customer_name": customer.name,
        "customer_email": customer.email,
        "customer_organisation": customer.organisation,
        "terms_version": terms_version,
        "terms_accepted_at": now if terms_version else None,
        "created_at": now,
    }
    booking = Booking(**fields)
    # One transaction (the caller's, if it has one), no savepoint: the class is locked and
    # capacity taken first, and a refusal leaves the block as a value, not an exception, so
    # it rolls nothing back, least of all an enclosing Idempotency-Key transaction that
    # must store the 409. Then the rows; a reference collision is answered by the insert.
    with transaction.atomic(savepoint=False):
        refusal = _take_capacity(slot_class, booking, now=now)
        if refusal is None:
            _insert_with_fresh_reference(booking)
            # Deposit and instalments for a class with a payment plan (nothing otherwise).
            plans.instalments_create(booking, slot_class, now=now)
            declaration = PayloadDeclaration(booking=booking, **_payload_fields(payload))
            payload_review_initial(booking, declaration)  # declared, complete, or a review
            insert_row(declaration)
            event = _event(
                booking,
                type=EventType.BOOKING_HELD,
                actor=actor,
                to_status=BookingStatus.HELD,
                data={"mass_g": mass_g, "quantity": quantity, "price": price.as_dict()},
                now=now,
            )
            _notify(booking, event)
    if refusal is not None:
        raise refusal
    logger.info("booking %s held", booking.reference, extra={"booking": booking.reference})
    return booking


def _take_capacity(
    slot_class: SlotClass, booking: Booking, *, now: datetime
) -> InsufficientCapacity | HoldLimitExceeded | None:
    """For ``booking_hold``, before the booking's rows. When the counters leave room and the
    organisation has no cap on held mass, one guarded UPDATE checks and takes the capacity
    and keeps the class row locked to the commit (``slot_class_take_if_free``). Otherwise:
    lock the class (FOR NO KEY UPDATE, which the FOR KEY SHARE locks that other bookings'
    foreign-key checks take do not block), then the organisation if it caps held mass (lock
    order class → organisation), release lapsed holds, check capacity and the cap against
    what is committed, and raise the counters. The refusal is returned, not raised, and then
    nothing but the lapsed holds' release was written."""
    organisation = booking.organisation
    if organisation.held_mass_cap_g is None:
        taken = slot_class_take_if_free(
            slot_class.pk,
            mass_g=booking.mass_g,
            units=booking.quantity or 0,
            per_unit=slot_class.is_per_unit,
        )
        if taken is not None:
            (
                slot_class.capacity_g,
                slot_class.taken_g,
                slot_class.capacity_units,
                slot_class.taken_units,
            ) = taken
            return None
    counters = slot_class_counters_for_update(slot_class.pk)
    # Read again under the lock: everything else about the class was checked before it.
    (
        slot_class.capacity_g,
        slot_class.taken_g,
        slot_class.capacity_units,
        slot_class.taken_units,
    ) = counters
    # The organisation is locked before releasing lapsed holds row-locks bookings (an
    # on-account confirm holds the organisation and waits for a booking).
    org = (
        organisation_qs_for_update().get(pk=organisation.pk)
        if organisation.held_mass_cap_g is not None
        else None
    )
    _release_lapsed_holds(slot_class, now=now)
    mass_g, quantity = booking.mass_g, booking.quantity or 0
    available_g = slot_class.capacity_g - slot_class.taken_g
    available_units = (
        (slot_class.capacity_units or 0) - slot_class.taken_units
        if slot_class.is_per_unit
        else None
    )
    if mass_g > available_g or (available_units is not None and quantity > available_units):
        return InsufficientCapacity(available_g=available_g, available_units=available_units)
    if org is not None and org.held_mass_cap_g is not None:
        held = (
            Booking.objects.live_holds(now)
            .filter(organisation=org)
            .aggregate(total=Sum("mass_g"))["total"]
            or 0
        )
        if held + mass_g > org.held_mass_cap_g:
            return HoldLimitExceeded(
                f"Holding {mass_g} g more would pass your cap of {org.held_mass_cap_g} g "
                f"of unpaid holds ({held} g held now)."
            )
    slot_class.taken_g += mass_g
    slot_class.taken_units += quantity
    slot_class.save_counters()
    return None


def _outstanding_on_account(organisation: Organisation, currency: str) -> int:
    return (
        Booking.objects.filter(
            organisation=organisation,
            currency=currency,
            status=BookingStatus.CONFIRMED,
            on_account=True,
        ).aggregate(total=Sum("price_amount"))["total"]
        or 0
    )


def booking_confirm(
    *,
    booking_id: int,
    actor: Actor,
    on_account: bool = False,
    reason: str = "",
    now: datetime | None = None,
) -> Booking:
    """Confirm a live hold (paid, confirmed on account, or confirmed by sales). Confirming a
    confirmed booking returns it unchanged.

    Raises ``HoldExpired`` once the hold has lapsed (swept or not), ``InvalidTransition``
    from cancelled, ``CreditLimitExceeded`` on account past the organisation's limit,
    ``ScreeningReview`` when the customer matches the denied-party list (the booking stays
    held for sales' review: ``bookings.screening``; the match is committed before the error
    is raised, and inside a caller's transaction it is kept if the caller catches it).
    """
    outcome = _booking_confirm(
        booking_id=booking_id, actor=actor, on_account=on_account, reason=reason, now=now
    )
    if isinstance(outcome, ScreeningReview):
        raise outcome
    return outcome


def _booking_confirm(
    *, booking_id: int, actor: Actor, on_account: bool, reason: str, now: datetime | None
) -> Booking | ScreeningReview:
    now = now or timezone.now()
    with transaction.atomic():
        head = Booking.objects.only("organisation_id", "currency").get(pk=booking_id)
        limit = None
        if on_account:
            # Lock the organisation first (lock order) so two confirmations cannot both fit
            # under the same remaining credit.
            organisation_qs_for_update().get(pk=head.organisation_id)
            limit = CreditLimit.objects.filter(
                organisation_id=head.organisation_id, currency=head.currency
            ).first()
        booking = booking_qs_for_update().select_related("organisation").get(pk=booking_id)
        if booking.status == BookingStatus.CONFIRMED:
            return booking
        if booking.status_at(now) == BookingStatus.EXPIRED:
            raise HoldExpired("The hold has lapsed; place a new one.")
        if BookingStatus.CONFIRMED not in BOOKING_TRANSITIONS[booking.status]:
            raise InvalidTransition(from_status=booking.status, to_status=BookingStatus.CONFIRMED)
        if booking.completion_token and booking.contract_accepted_at is None:
            # An enterprise hold is confirmed only on contract terms its customer accepted.
            raise ContractNotAccepted(
                f"Booking {booking.reference} cannot be confirmed before the customer accepts "
                "the contract terms through its completion link."
            )
        if limit is not None:
            outstanding = _outstanding_on_account(booking.organisation, booking.currency)
            if outstanding + booking.price_amount > limit.amount:
                raise CreditLimitExceeded(
                    f"Confirming would take your account to "
                    f"{Money(outstanding + booking.price_amount, booking.currency)}, over the "
                    f"credit limit of {Money(limit.amount, booking.currency)}."
                )
        # Denied-party screening. A match is recorded (and the hold kept) by returning, so
        # this transaction commits; booking_confirm raises the error after it.
        review = booking_screening_check(booking, actor=actor, on_account=on_account, now=now)
        if review is not None:
            return review
        previous = booking.status
        booking.status = BookingStatus.CONFIRMED
        booking.confirmed_at = now
        booking.on_account = on_account
        booking.save(
            update_fields=["status", "confirmed_at", "on_account", "screening_status", "updated_at"]
        )
        plans.instalments_confirmed(booking, now=now)
        event = _event(
            booking,
            type=EventType.BOOKING_CONFIRMED,
            actor=actor,
            from_status=previous,
            to_status=BookingStatus.CONFIRMED,
            reason=reason,
            data={"on_account": on_account},
            now=now,
        )
        _notify(booking, event)
        manifest_rebuild_for(booking, "confirmed")
    logger.info("booking %s confirmed", booking.reference, extra={"booking": booking.reference})
    return booking


class _MovedMeanwhile(Exception):
    """The booking changed slot class between reading its class and locking it."""


def booking_cancel(
    *, booking_id: int, actor: Actor, reason: str = "", now: datetime | None = None
) -> Booking:
    """Cancel a held or confirmed booking: capacity is free at once and the refund due under
    the class's policy is recorded. Cancelling a cancelled or expired booking (a lapsed hold
    included, which this expires) returns it unchanged.

    The booking's class is read before its lock is taken (lock order: class, then booking);
    a move to another mission committing in between is noticed under the booking's lock and
    the cancel runs again against the class the booking is now in. Raises
    ``InvalidTransition`` if it keeps moving."""
    now = now or timezone.now()
    for _attempt in range(3):
        try:
            return _booking_cancel_in_current_class(
                booking_id=booking_id, actor=actor, reason=reason, now=now
            )
        except _MovedMeanwhile:
            continue
    raise InvalidTransition(
        from_status="moved",
        to_status=BookingStatus.CANCELLED,
        message="This booking was moved a moment ago; try again.",
    )


def _booking_cancel_in_current_class(
    *, booking_id: int, actor: Actor, reason: str, now: datetime
) -> Booking:
    with transaction.atomic():
        slot_class_id = Booking.objects.values_list("slot_class_id", flat=True).get(pk=booking_id)
        slot_class = slot_class_qs_for_update().get(pk=slot_class_id)
        _release_lapsed_holds(slot_class, now=now)
        booking = (
            booking_qs_for_update()
            .select_related("slot_class__mission")
            .prefetch_related("slot_class__cancellation_tiers")
            .get(pk=booking_id)
        )
        if booking.slot_class_id != slot_class.pk:
            raise _MovedMeanwhile
        if booking.status in (BookingStatus.CANCELLED, BookingStatus.EXPIRED):
            return booking
        if BookingStatus.CANCELLED not in BOOKING_TRANSITIONS[booking.status]:
            raise InvalidTransition(from_status=booking.status, to_status=BookingStatus.CANCELLED)
        refund = refund_due(booking, now=now)
        previous = booking.status
        booking.status = BookingStatus.CANCELLED
        booking.cancelled_at = now
        booking.refund_amount = refund.amount
        booking.save(update_fields=["status", "cancelled_at", "refund_amount", "updated_at"])
        plans.instalments_cancel(booking)
        slot_class.taken_g -= booking.mass_g
        slot_class.taken_units -= booking.quantity or 0
        slot_class.save_counters()
        event = _event(
            booking,
            type=EventType.BOOKING_CANCELLED,
            actor=actor,
            from_status=previous,
            to_status=BookingStatus.CANCELLED,
            reason=reason,
            data={"refund": refund.as_dict()},
            now=now,
        )
        _notify(booking, event)
        if previous == BookingStatus.CONFIRMED:
            manifest_rebuild_for(booking, "cancelled")
        # Freed capacity goes to the waitlist before any new hold (still under the class lock).
        waitlist.waitlist_offer_freed_capacity(slot_class, now=now)
    logger.info("booking %s cancelled", booking.reference, extra={"booking": booking.reference})
    return booking


def bookings_expire(*, now: datetime | None = None) -> int:
    """The beat sweep: expire every lapsed hold, one slot class per short transaction under
    its row lock, set-based. Safe to run twice or concurrently (the second finds nothing);
    a booking confirmed a moment ago is never expired (the UPDATE re-checks the status).
    Returns how many holds were expired."""
    now = now or timezone.now()
    class_ids = list(
        Booking.objects.filter(status=BookingStatus.HELD, hold_expires_at__lte=now)
        .order_by("slot_class_id")
        .values_list("slot_class_id", flat=True)
        .distinct()
    )
    total = 0
    for class_id in class_ids:
        with transaction.atomic():
            slot_class = slot_class_qs_for_update().get(pk=class_id)
            total += _release_lapsed_holds(slot_class, now=now)
    return total


def booking_payload_update(
    *, booking_id: int, payload: PayloadInput, actor: Actor, now: datetime | None = None
) -> Booking:
    """Replace the given fields of a booking's payload declaration (the rest stay), checked
    against the class limits like a new booking. Allowed for live holds and confirmed
    bookings until the mission's booking cutoff.

    Raises ``SalesClosed`` after the cutoff, ``InvalidTransition`` (invalid_state) for a
    cancelled or expired booking, ``BookingValidationError``.
    """
    now = now or timezone.now()
    with transaction.atomic():
        booking = (
            booking_qs_for_update()
            .select_related("slot_class__mission", "slot_class__position")
            .get(pk=booking_id)
        )
        status = booking.status_at(now)
        if status not in (BookingStatus.HELD, BookingStatus.CONFIRMED):
            raise InvalidTransition(
                from_status=status,
                to_status=status,
                message=f"This booking is {status}; its payload can no longer change.",
            )
        if now >= booking.slot_class.mission.booking_cutoff:
            raise SalesClosed("The booking cutoff has passed; the payload can no longer change.")
        declaration = PayloadDeclaration.objects.select_for_update().get(booking=booking)
        merged = PayloadInput.from_declaration(declaration)
        for name in payload.given:
            setattr(merged, name, getattr(payload, name))
        errors = check_payload(booking.slot_class, merged, booked_mass_g=booking.mass_g)
        if errors:
            raise BookingValidationError(errors)
        before = material_snapshot(declaration)
        changed = _payload_fields(payload)
        for name, value in changed.items():
            setattr(declaration, name, value)
        # Complete now, or changed where it matters: the review follows (bookings.review).
        payload_review_route(
            booking,
            declaration,
            actor=actor,
            material_changed=material_snapshot(declaration) != before,
            now=now,
        )
        declaration.save()
        _event(
            booking,
            type=EventType.PAYLOAD_UPDATED,
            actor=actor,
            data={"fields": sorted(payload.given)},
            now=now,
        )
        if status == BookingStatus.CONFIRMED:
            manifest_rebuild_for(booking, "payload changed")
    return booking


def bookings_remind_expiring(*, within: timedelta, now: datetime | None = None) -> int:
    """Queue one "your hold is about to expire" notice per live hold that lapses within
    ``within``; the outbox's dedupe key makes a second run (or a concurrent one) write
    nothing. Only holds that were given more than ``within`` get one, so a short web hold is
    not reminded the moment it is placed. Returns how many reminders were queued."""
    now = now or timezone.now()
    candidates = (
        Booking.objects.live_holds(now)
        .filter(hold_expires_at__lte=now + within, created_at__lt=now - within)
        .values_list("pk", flat=True)
    )
    queued = 0
    for booking_id in candidates.iterator(chunk_size=500):
        with transaction.atomic():
            if outbox_write(
                topic="booking.hold_reminder",
                payload={"booking_id": booking_id},
                dedupe_key=f"booking.hold_reminder:{booking_id}",
            ):
                queued += 1
    return queued


# --- the events feed -------------------------------------------------------------------


def booking_events_sequence(*, limit: int = 50_000) -> int:
    """Give committed events their feed position. Runs under the cursor row's lock, so
    sequencing transactions follow one another and each numbers only rows already committed:
    an event whose transaction commits late gets a later position instead of a gap behind
    the pollers' cursors. Returns how many events were numbered."""
    if not BookingEvent.objects.filter(seq__isnull=True).exists():
        return 0
    table = BookingEvent._meta.db_table
    with transaction.atomic():
        cursor_row = _feed_cursor_for_update()
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {table} SET seq = %s + numbered.rn
                FROM (
                    SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS rn
                    FROM {table} WHERE seq IS NULL ORDER BY id LIMIT %s
                ) AS numbered
                WHERE {table}.id = numbered.id
                """,  # noqa: S608 (table name from model metadata)
                [cursor_row.last_seq, limit],
            )
            numbered = cursor.rowcount
        cursor_row.last_seq += numbered
        cursor_row.save(update_fields=["last_seq"])
    return numbered


def _feed_cursor_for_update() -> EventFeedCursor:
    """The cursor row, locked. A migration creates it; a flushed database (transactional
    tests) may not have it, and two sequencers may race to recreate it."""
    try:
        return EventFeedCursor.objects.select_for_update().get(pk=1)
    except EventFeedCursor.DoesNotExist:
        try:
            with transaction.atomic():
                highest = BookingEvent.objects.aggregate(highest=Max("seq"))["highest"]
                EventFeedCursor.objects.create(pk=1, last_seq=highest or 0)
        except IntegrityError:
            pass
        return EventFeedCursor.objects.select_for_update().get(pk=1)


def booking_event_feed(
    *, organisation: Organisation, after: int = 0, limit: int = 100
) -> list[BookingEvent]:
    """An organisation's events after a feed position, oldest first."""
    booking_events_sequence()
    return list(
        BookingEvent.objects.filter(organisation=organisation, seq__gt=after)
        .select_related("booking")
        .order_by("seq")[:limit]
    )


__all__ = [
    "Actor",
    "booking_cancel",
    "booking_confirm",
    "booking_event_feed",
    "booking_events_sequence",
    "booking_hold",
    "booking_payload_update",
    "bookings_expire",
    "bookings_remind_expiring",
    "refund_due",
]


# --- payments ---------------------------------------------------------------------------

HOLD_EXTENDED = "booking.hold_extended"


def booking_hold_extend(
    *,
    booking_id: int,
    by: timedelta,
    at_most: timedelta,
    actor: Actor,
    reason: str,
    now: datetime | None = None,
) -> Booking:
    """Give a live hold time to finish something already started (a card payment in
    3-D Secure): the expiry becomes ``now + by``, never earlier than it was and never more
    than ``at_most`` past the expiry the hold had before its first extension. Each change is
    a ``booking.hold_extended`` event; an extension that changes nothing writes none.

    Takes the class lock like every hold change, so an expiry sweep cannot count the hold as
    lapsed while it is being extended. Raises ``HoldExpired`` if the hold has already lapsed
    (which this then records), ``InvalidTransition`` unless the booking is held.
    """
    now = now or timezone.now()
    with transaction.atomic():
        slot_class_id = Booking.objects.values_list("slot_class_id", flat=True).get(pk=booking_id)
        slot_class = slot_class_qs_for_update().get(pk=slot_class_id)
        _release_lapsed_holds(slot_class, now=now)
        booking = booking_qs_for_update().get(pk=booking_id)
        if booking.status == BookingStatus.EXPIRED:
            raise HoldExpired("The hold has lapsed; place a new one.")
        if booking.status != BookingStatus.HELD or booking.hold_expires_at is None:
            raise InvalidTransition(from_status=booking.status, to_status=BookingStatus.HELD)
        first = (
            BookingEvent.objects.filter(booking=booking, type=HOLD_EXTENDED)
            .order_by("pk")
            .values_list("data", flat=True)
            .first()
        )
        original = (
            datetime.fromisoformat(first["from"])
            if first and "from" in first
            else booking.hold_expires_at
        )
        target = min(now + by, original + at_most)
        if target <= booking.hold_expires_at:
            return booking
        previous = booking.hold_expires_at
        booking.hold_expires_at = target
        booking.save(update_fields=["hold_expires_at", "updated_at"])
        _event(
            booking,
            type=HOLD_EXTENDED,
            actor=actor,
            reason=reason,
            data={"from": previous.isoformat(), "to": target.isoformat()},
            now=now,
        )
    return booking
