"""Waitlists: freed capacity goes to the first waiting entries that fit, as offer holds.

Interface used by every path that frees capacity (cancel, expiry, a move to another
mission): call ``waitlist_offer_freed_capacity`` inside the same transaction, while holding
the slot class's row lock, after the counters were lowered. The offer holds it places take
the freed capacity at once, so no new hold can get it first.

How an entry moves (``WaitlistStatus``)::

    waiting ──capacity freed, the entry fits──▶ offered (a real hold, ``offer_booking``)
    offered ──the hold is confirmed (paid, on account, by sales)──▶ booked
    offered ──the hold lapses unanswered──▶ lapsed      (its capacity passes to the next entry)
    offered ──the hold is cancelled (declined)──▶ withdrawn
    waiting ──withdrawn by the customer or reseller──▶ withdrawn

Every change of an entry's status happens under its slot class's row lock, so the queue is
read and served by one transaction at a time and needs no lock of its own. Offered entries
whose hold has since been confirmed, cancelled or expired are written as such lazily: at the
next call of ``waitlist_offer_freed_capacity`` for the class (every expiry sweep, cancel and
``waitlists_sweep``), and readers see the right status before that from the
``live_status`` annotation (``with_live_status``), exactly as a lapsed hold reads expired
before the sweep writes it.

The offer hold is created here rather than through ``booking_hold``, which takes the class
lock itself, releases lapsed holds and refuses what the queue should decide. It reuses the
private helpers of ``bookings.services`` (``_create_with_reference``, ``_event``,
``_notify``) so an offer hold is written exactly as an ordinary hold is: the same reference
rule, the same ``booking.held`` event and the same outbox notification. ``services`` is
imported as a module because it imports this one (it calls the entry point): attribute
access at call time keeps the import cycle harmless whichever module loads first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Organisation, User
from bookings import services
from bookings.exceptions import (
    BookingError,
    BookingValidationError,
    ChannelNotAllowed,
    CurrencyNotOffered,
    InvalidTransition,
    SalesClosed,
)
from bookings.models import (
    Booking,
    BookingStatus,
    EventType,
    PayloadDeclaration,
    WaitlistEntry,
    WaitlistStatus,
)
from bookings.validation import check_quantity
from marketplace.locks import slot_class_qs_for_update
from marketplace.models import Channel, SlotClass

# An offer arrives unannounced (by e-mail or webhook), so its window is the class's hold time
# for the entry's channel, but at least OFFER_WINDOW_MIN (a web hold's 20 minutes would lapse
# before most people read the e-mail) and at most OFFER_WINDOW_MAX (an API hold's days would
# keep the next entry waiting for them).
OFFER_WINDOW_MIN = timedelta(hours=2)
OFFER_WINDOW_MAX = timedelta(hours=24)
# One organisation may stand in a class's queue a few times (different sizes), not flood it.
MAX_OPEN_ENTRIES_PER_CLASS = 5
WAITLIST_OFFERED = "waitlist.offered"
OPEN_STATUSES = (WaitlistStatus.WAITING, WaitlistStatus.OFFERED)


class CapacityAvailable(BookingError):
    """The class can take the request now: place a hold instead of joining its waitlist."""

    code = "capacity_available"

    def __init__(self, *, available_g: int, available_units: int | None = None) -> None:
        self.available_g = available_g
        self.available_units = available_units
        super().__init__(
            _("This class has room for that request now: place a hold instead of waiting.")
        )


def _actor() -> services.Actor:
    return services.Actor.system("system:waitlist")


def offer_window(slot_class: SlotClass, channel: str) -> timedelta:
    own = timedelta(minutes=slot_class.hold_minutes_for(channel))
    return min(max(own, OFFER_WINDOW_MIN), OFFER_WINDOW_MAX)


def _free(slot_class: SlotClass) -> tuple[int, int | None]:
    """Free mass (and units) by the counters of a locked class."""
    free_units = (
        (slot_class.capacity_units or 0) - slot_class.taken_units
        if slot_class.is_per_unit
        else None
    )
    return slot_class.capacity_g - slot_class.taken_g, free_units


# --- joining and withdrawing -------------------------------------------------------------


def waitlist_join(
    *,
    slot_class_id: int,
    organisation: Organisation,
    channel: str,
    actor: services.Actor,
    currency: str,
    mass_g: int | None = None,
    quantity: int | None = None,
    reuse_identical: bool = False,
    now: datetime | None = None,
) -> WaitlistEntry:
    """Join a slot class's waitlist for a mass (per-kg classes) or a quantity (per-unit).

    Checked like a hold (channel, sales window, currency, the class's minimum, maximum and
    step), then under the class's row lock: lapsed holds are released first (which may
    serve the queue), and a request the class can take now is refused, so nobody waits for
    capacity that is free. Raises ``SlotClass.DoesNotExist``, ``ChannelNotAllowed``,
    ``SalesClosed``, ``CurrencyNotOffered``, ``BookingValidationError`` (also for too many
    open entries of the organisation in the class) and ``CapacityAvailable``. Not
    idempotent by itself: the API's Idempotency-Key makes retries safe; the website passes
    ``reuse_identical`` so a resubmitted form returns the organisation's open entry for the
    same amount and currency instead of queueing it twice.
    """
    now = now or timezone.now()
    slot_class = (
        SlotClass.objects.select_related("mission").prefetch_related("prices").get(pk=slot_class_id)
    )
    if not slot_class.sells_on(channel):
        raise ChannelNotAllowed(
            _("This class is not sold through the %(channel)s.")
            % {"channel": Channel(channel).label}
        )
    if not slot_class.mission.is_bookable(now):
        raise SalesClosed(_("Mission %(code)s is not on sale.") % {"code": slot_class.mission.code})
    if slot_class.price_for(currency) is None:
        offered = ", ".join(sorted(p.currency for p in slot_class.prices.all()))
        raise CurrencyNotOffered(
            _("%(currency)s is not offered for this class (offered: %(offered)s).")
            % {"currency": currency, "offered": offered}
        )
    mass_g, quantity, errors = check_quantity(slot_class, mass_g=mass_g, quantity=quantity)
    if errors:
        raise BookingValidationError(errors)

    with transaction.atomic():
        locked = slot_class_qs_for_update().get(pk=slot_class_id)
        services._release_lapsed_holds(locked, now=now)
        free_g, free_units = _free(locked)
        if mass_g <= free_g and (free_units is None or (quantity or 0) <= free_units):
            raise CapacityAvailable(available_g=free_g, available_units=free_units)
        open_entries_qs = WaitlistEntry.objects.filter(
            slot_class_id=slot_class_id, organisation=organisation, status__in=OPEN_STATUSES
        )
        if reuse_identical:
            same = open_entries_qs.filter(
                mass_g=mass_g, quantity=quantity, currency=currency, channel=channel
            ).first()
            if same is not None:
                return same
        open_entries = open_entries_qs.count()
        if open_entries >= MAX_OPEN_ENTRIES_PER_CLASS:
            raise BookingValidationError(
                {
                    "slot_class": [
                        _("You already have %(n)s open entries on this class's waitlist.")
                        % {"n": open_entries}
                    ]
                }
            )
        return WaitlistEntry.objects.create(
            slot_class=locked,
            organisation=organisation,
            created_by=actor.user,
            api_key=actor.api_key,
            channel=channel,
            mass_g=mass_g,
            quantity=quantity,
            currency=currency,
            status=WaitlistStatus.WAITING,
            created_at=now,
        )


def waitlist_withdraw(
    *, entry_id: int, actor: services.Actor, now: datetime | None = None
) -> WaitlistEntry:
    """Leave the waitlist. A waiting entry is withdrawn; an offered one declines its offer:
    the offer hold is cancelled and its capacity passes on to the next entries that fit.
    Withdrawing a withdrawn entry returns it unchanged.

    Raises ``WaitlistEntry.DoesNotExist``, and ``InvalidTransition`` (invalid_state) for an
    entry already booked (cancel the booking instead) or lapsed.
    """
    now = now or timezone.now()
    with transaction.atomic():
        slot_class_id = WaitlistEntry.objects.values_list("slot_class_id", flat=True).get(
            pk=entry_id
        )
        locked = slot_class_qs_for_update().get(pk=slot_class_id)
        # Brings the stored statuses up to date (a confirmed offer is booked, a lapsed one
        # lapsed) before deciding what withdrawing means.
        services._release_lapsed_holds(locked, now=now)
        _settle_offers(locked)
        entry = WaitlistEntry.objects.get(pk=entry_id)
        if entry.status == WaitlistStatus.WITHDRAWN:
            return entry
        if entry.status == WaitlistStatus.WAITING:
            entry.status = WaitlistStatus.WITHDRAWN
            entry.save(update_fields=["status"])
            return entry
        if entry.status != WaitlistStatus.OFFERED or entry.offer_booking_id is None:
            raise InvalidTransition(
                from_status=entry.status,
                to_status=WaitlistStatus.WITHDRAWN,
                message=_("This waitlist entry is %(status)s and can no longer be withdrawn.")
                % {"status": entry.status},
            )
        # The offer is still a live hold (the settling above wrote every other outcome).
        # Cancelling it frees its capacity, and booking_cancel serves the queue with it.
        services.booking_cancel(
            booking_id=entry.offer_booking_id,
            actor=actor,
            reason=_("Waitlist offer declined."),
            now=now,
        )
        entry.refresh_from_db()
        if entry.status == WaitlistStatus.OFFERED:  # settled already by booking_cancel's call
            entry.status = WaitlistStatus.WITHDRAWN
            entry.save(update_fields=["status"])
        return entry


# --- serving the queue -------------------------------------------------------------------


def _settle_offers(slot_class: SlotClass) -> int:
    """Write the outcome of offers whose hold is no longer held: confirmed at some point →
    booked, cancelled → withdrawn (declined), expired or gone → lapsed. Returns how many."""
    rows = list(
        WaitlistEntry.objects.filter(slot_class_id=slot_class.pk, status=WaitlistStatus.OFFERED)
        .exclude(offer_booking__status=BookingStatus.HELD)
        .values_list("pk", "offer_booking__status", "offer_booking__confirmed_at")
    )
    outcome: dict[str, list[int]] = {}
    for entry_id, booking_status, confirmed_at in rows:
        status: str
        if confirmed_at is not None:
            status = WaitlistStatus.BOOKED
        elif booking_status == BookingStatus.CANCELLED:
            status = WaitlistStatus.WITHDRAWN
        else:
            status = WaitlistStatus.LAPSED
        outcome.setdefault(status, []).append(entry_id)
    for settled, ids in outcome.items():
        WaitlistEntry.objects.filter(pk__in=ids, status=WaitlistStatus.OFFERED).update(
            status=settled
        )
    return len(rows)


def waitlist_offer_freed_capacity(slot_class: SlotClass, *, now: datetime) -> int:
    """Offer the class's free capacity to its waiting entries, in order. The caller holds the
    class's row lock and passes the locked instance (its counters current). Returns how
    many offers were made.

    First writes the outcome of earlier offers (``_settle_offers``: a lapsed offer's entry
    becomes ``lapsed``). Then, in order (created_at, pk), each waiting entry that fits what is
    still free gets an offer hold; an entry that does not fit is skipped (a smaller one after
    it may fit) and keeps its place. Entries are also skipped while the mission is not on
    sale, when the class no longer sells on the entry's channel or in its currency, or when
    the hold would pass the organisation's cap on unpaid held mass (read, not locked: taking
    an organisation lock here could invert the lock order of a cancel that already holds a
    booking). The counters are raised under the class lock and their ``CheckConstraint``
    stands behind them, so the queue can never oversell.
    """
    _settle_offers(slot_class)
    free_g, free_units = _free(slot_class)
    if free_g <= 0 or (free_units is not None and free_units <= 0):
        return 0
    candidates = list(
        WaitlistEntry.objects.filter(
            slot_class_id=slot_class.pk, status=WaitlistStatus.WAITING, mass_g__lte=free_g
        )
        .select_related("organisation")
        .order_by("created_at", "pk")
    )
    if not candidates:
        return 0
    mission = slot_class.mission
    if not mission.is_bookable(now):
        return 0
    prefetch_related_objects([slot_class], "prices")
    held_by_org: dict[int, int] = {}
    offers = 0
    for entry in candidates:
        if entry.mass_g > free_g or (free_units is not None and (entry.quantity or 0) > free_units):
            continue
        if not slot_class.sells_on(entry.channel) or slot_class.price_for(entry.currency) is None:
            continue
        if not _within_hold_cap(entry, held_by_org, now=now):
            continue
        _place_offer(slot_class, entry, now=now)
        held_by_org[entry.organisation_id] = held_by_org.get(entry.organisation_id, 0)
        held_by_org[entry.organisation_id] += entry.mass_g
        free_g -= entry.mass_g
        if free_units is not None:
            free_units -= entry.quantity or 0
        offers += 1
    if offers:
        slot_class.save_counters()
    return offers


def _within_hold_cap(entry: WaitlistEntry, held_by_org: dict[int, int], *, now: datetime) -> bool:
    cap = entry.organisation.held_mass_cap_g
    if cap is None:
        return True
    if entry.organisation_id not in held_by_org:
        held_by_org[entry.organisation_id] = (
            Booking.objects.live_holds(now)
            .filter(organisation_id=entry.organisation_id)
            .aggregate(total=Sum("mass_g"))["total"]
            or 0
        )
    return held_by_org[entry.organisation_id] + entry.mass_g <= cap


def _place_offer(slot_class: SlotClass, entry: WaitlistEntry, *, now: datetime) -> Booking:
    """The offer hold: written as ``booking_hold`` writes a hold (row, empty declaration,
    ``booking.held`` event, outbox notification), plus a ``waitlist.offered`` event with the
    deadline, and the locked class's counters raised (saved once by the caller)."""
    price = slot_class.total_price(
        currency=entry.currency, mass_g=entry.mass_g, quantity=entry.quantity
    )
    expires_at = now + offer_window(slot_class, entry.channel)
    actor = _actor()
    booking = services._create_with_reference(
        organisation_id=entry.organisation_id,
        created_by_id=entry.created_by_id,
        api_key_id=entry.api_key_id,
        channel=entry.channel,
        slot_class=slot_class,
        mass_g=entry.mass_g,
        quantity=entry.quantity,
        currency=entry.currency,
        price_amount=price.amount,
        status=BookingStatus.HELD,
        hold_expires_at=expires_at,
        created_at=now,
    )
    PayloadDeclaration.objects.create(booking=booking)
    held = services._event(
        booking,
        type=EventType.BOOKING_HELD,
        actor=actor,
        to_status=BookingStatus.HELD,
        reason=_("Offered from the waitlist."),
        data={
            "mass_g": entry.mass_g,
            "quantity": entry.quantity,
            "price": price.as_dict(),
            "waitlist_entry": entry.pk,
        },
        now=now,
    )
    services._event(
        booking,
        type=WAITLIST_OFFERED,
        actor=actor,
        reason=_("Capacity was freed; the waitlist entry gets a hold to confirm."),
        data={
            "waitlist_entry": entry.pk,
            "hold_expires_at": expires_at.isoformat(),
            "mass_g": entry.mass_g,
            "quantity": entry.quantity,
            "price": price.as_dict(),
        },
        now=now,
    )
    services._notify(booking, held)
    slot_class.taken_g += entry.mass_g
    slot_class.taken_units += entry.quantity or 0
    entry.status = WaitlistStatus.OFFERED
    entry.offer_booking = booking
    entry.offered_at = now
    entry.save(update_fields=["status", "offer_booking", "offered_at"])
    return booking


def waitlist_serve(*, slot_class_id: int, now: datetime | None = None) -> int:
    """Serve one class's queue now, under its row lock: release its lapsed holds, settle its
    offers and offer what is free. For the back office after a capacity change. Safe to run
    again. Returns how many offers were made."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = slot_class_qs_for_update().get(pk=slot_class_id)
        services._release_lapsed_holds(locked, now=now)
        return waitlist_offer_freed_capacity(locked, now=now)


def waitlists_sweep(*, now: datetime | None = None) -> int:
    """The beat job: for each class whose queue may be served or has offers to settle, one
    short transaction under its row lock releases lapsed holds and serves the queue. It
    catches what no freeing path saw: capacity raised by sales, a sale reopened, an offer
    confirmed (written as booked). Safe to run twice or concurrently. Returns how many offers
    were made."""
    now = now or timezone.now()
    # Lapsed holds are the expiry sweep's to release (which serves the queue); here, only
    # what no freeing path sees: free capacity by the counters, and offers to settle.
    waiting = WaitlistEntry.objects.filter(
        status=WaitlistStatus.WAITING,
        mass_g__lte=F("slot_class__capacity_g") - F("slot_class__taken_g"),
    )
    settled = WaitlistEntry.objects.filter(status=WaitlistStatus.OFFERED).filter(
        ~Q(offer_booking__status=BookingStatus.HELD)
        | Q(offer_booking__hold_expires_at__lte=now)
        | Q(offer_booking__isnull=True)
    )
    class_ids = sorted(
        set(waiting.values_list("slot_class_id", flat=True).distinct())
        | set(settled.values_list("slot_class_id", flat=True).distinct())
    )
    return sum(waitlist_serve(slot_class_id=class_id, now=now) for class_id in class_ids)


# --- reads -------------------------------------------------------------------------------


def with_live_status(entries: QuerySet[WaitlistEntry], now: datetime) -> QuerySet[WaitlistEntry]:
    """Annotate ``live_status`` (what a reader sees: an offer whose hold was confirmed reads
    booked, lapsed or cancelled reads lapsed or withdrawn, before any settling writes it) and
    ``position`` (1-based place among the class's waiting entries, null unless waiting)."""
    ahead = (
        WaitlistEntry.objects.filter(
            slot_class_id=OuterRef("slot_class_id"), status=WaitlistStatus.WAITING
        )
        .filter(
            Q(created_at__lt=OuterRef("created_at"))
            | Q(created_at=OuterRef("created_at"), pk__lt=OuterRef("pk"))
        )
        .order_by()
        .values("slot_class_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    offered = Q(status=WaitlistStatus.OFFERED)
    return entries.annotate(
        live_status=Case(
            When(offered & Q(offer_booking__confirmed_at__isnull=False), then=Value("booked")),
            When(
                offered & Q(offer_booking__status=BookingStatus.CANCELLED),
                then=Value("withdrawn"),
            ),
            When(
                offered
                & (
                    Q(offer_booking__isnull=True)
                    | Q(offer_booking__status=BookingStatus.EXPIRED)
                    | Q(offer_booking__hold_expires_at__lte=now)
                ),
                then=Value("lapsed"),
            ),
            default=F("status"),
            output_field=CharField(),
        ),
        position=Case(
            When(
                status=WaitlistStatus.WAITING,
                then=Coalesce(Subquery(ahead, output_field=IntegerField()), Value(0)) + 1,
            ),
            default=None,
            output_field=IntegerField(),
        ),
    )


def _for_display(entries: QuerySet[WaitlistEntry], now: datetime) -> QuerySet[WaitlistEntry]:
    return with_live_status(entries, now).select_related(
        "slot_class__mission", "offer_booking", "organisation"
    )


def waitlist_list(
    *, organisation: Organisation, status: str | None = None, now: datetime | None = None
) -> QuerySet[WaitlistEntry]:
    """The organisation's waitlist entries, newest first, with ``live_status`` and
    ``position``; ``status`` filters by the live status."""
    now = now or timezone.now()
    entries = _for_display(WaitlistEntry.objects.filter(organisation=organisation), now)
    if status:
        # An annotation django-stubs cannot see; filtering on it is plain Django.
        entries = entries.filter(live_status=status)  # type: ignore[misc]
    return entries.order_by("-created_at", "-pk")


def waitlist_get(
    *, organisation: Organisation, entry_id: int, now: datetime | None = None
) -> WaitlistEntry:
    """One of the organisation's entries; another organisation's is as absent as a missing
    one (raises ``WaitlistEntry.DoesNotExist`` for both)."""
    entries = WaitlistEntry.objects.filter(organisation=organisation)
    return _for_display(entries, now or timezone.now()).get(pk=entry_id)


def waitlist_list_for_member(*, user: User, now: datetime | None = None) -> QuerySet[WaitlistEntry]:
    """ "My waitlist": the entries of every organisation the user is a member of, newest
    first, with ``live_status``, ``position`` and ``member_role`` (the user's role in the
    entry's organisation)."""
    from accounts.models import Membership

    role = Membership.objects.filter(user=user, organisation=OuterRef("organisation_id"))
    entries = WaitlistEntry.objects.filter(
        organisation_id__in=Membership.objects.filter(user=user).values("organisation_id")
    ).annotate(member_role=Subquery(role.values("role")[:1]))
    return _for_display(entries, now or timezone.now()).order_by("-created_at", "-pk")


__all__ = [
    "CapacityAvailable",
    "offer_window",
    "waitlist_get",
    "waitlist_join",
    "waitlist_list",
    "waitlist_list_for_member",
    "waitlist_offer_freed_capacity",
    "waitlist_serve",
    "waitlist_withdraw",
    "waitlists_sweep",
    "with_live_status",
]
