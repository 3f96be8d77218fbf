"""Schedule changes handled the way an airline handles them (re-accommodation), and the move a
customer asks for when their payload will not be ready (rebooking).

A schedule change (``marketplace.services.mission_reschedule``) gives every live booking on
the mission one ``ReaccommodationOffer`` in the transaction that records the change
(``offers_create_for_change``), a ``mission.schedule_changed`` event, and one e-mail per
recipient listing their bookings. The offer's choices:

- **stay** on the rescheduled mission (also what happens to an offer left unanswered at its
  deadline: ``offers_default_due``, a beat job);
- **move** to another mission's class with room, keeping the reference, the price and the
  currency: the provider's delay costs the customer nothing;
- **cancel** with everything paid given back (``booking_cancel_full_refund``), not the
  cancellation policy's share.

A customer may also move a confirmed booking to a later mission on their own account
(``booking_rebook``): everything paid is carried over, and the source class's rebooking fee is
recorded as owed in the ``booking.rebooked`` event.

Every answer is a transition: it locks what it changes (the slot classes in pk order, then the
booking, then the offer: the project's lock order, with the offer under its booking), returns
quietly when repeated, refuses with the booking engine's errors what it cannot do, writes a
``BookingEvent`` and records its e-mail in the outbox. A move lowers the source class's
counter and raises the target's under both locks, then hands the freed room to the source
class's waitlist (``bookings.waitlist.waitlist_offer_freed_capacity``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import models, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from accounts.models import User
from bookings.exceptions import (
    BookingError,
    BookingValidationError,
    ChannelNotAllowed,
    CurrencyNotOffered,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
)
from bookings.locks import booking_qs_for_update
from bookings.manifests import manifest_request_rebuild
from bookings.models import (
    BOOKING_TRANSITIONS,
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    OfferStatus,
    OutboxMessage,
    PayloadDeclaration,
    ReaccommodationOffer,
)
from bookings.notifications import booking_recipients
from bookings.outbox import outbox_handler, outbox_write

# The booking engine's own helpers: the expiry of a class's lapsed holds under its lock, and
# the audit row every transition writes.
from bookings.services import Actor, _event, _release_lapsed_holds
from bookings.validation import PayloadInput, check_payload, check_quantity
from bookings.waitlist import waitlist_offer_freed_capacity
from marketplace.locks import slot_class_qs_for_update
from marketplace.models import Channel, MissionStatus, ScheduleChange, SlotClass
from marketplace.money import Money, divide_half_up

logger = logging.getLogger(__name__)

# How long a customer has to answer an offer (``MOONSLOT_OFFER_ANSWER_DAYS`` overrides it),
# never past the mission's booking cutoff, when the manifest freezes; but never less than
# the minimum either, even when a change comes right before the cutoff.
ANSWER_DAYS = 14
MIN_ANSWER_WINDOW = timedelta(days=2)

# Until launch a payload can still be taken off a mission or moved to another.
MOVABLE_MISSION_STATUSES = (
    MissionStatus.PLANNED,
    MissionStatus.ON_SALE,
    MissionStatus.SALES_CLOSED,
    MissionStatus.INTEGRATION,
)
LIVE_STATUSES = (BookingStatus.HELD, BookingStatus.CONFIRMED)

SCHEDULE_CHANGE_TOPIC = "offers.schedule_changed"
ANSWER_TOPIC = "offers.answered"
DEADLINE_ACTOR = Actor.system("system:offer-deadline")


class OfferChoice(models.TextChoices):
    STAY = "stay", gettext_lazy("Stay on the mission")
    MOVE = "move", gettext_lazy("Move to another mission")
    CANCEL = "cancel", gettext_lazy("Cancel with a full refund")


# --- reading offers --------------------------------------------------------------------


def answer_window() -> timedelta:
    return timedelta(days=int(getattr(settings, "MOONSLOT_OFFER_ANSWER_DAYS", ANSWER_DAYS)))


def offer_deadline(*, announced_at: datetime, booking_cutoff: datetime) -> datetime:
    """When an offer made at ``announced_at`` defaults to staying (see ``ANSWER_DAYS``)."""
    deadline = min(announced_at + answer_window(), booking_cutoff)
    return max(deadline, announced_at + MIN_ANSWER_WINDOW)


def offer_status_at(offer: ReaccommodationOffer, now: datetime) -> str:
    """The status a reader sees: an open offer past its deadline has defaulted to staying
    before the beat job writes it."""
    if offer.status == OfferStatus.OPEN and offer.deadline <= now:
        return OfferStatus.DEFAULTED
    return offer.status


def cancel_refund(booking: Booking) -> Money:
    """What cancelling through an offer gives back: everything paid on a confirmed booking,
    nothing on a hold (nothing was paid)."""
    paid = booking.price_amount if booking.status == BookingStatus.CONFIRMED else 0
    return Money(paid, booking.currency)


def rebooking_fee(booking: Booking) -> Money:
    """The source class's rebooking fee: its ``rebooking_fee_percent`` of the price, rounded
    half up to the minor unit."""
    percent = booking.slot_class.rebooking_fee_percent
    return Money(divide_half_up(booking.price_amount * percent, 100), booking.currency)


def _payload_of(booking: Booking) -> PayloadDeclaration | None:
    try:
        return booking.payload
    except PayloadDeclaration.DoesNotExist:
        return None


def _payload_input(declaration: PayloadDeclaration | None) -> PayloadInput | None:
    if declaration is None:
        return None
    return PayloadInput.from_declaration(declaration)


def check_target(booking: Booking, target: SlotClass, *, now: datetime) -> None:
    """Whether ``booking`` may move into ``target`` (a class loaded with its mission, position
    and prices), room aside: on another mission on sale, sold through the booking's channel,
    priced in its currency, of the same kind and destination, and within the target's limits
    for its mass or quantity and its payload. The price is not recomputed: a move keeps it.

    Raises ``BookingValidationError`` (on ``slot_class``), ``ChannelNotAllowed``,
    ``SalesClosed``, ``CurrencyNotOffered``."""
    source = booking.slot_class
    name = f"{target.mission.code} · {target.display_name}"
    if target.mission_id == source.mission_id:
        raise BookingValidationError(
            {"slot_class": [_("Choose a class on another mission: this booking is on it.")]}
        )
    if not target.sells_on(booking.channel):
        raise ChannelNotAllowed(
            _("%(name)s is not sold through the channel this booking was made on.") % {"name": name}
        )
    if not target.mission.is_bookable(now):
        raise SalesClosed(_("Mission %(code)s is not on sale.") % {"code": target.mission.code})
    if target.price_for(booking.currency) is None:
        raise CurrencyNotOffered(
            _("%(name)s is not sold in %(currency)s, the currency of this booking.")
            % {"name": name, "currency": booking.currency}
        )
    problems: list[str] = []
    if target.destination != source.destination:
        problems.append(
            _("%(name)s goes to %(there)s; this booking goes to %(here)s.")
            % {
                "name": name,
                "there": target.get_destination_display(),
                "here": source.get_destination_display(),
            }
        )
    if target.pricing != source.pricing:
        problems.append(
            _("%(name)s is sold %(there)s; this booking is %(here)s.")
            % {
                "name": name,
                "there": target.get_pricing_display().lower(),
                "here": source.get_pricing_display().lower(),
            }
        )
    else:
        mass_g, _quantity, errors = check_quantity(
            target,
            mass_g=None if target.is_per_unit else booking.mass_g,
            quantity=booking.quantity if target.is_per_unit else None,
        )
        problems += [message for messages in errors.values() for message in messages]
        if not errors and mass_g != booking.mass_g:
            problems.append(_("%(name)s sells units of another mass.") % {"name": name})
    payload_errors = check_payload(
        target, _payload_input(_payload_of(booking)), booked_mass_g=booking.mass_g
    )
    problems += [message for messages in payload_errors.values() for message in messages]
    if problems:
        raise BookingValidationError({"slot_class": problems})


def _fits(booking: Booking, target: SlotClass) -> bool:
    """Room in ``target`` as the catalogue shows it (lapsed holds free)."""
    units = target.available_units
    return target.available_g >= booking.mass_g and (
        units is None or units >= (booking.quantity or 0)
    )


def move_targets(booking: Booking, *, now: datetime, later_only: bool = False) -> list[SlotClass]:
    """Classes ``booking`` could move to now, with room: soonest launch first, each with its
    mission, prices and availability loaded (two queries). ``later_only`` keeps the missions
    that launch after the booking's own (a rebooking)."""
    source = booking.slot_class
    candidates = (
        SlotClass.objects.for_catalogue(now)
        .select_related("mission")
        .filter(
            mission__status=MissionStatus.ON_SALE,
            mission__booking_cutoff__gt=now,
            pricing=source.pricing,
            destination=source.destination,
            prices__currency=booking.currency,
        )
        .exclude(mission_id=source.mission_id)
        .order_by("mission__launch_window_start", "mission__code", "sort_order", "pk")
    )
    if later_only:
        candidates = candidates.filter(
            mission__launch_window_start__gt=source.mission.launch_window_start
        )
    targets = []
    for target in candidates:
        try:
            check_target(booking, target, now=now)
        except BookingError:
            continue
        if _fits(booking, target):
            targets.append(target)
    return targets


@dataclass(frozen=True)
class OfferSummary:
    """An offer as its readers see it (the booking page, the API, the admin)."""

    offer: ReaccommodationOffer
    status: str
    choices: list[str]
    targets: list[SlotClass]
    cancel_refund: Money | None


def offer_summaries(booking: Booking, *, now: datetime | None = None) -> list[OfferSummary]:
    """The booking's offers, newest first, with what can be answered now: the choices and
    the classes with room to move to are given only while an offer is open, the booking
    live and its mission not launched. ``booking`` comes from a selector (class, mission and
    payload joined)."""
    now = now or timezone.now()
    offers = list(
        booking.offers.select_related("schedule_change__mission", "target_slot_class__mission")
    )
    summaries = []
    for offer in offers:
        status = offer_status_at(offer, now)
        answerable = (
            status == OfferStatus.OPEN
            and booking.status_at(now) in LIVE_STATUSES
            and booking.slot_class.mission.status in MOVABLE_MISSION_STATUSES
        )
        targets = move_targets(booking, now=now) if answerable else []
        choices: list[str] = []
        if answerable:
            choices = [OfferChoice.STAY, *([OfferChoice.MOVE] if targets else [])]
            choices.append(OfferChoice.CANCEL)
        summaries.append(
            OfferSummary(
                offer=offer,
                status=status,
                choices=[str(choice) for choice in choices],
                targets=targets,
                cancel_refund=cancel_refund(booking) if answerable else None,
            )
        )
    return summaries


def open_offer(booking: Booking, *, now: datetime | None = None) -> OfferSummary | None:
    """The booking's offer still waiting for an answer, if any (there is at most one: a newer
    schedule change supersedes an older open offer)."""
    return next((summary for summary in offer_summaries(booking, now=now) if summary.choices), None)


# --- a schedule change makes offers ------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.isoformat()


def _language_of(booking: Booking) -> str:
    if booking.channel == Channel.WEB and booking.created_by is not None:
        return booking.created_by.preferred_language or "en"
    return "en"


def _address_key(address: str) -> str:
    # One mailbox however its address is capitalised; the key stays short for the outbox.
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:32]


def offers_create_for_change(
    *,
    change: ScheduleChange,
    booking_cutoff: datetime,
    announced_by: User | None = None,
    now: datetime | None = None,
) -> list[ReaccommodationOffer]:
    """Give every live booking on the changed mission (live holds and confirmed bookings,
    from every channel) its offer, a ``mission.schedule_changed`` event carrying the offer
    and its deadline, and queue one e-mail per recipient listing their bookings. Set-based:
    one query for the bookings, one insert each for the offers and the events, one outbox
    row per recipient. An older offer still open on those bookings is superseded (closed
    as defaulted: the booking stays, and the new offer asks again).

    Run it in the transaction that records the change, under the mission's lock
    (``mission_reschedule`` does): it locks the mission's classes, so no hold, cancel or
    expiry changes the set of bookings while it reads them, then the bookings themselves
    (lock order), so an answer to an older offer of theirs finishes first or waits. Calling
    it again for the same change adds nothing. Returns the offers made.
    """
    now = now or timezone.now()
    actor = Actor.for_user(announced_by) if announced_by else Actor.system("system:schedule")
    with transaction.atomic():
        list(slot_class_qs_for_update().filter(mission_id=change.mission_id))
        bookings = list(
            booking_qs_for_update()
            .filter(slot_class__mission_id=change.mission_id)
            .filter(
                Q(status=BookingStatus.CONFIRMED)
                | Q(status=BookingStatus.HELD, hold_expires_at__gt=now)
            )
            .exclude(offers__schedule_change=change)
            .select_related("organisation", "created_by")
        )
        if not bookings:
            return []
        _supersede_open_offers([b.pk for b in bookings], change=change, actor=actor, now=now)
        deadline = offer_deadline(announced_at=now, booking_cutoff=booking_cutoff)
        offers = ReaccommodationOffer.objects.bulk_create(
            [
                ReaccommodationOffer(
                    booking=booking, schedule_change=change, deadline=deadline, created_at=now
                )
                for booking in bookings
            ]
        )
        window = {
            "old_window_start": _iso(change.old_window_start),
            "old_window_end": _iso(change.old_window_end),
            "new_window_start": _iso(change.new_window_start),
            "new_window_end": _iso(change.new_window_end),
        }
        BookingEvent.objects.bulk_create(
            [
                BookingEvent(
                    booking=booking,
                    organisation_id=booking.organisation_id,
                    type=EventType.MISSION_SCHEDULE_CHANGED,
                    actor=actor.label,
                    actor_user=actor.user,
                    reason=change.reason,
                    data={
                        "schedule_change": change.pk,
                        "offer": offer.pk,
                        "deadline": _iso(deadline),
                        "choices": [str(choice) for choice in OfferChoice],
                        **window,
                    },
                    created_at=now,
                )
                for booking, offer in zip(bookings, offers, strict=True)
            ]
        )
        _queue_change_notices(change, bookings)
    logger.info(
        "schedule change %s: %s offers", change.pk, len(offers), extra={"offers": len(offers)}
    )
    return offers


def _supersede_open_offers(
    booking_ids: list[int], *, change: ScheduleChange, actor: Actor, now: datetime
) -> None:
    older = list(
        ReaccommodationOffer.objects.filter(booking_id__in=booking_ids, status=OfferStatus.OPEN)
        .select_related("booking")
        .order_by("pk")
        .select_for_update(of=("self",))
    )
    _default(
        older,
        actor=actor,
        reason="A newer schedule change replaced this offer.",
        data={"superseded_by_change": change.pk},
        now=now,
    )


def _default(
    offers: list[ReaccommodationOffer],
    *,
    actor: Actor,
    reason: str,
    data: dict[str, object],
    now: datetime,
) -> None:
    """Close ``offers`` (open, locked with their bookings) as defaulted: the bookings stay.
    One UPDATE, and one INSERT of ``offer.defaulted`` events on the bookings still live."""
    if not offers:
        return
    ReaccommodationOffer.objects.filter(pk__in=[offer.pk for offer in offers]).update(
        status=OfferStatus.DEFAULTED, answered_at=now, answered_by=actor.label
    )
    BookingEvent.objects.bulk_create(
        [
            BookingEvent(
                booking_id=offer.booking_id,
                organisation_id=offer.booking.organisation_id,
                type=EventType.OFFER_DEFAULTED,
                actor=actor.label,
                actor_user=actor.user,
                reason=reason,
                data={"offer": offer.pk, "schedule_change": offer.schedule_change_id, **data},
                created_at=now,
            )
            for offer in offers
            if offer.booking.status in LIVE_STATUSES
        ]
    )


def _queue_change_notices(change: ScheduleChange, bookings: list[Booking]) -> None:
    """One outbox row per recipient (the web customer who booked, or the organisation's
    notification address: a reseller's desk, a company's contact), listing their bookings."""
    booking_ids: dict[str, list[int]] = defaultdict(list)
    addresses: dict[str, str] = {}
    languages: dict[str, str] = {}
    for booking in bookings:
        for address in booking_recipients(booking):
            key = _address_key(address)
            booking_ids[key].append(booking.pk)
            addresses.setdefault(key, address)
            languages.setdefault(key, _language_of(booking))
    for key, ids in booking_ids.items():
        outbox_write(
            topic=SCHEDULE_CHANGE_TOPIC,
            payload={
                "schedule_change_id": change.pk,
                "recipient": addresses[key],
                "language": languages[key],
                "booking_ids": ids,
            },
            dedupe_key=f"{SCHEDULE_CHANGE_TOPIC}:{change.pk}:{key}",
        )


@outbox_handler(SCHEDULE_CHANGE_TOPIC)
def handle_schedule_change_notice(message: OutboxMessage) -> None:
    payload = message.payload
    change = ScheduleChange.objects.select_related("mission").get(pk=payload["schedule_change_id"])
    offers = list(
        ReaccommodationOffer.objects.filter(
            schedule_change=change, booking_id__in=payload["booking_ids"]
        )
        .select_related("booking__slot_class__mission")
        .order_by("booking__reference")
    )
    if not offers:
        return
    mission = change.mission
    with translation.override(payload.get("language") or "en"):
        context = {
            "change": change,
            "mission": mission,
            "offers": offers,
            "deadline": min(offer.deadline for offer in offers),
            "site_url": settings.SITE_URL,
        }
        body = render_to_string("emails/offers_schedule_changed.txt", context)
        subject = ngettext(
            "Mission %(code)s has a new launch window: your booking's choices",
            "Mission %(code)s has a new launch window: your %(n)s bookings' choices",
            len(offers),
        ) % {"code": mission.code, "n": len(offers)}
    EmailMessage(
        subject=f"[Moonslot] {subject}",
        body=body,
        to=[payload["recipient"]],
        headers={
            "X-Moonslot-Event": EventType.MISSION_SCHEDULE_CHANGED,
            "X-Moonslot-Mission": mission.code,
        },
    ).send()


# --- answering ---------------------------------------------------------------------------


def _target_class(slot_class_id: int) -> SlotClass:
    """The class to move to, with what ``check_target`` reads. Raises
    ``SlotClass.DoesNotExist``."""
    return (
        SlotClass.objects.select_related("mission", "position")
        .prefetch_related("prices")
        .get(pk=slot_class_id)
    )


def _lock_booking(
    booking_id: int, *, target_id: int | None = None
) -> tuple[Booking, dict[int, SlotClass]]:
    """Lock the booking's slot class and ``target_id``'s in pk order, then the booking
    (lock order). Returns the booking (class, mission and payload joined) and the locked
    classes by pk.

    Raises ``InvalidTransition`` if the booking moved to another class between the read of
    its class and the lock (a concurrent answer): the caller may simply try again."""
    class_id = Booking.objects.values_list("slot_class_id", flat=True).get(pk=booking_id)
    wanted = {class_id} if target_id is None else {class_id, target_id}
    classes = {c.pk: c for c in slot_class_qs_for_update().filter(pk__in=wanted)}
    booking = (
        booking_qs_for_update()
        .select_related("slot_class__mission", "payload", "organisation", "created_by")
        .get(pk=booking_id)
    )
    if booking.slot_class_id != class_id:
        raise InvalidTransition(
            from_status=booking.status,
            to_status=booking.status,
            message=_("This booking was moved a moment ago; look at it again and retry."),
        )
    return booking, classes


def _offer_for_update(offer_id: int) -> ReaccommodationOffer:
    return (
        ReaccommodationOffer.objects.select_for_update(of=("self",))
        .select_related("schedule_change")
        .get(pk=offer_id)
    )


def _booking_of_offer(offer_id: int) -> int:
    """Raises ``ReaccommodationOffer.DoesNotExist``."""
    return int(ReaccommodationOffer.objects.values_list("booking_id", flat=True).get(pk=offer_id))


def _refuse_unless_answerable(
    offer: ReaccommodationOffer, booking: Booking, *, now: datetime
) -> None:
    """Raises ``InvalidTransition`` (``invalid_state``) for an answered or lapsed offer, a
    booking no longer live, or a mission already launched."""
    status = booking.status_at(now)
    message = None
    if offer.status != OfferStatus.OPEN:
        message = _("This offer was already answered: %(answer)s.") % {
            "answer": OfferStatus(offer.status).label
        }
    elif offer.deadline <= now:
        message = _("The deadline to answer has passed: the booking stays on its mission.")
    elif status not in LIVE_STATUSES:
        message = _("This booking is %(status)s: the offer no longer applies.") % {
            "status": BookingStatus(status).label
        }
    elif booking.slot_class.mission.status not in MOVABLE_MISSION_STATUSES:
        message = _("The mission has launched: the booking can no longer change.")
    if message:
        raise InvalidTransition(from_status=status, to_status=status, message=message)


def _close(
    offer: ReaccommodationOffer,
    status: str,
    *,
    actor: Actor,
    now: datetime,
    target: SlotClass | None = None,
) -> None:
    offer.status = status
    offer.answered_at = now
    offer.answered_by = actor.label
    offer.target_slot_class = target
    offer.save(update_fields=["status", "answered_at", "answered_by", "target_slot_class"])


def _notify_answer(booking: Booking, event: BookingEvent, kind: str) -> None:
    outbox_write(
        topic=ANSWER_TOPIC,
        payload={"booking_id": booking.pk, "event_id": event.pk, "kind": kind},
        dedupe_key=f"{ANSWER_TOPIC}:{event.pk}",
    )


def offer_accept_stay(
    *, offer_id: int, actor: Actor, reason: str = "", now: datetime | None = None
) -> ReaccommodationOffer:
    """Keep the booking on its rescheduled mission. Repeating it (or answering stay after
    the deadline, which stays anyway) returns the offer unchanged.

    Raises ``ReaccommodationOffer.DoesNotExist``; ``InvalidTransition`` if the offer was
    answered otherwise or the booking is no longer live."""
    now = now or timezone.now()
    with transaction.atomic():
        booking = (
            booking_qs_for_update()
            .select_related("slot_class__mission")
            .get(pk=_booking_of_offer(offer_id))
        )
        offer = _offer_for_update(offer_id)
        if offer_status_at(offer, now) in (OfferStatus.STAYED, OfferStatus.DEFAULTED):
            return offer
        _refuse_unless_answerable(offer, booking, now=now)
        _close(offer, OfferStatus.STAYED, actor=actor, now=now)
        event = _event(
            booking,
            type=EventType.OFFER_STAYED,
            actor=actor,
            reason=reason,
            data={"offer": offer.pk, "schedule_change": offer.schedule_change_id},
            now=now,
        )
        _notify_answer(booking, event, "stayed")
    return offer


def _move(
    booking: Booking,
    *,
    classes: dict[int, SlotClass],
    target: SlotClass,
    now: datetime,
) -> SlotClass:
    """Move ``booking`` (locked, live) into ``target`` (loaded by ``_target_class``; its row
    is locked in ``classes``): room is taken in the target and given back in the source in
    one transaction, then offered to the source's waitlist. Returns the source class.

    Raises what ``check_target`` raises, and ``InsufficientCapacity``."""
    check_target(booking, target, now=now)
    source = classes[booking.slot_class_id]
    locked_target = classes[target.pk]
    for slot_class in sorted(classes.values(), key=lambda c: c.pk):
        _release_lapsed_holds(slot_class, now=now)
    available_g = locked_target.capacity_g - locked_target.taken_g
    available_units = (
        (locked_target.capacity_units or 0) - locked_target.taken_units
        if locked_target.is_per_unit
        else None
    )
    if booking.mass_g > available_g or (
        available_units is not None and (booking.quantity or 0) > available_units
    ):
        raise InsufficientCapacity(available_g=available_g, available_units=available_units)
    source.taken_g -= booking.mass_g
    source.taken_units -= booking.quantity or 0
    locked_target.taken_g += booking.mass_g
    locked_target.taken_units += booking.quantity or 0
    source.save_counters()
    locked_target.save_counters()
    booking.slot_class = target
    booking.save(update_fields=["slot_class", "updated_at"])
    waitlist_offer_freed_capacity(source, now=now)
    if booking.status == BookingStatus.CONFIRMED:  # it leaves one manifest for another
        for mission_id in {source.mission_id, target.mission_id}:
            manifest_request_rebuild(
                mission_id=mission_id, reason=f"booking {booking.reference} moved"
            )
    return source


def _move_data(source: SlotClass, target: SlotClass, mission_code: str) -> dict[str, object]:
    return {
        "from_slot_class": source.pk,
        "from_mission": mission_code,
        "to_slot_class": target.pk,
        "to_mission": target.mission.code,
    }


def offer_accept_move(
    *,
    offer_id: int,
    target_slot_class_id: int,
    actor: Actor,
    reason: str = "",
    now: datetime | None = None,
) -> ReaccommodationOffer:
    """Move the booking to ``target_slot_class_id`` on another mission, free of charge: the
    reference, price and currency are kept (a target priced otherwise does not change them).
    Capacity moves atomically under both classes' locks (in pk order), and the source's
    freed room goes to its waitlist. Repeating the same move returns the offer unchanged.

    Raises ``ReaccommodationOffer.DoesNotExist``, ``SlotClass.DoesNotExist``,
    ``BookingValidationError`` (on ``slot_class``: same mission, other destination or kind,
    outside the target's limits), ``ChannelNotAllowed``, ``SalesClosed``,
    ``CurrencyNotOffered``, ``InsufficientCapacity``, ``InvalidTransition``."""
    now = now or timezone.now()
    target = _target_class(target_slot_class_id)
    with transaction.atomic():
        booking, classes = _lock_booking(_booking_of_offer(offer_id), target_id=target.pk)
        offer = _offer_for_update(offer_id)
        if offer.status == OfferStatus.MOVED and offer.target_slot_class_id == target.pk:
            return offer
        _refuse_unless_answerable(offer, booking, now=now)
        mission_code = booking.slot_class.mission.code
        source = _move(booking, classes=classes, target=target, now=now)
        _close(offer, OfferStatus.MOVED, actor=actor, now=now, target=target)
        event = _event(
            booking,
            type=EventType.OFFER_MOVED,
            actor=actor,
            reason=reason or _("Moved after the schedule change, free of charge."),
            data={"offer": offer.pk, **_move_data(source, target, mission_code)},
            now=now,
        )
        _notify_answer(booking, event, "moved")
    return offer


def booking_cancel_full_refund(
    *, booking_id: int, actor: Actor, reason: str = "", now: datetime | None = None
) -> Booking:
    """Cancel a held or confirmed booking and give back everything paid, whatever the
    cancellation policy says (the airline's answer to its own schedule change): the refund
    due is the whole price of a confirmed booking (nothing was paid on a hold). Capacity is
    free at once and offered to the class's waitlist; the card refund is queued in the same
    transaction (``bookings.payments`` sends it, once, and its sweep retries it); a booking
    confirmed on account is owed the same amount as a credit.

    Cancelling a cancelled or expired booking (a lapsed hold included) returns it unchanged.
    Raises ``InvalidTransition`` for a status that cannot be cancelled (flown)."""
    now = now or timezone.now()
    with transaction.atomic():
        booking, classes = _lock_booking(booking_id)
        slot_class = classes[booking.slot_class_id]
        _release_lapsed_holds(slot_class, now=now)
        booking.refresh_from_db(fields=["status", "expired_at"])
        if booking.status in (BookingStatus.CANCELLED, BookingStatus.EXPIRED):
            return booking
        if BookingStatus.CANCELLED not in BOOKING_TRANSITIONS[booking.status]:
            raise InvalidTransition(from_status=booking.status, to_status=BookingStatus.CANCELLED)
        refund = cancel_refund(booking)
        previous = booking.status
        booking.status = BookingStatus.CANCELLED
        booking.cancelled_at = now
        booking.refund_amount = refund.amount
        booking.save(update_fields=["status", "cancelled_at", "refund_amount", "updated_at"])
        slot_class.taken_g -= booking.mass_g
        slot_class.taken_units -= booking.quantity or 0
        slot_class.save_counters()
        waitlist_offer_freed_capacity(slot_class, now=now)
        event = _event(
            booking,
            type=EventType.BOOKING_CANCELLED,
            actor=actor,
            from_status=previous,
            to_status=BookingStatus.CANCELLED,
            reason=reason,
            data={"refund": refund.as_dict(), "full_refund": True},
            now=now,
        )
        if refund.amount:
            # The payments module's own cancellation refund: it pays ``refund_amount`` back
            # across the booking's captured card payments, once (and its sweep retries it).
            outbox_write(
                topic="payment.cancellation_refund",
                payload={"booking_id": booking.pk},
                dedupe_key=f"payment.cancellation_refund:{booking.pk}",
            )
        _notify_answer(booking, event, "cancelled")
    logger.info("booking %s cancelled with a full refund", booking.reference)
    return booking


def offer_accept_cancel(
    *, offer_id: int, actor: Actor, reason: str = "", now: datetime | None = None
) -> ReaccommodationOffer:
    """Cancel the booking with everything paid given back (``booking_cancel_full_refund``).
    Repeating it returns the offer unchanged.

    Raises ``ReaccommodationOffer.DoesNotExist``, ``InvalidTransition``."""
    now = now or timezone.now()
    with transaction.atomic():
        booking, _classes = _lock_booking(_booking_of_offer(offer_id))
        offer = _offer_for_update(offer_id)
        if offer.status == OfferStatus.CANCELLED:
            return offer
        _refuse_unless_answerable(offer, booking, now=now)
        booking_cancel_full_refund(
            booking_id=booking.pk,
            actor=actor,
            reason=reason or _("Cancelled after the schedule change, with a full refund."),
            now=now,
        )
        _close(offer, OfferStatus.CANCELLED, actor=actor, now=now)
        _event(
            booking,
            type=EventType.OFFER_CANCELLED,
            actor=actor,
            data={"offer": offer.pk, "schedule_change": offer.schedule_change_id},
            now=now,
        )
    return offer


def offer_answer(
    *,
    offer_id: int,
    choice: str,
    actor: Actor,
    target_slot_class_id: int | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> ReaccommodationOffer:
    """One entry point for the site, the API and the admin: ``choice`` is an
    ``OfferChoice``; ``move`` needs ``target_slot_class_id``; ``reason`` goes to the event
    (sales note how the customer answered). Raises what the chosen answer raises, and
    ``BookingValidationError`` for a move without a target."""
    if choice == OfferChoice.STAY:
        return offer_accept_stay(offer_id=offer_id, actor=actor, reason=reason, now=now)
    if choice == OfferChoice.CANCEL:
        return offer_accept_cancel(offer_id=offer_id, actor=actor, reason=reason, now=now)
    if choice == OfferChoice.MOVE:
        if target_slot_class_id is None:
            raise BookingValidationError({"slot_class": [_("Choose the class to move to.")]})
        return offer_accept_move(
            offer_id=offer_id,
            target_slot_class_id=target_slot_class_id,
            actor=actor,
            reason=reason,
            now=now,
        )
    raise ValueError(f"unknown choice {choice!r}")


def offers_default_due(*, now: datetime | None = None, batch: int = 500) -> int:
    """The beat job: offers still open at their deadline default to staying (status
    ``defaulted``, an ``offer.defaulted`` event on live bookings). Each batch locks its
    bookings first (lock order), skipping those an answer is holding right now: that answer
    decides, and a skipped offer still open is taken by the next run. Safe to run twice or
    concurrently. Returns how many offers defaulted."""
    now = now or timezone.now()
    due = list(
        ReaccommodationOffer.objects.filter(status=OfferStatus.OPEN, deadline__lte=now)
        .order_by("pk")
        .values_list("pk", "booking_id")
    )
    total = 0
    for start in range(0, len(due), batch):
        chunk = due[start : start + batch]
        with transaction.atomic():
            locked = set(
                Booking.objects.filter(pk__in={booking_id for _pk, booking_id in chunk})
                .order_by("pk")
                .select_for_update(of=("self",), skip_locked=True)
                .values_list("pk", flat=True)
            )
            offers = list(
                ReaccommodationOffer.objects.filter(
                    pk__in=[pk for pk, booking_id in chunk if booking_id in locked],
                    status=OfferStatus.OPEN,
                    deadline__lte=now,
                )
                .select_related("booking")
                .order_by("pk")
                .select_for_update(of=("self",))
            )
            _default(
                offers,
                actor=DEADLINE_ACTOR,
                reason="No answer by the deadline: the booking stays on its mission.",
                data={},
                now=now,
            )
            total += len(offers)
    return total


# --- rebooking: the customer's payload will not be ready -----------------------------------


@dataclass(frozen=True)
class Rebooking:
    booking: Booking
    fee: Money


def booking_rebook(
    *,
    booking_id: int,
    target_slot_class_id: int,
    actor: Actor,
    now: datetime | None = None,
) -> Rebooking:
    """Move a confirmed booking to a class on a later mission with room, carrying everything
    paid, for the source class's rebooking fee (``rebooking_fee``), recorded as owed in the
    ``booking.rebooked`` event (``data["fee"]``). The reference, price and currency are
    kept; capacity moves as in ``offer_accept_move``. Repeating the same rebooking returns
    it unchanged (with the fee first recorded).

    Raises ``SlotClass.DoesNotExist``, ``InvalidTransition`` (not confirmed, an open
    schedule-change offer to answer instead, the mission launched),
    ``BookingValidationError`` (on ``slot_class``: not a later mission, or as in
    ``check_target``), ``ChannelNotAllowed``, ``SalesClosed``, ``CurrencyNotOffered``,
    ``InsufficientCapacity``."""
    now = now or timezone.now()
    target = _target_class(target_slot_class_id)
    with transaction.atomic():
        booking, classes = _lock_booking(booking_id, target_id=target.pk)
        if booking.slot_class_id == target.pk:
            last = (
                BookingEvent.objects.filter(booking=booking, type=EventType.BOOKING_REBOOKED)
                .order_by("-pk")
                .values_list("data", flat=True)
                .first()
            )
            if last and last.get("to_slot_class") == target.pk:
                fee = last["fee"]
                return Rebooking(booking=booking, fee=Money(fee["amount"], fee["currency"]))
        status = booking.status_at(now)
        source = booking.slot_class
        refusal = None
        if status != BookingStatus.CONFIRMED:
            refusal = _("Only a confirmed booking can move to a later mission; this one is %(s)s.")
            refusal %= {"s": BookingStatus(status).label}
        elif source.mission.status not in MOVABLE_MISSION_STATUSES:
            refusal = _("The mission has launched: the booking can no longer change.")
        elif booking.offers.filter(status=OfferStatus.OPEN, deadline__gt=now).exists():
            refusal = _(
                "This booking has an open offer after its mission's schedule change: answer "
                "it instead, moving that way is free of charge."
            )
        if refusal:
            raise InvalidTransition(from_status=status, to_status=status, message=refusal)
        if target.mission.launch_window_start <= source.mission.launch_window_start:
            raise BookingValidationError(
                {
                    "slot_class": [
                        _("Choose a class on a mission that launches after %(code)s.")
                        % {"code": source.mission.code}
                    ]
                }
            )
        fee = rebooking_fee(booking)
        mission_code = source.mission.code
        moved_from = _move(booking, classes=classes, target=target, now=now)
        event = _event(
            booking,
            type=EventType.BOOKING_REBOOKED,
            actor=actor,
            reason=_("Moved to a later mission at the customer's request."),
            data={
                "fee": fee.as_dict(),
                "fee_percent": source.rebooking_fee_percent,
                **_move_data(moved_from, target, mission_code),
            },
            now=now,
        )
        _notify_answer(booking, event, "rebooked")
    return Rebooking(booking=booking, fee=fee)


# --- e-mail after an answer -------------------------------------------------------------

ANSWER_SUBJECTS = {
    "stayed": gettext_lazy("Booking %(ref)s stays on mission %(code)s"),
    "moved": gettext_lazy("Booking %(ref)s has moved to mission %(code)s"),
    "cancelled": gettext_lazy("Booking %(ref)s is cancelled with a full refund"),
    "rebooked": gettext_lazy("Booking %(ref)s has moved to mission %(code)s"),
}


@outbox_handler(ANSWER_TOPIC)
def handle_answer_notice(message: OutboxMessage) -> None:
    kind = message.payload["kind"]
    booking = Booking.objects.select_related(
        "organisation", "created_by", "slot_class__mission"
    ).get(pk=message.payload["booking_id"])
    event = BookingEvent.objects.filter(pk=message.payload.get("event_id")).first()
    recipients = booking_recipients(booking)
    if not recipients or kind not in ANSWER_SUBJECTS:
        return
    fee = None
    if event is not None and isinstance(event.data.get("fee"), dict):
        fee = Money(int(event.data["fee"]["amount"]), str(event.data["fee"]["currency"]))
    with translation.override(_language_of(booking)):
        context = {
            "booking": booking,
            "kind": kind,
            "fee": fee,
            "site_url": settings.SITE_URL,
        }
        body = render_to_string("emails/offer_answered.txt", context)
        subject = "[Moonslot] " + str(ANSWER_SUBJECTS[kind]) % {
            "ref": booking.reference,
            "code": booking.slot_class.mission.code,
        }
    EmailMessage(
        subject=subject,
        body=body,
        to=recipients,
        headers={"X-Moonslot-Booking": booking.reference, "X-Moonslot-Event": f"offer.{kind}"},
    ).send()


__all__ = [
    "OfferChoice",
    "OfferSummary",
    "Rebooking",
    "booking_cancel_full_refund",
    "booking_rebook",
    "cancel_refund",
    "check_target",
    "move_targets",
    "offer_accept_cancel",
    "offer_accept_move",
    "offer_accept_stay",
    "offer_answer",
    "offer_deadline",
    "offer_status_at",
    "offer_summaries",
    "offers_create_for_change",
    "offers_default_due",
    "open_offer",
    "rebooking_fee",
]
