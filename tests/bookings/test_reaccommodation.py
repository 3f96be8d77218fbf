"""Schedule changes handled like an airline's (bookings.reaccommodation): a change gives every
live booking on the mission one offer, one event and, per recipient, one e-mail; the
customer (on the site), the reseller (API) or sales (admin) answer stay, move or cancel with
a full refund; unanswered offers stay at their deadline; two moves into the last room never
both win."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

import bookings.admin_offers  # noqa: F401 (registers the offers' admin until bookings.admin does)
from accounts.models import MemberRole, Organisation, User
from accounts.services import personal_organisation_create
from bookings import reaccommodation
from bookings.exceptions import (
    BookingValidationError,
    ChannelNotAllowed,
    CurrencyNotOffered,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
)
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    OfferStatus,
    PayloadDeclaration,
    ReaccommodationOffer,
)
from bookings.reaccommodation import (
    OfferChoice,
    booking_cancel_full_refund,
    offer_accept_cancel,
    offer_accept_move,
    offer_accept_stay,
    offer_deadline,
    offers_default_due,
)
from bookings.services import (
    Actor,
    booking_cancel,
    booking_confirm,
    booking_hold,
    bookings_expire,
)
from marketplace.models import Destination, Mission, MissionStatus, ScheduleChange, SlotClass
from marketplace.services import mission_reschedule
from tests.admin.helpers import admin_client_with_mfa
from tests.bookings.api_helpers import EVENTS, keyed_client
from tests.factories import (
    MembershipFactory,
    MissionFactory,
    OrganisationFactory,
    ResellerFactory,
    SlotClassFactory,
    UserFactory,
)
from tests.marketplace.test_admin import change_url, mission_change_data, set_datetime
from tests.openapi_helpers import assert_matches_schema
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    _stripe_sandbox_process,
    held_web_booking,
    sandbox,
    stripe_sandbox,
)

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
PRICE_PER_KG = 180_000_000  # the factory's JPY price per kg


# --- helpers (imported by test_api_offers.py and test_rebooking.py) ----------------------


def web_customer(language: str = "en") -> tuple[User, Organisation]:
    """A signed-up person and their personal organisation (its notification address is
    their own)."""
    user = UserFactory.create(preferred_language=language)
    return user, personal_organisation_create(user=user)


def place(
    slot_class: SlotClass,
    organisation: Organisation,
    *,
    channel: str = "api",
    user: User | None = None,
    mass_g: int = 1000,
    quantity: int | None = None,
    currency: str = "JPY",
    confirm: bool = True,
) -> Booking:
    """A booking through the services, as the channel would make it: confirmed (on account
    for the API, by sales otherwise) unless ``confirm`` is false."""
    actor = Actor.for_user(user) if user is not None else SYSTEM
    booking = booking_hold(
        slot_class_id=slot_class.pk,
        currency=currency,
        organisation=organisation,
        channel=channel,
        actor=actor,
        mass_g=None if slot_class.is_per_unit else mass_g,
        quantity=quantity if slot_class.is_per_unit else None,
    )
    if confirm:
        booking_confirm(booking_id=booking.pk, actor=SYSTEM, on_account=channel == "api")
    booking.refresh_from_db()
    return booking


def slip(mission: Mission, *, days: int = 365, by: User | None = None) -> ScheduleChange:
    """Announce a slip of ``days`` through the catalogue's service (as the admin does)."""
    mission.refresh_from_db()
    return mission_reschedule(
        mission_id=mission.pk,
        new_window_start=mission.launch_window_start + timedelta(days=days),
        new_window_end=mission.launch_window_end + timedelta(days=days),
        reason="The lander's integration slipped.",
        announced_by=by,
    )


def offer_of(booking: Booking) -> ReaccommodationOffer:
    return ReaccommodationOffer.objects.get(booking=booking)


def events_of(booking: Booking, type: str) -> list[BookingEvent]:
    return list(BookingEvent.objects.filter(booking=booking, type=type).order_by("pk"))


def taken(slot_class: SlotClass) -> tuple[int, int]:
    """The class's counters as stored, after the expiry sweep (a move or a cancel releases
    the class's lapsed holds too, so deltas are measured on swept counters)."""
    bookings_expire()
    slot_class.refresh_from_db()
    return slot_class.taken_g, slot_class.taken_units


def text_of(response: Any) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def another_mission_class(**overrides: Any) -> SlotClass:
    """A class on a mission launching later than the factory's default, on sale."""
    launch = timezone.now() + timedelta(days=800)
    mission = MissionFactory.create(
        launch_window_start=launch,
        launch_window_end=launch + timedelta(days=30),
        booking_cutoff=launch - timedelta(days=90),
    )
    return SlotClassFactory.create(mission=mission, **overrides)


@dataclass
class Scene:
    """A mission with bookings from every channel, and ones a change must leave alone."""

    mission: Mission
    deck: SlotClass
    web_user: User
    web_bookings: list[Booking]
    reseller: Organisation
    api_bookings: list[Booking]
    company: Organisation
    sales_booking: Booking
    cancelled: Booking
    lapsed: Booking

    @property
    def live(self) -> list[Booking]:
        return [*self.web_bookings, *self.api_bookings, self.sales_booking]


@pytest.fixture
def scene() -> Scene:
    deck = SlotClassFactory.create(capacity_g=100_000)
    user, personal = web_customer()
    web = [
        place(deck, personal, channel="web", user=user),
        place(deck, personal, channel="web", user=user),
        place(deck, personal, channel="web", user=user, confirm=False),
    ]
    reseller = ResellerFactory.create()
    api = [place(deck, reseller), place(deck, reseller, confirm=False)]
    company = OrganisationFactory.create()
    sales = place(deck, company, channel="admin")
    cancelled = place(deck, personal, channel="web", user=user)
    booking_cancel(booking_id=cancelled.pk, actor=SYSTEM)
    lapsed = place(deck, reseller, confirm=False)
    Booking.objects.filter(pk=lapsed.pk).update(
        hold_expires_at=timezone.now() - timedelta(minutes=1)
    )
    return Scene(
        mission=deck.mission,
        deck=deck,
        web_user=user,
        web_bookings=web,
        reseller=reseller,
        api_bookings=api,
        company=company,
        sales_booking=sales,
        cancelled=cancelled,
        lapsed=lapsed,
    )


# --- a schedule change makes offers ----------------------------------------------------


def test_a_schedule_change_gives_every_live_booking_exactly_one_offer(scene: Scene) -> None:
    change = slip(scene.mission)

    offers = ReaccommodationOffer.objects.filter(schedule_change=change)
    assert sorted(offers.values_list("booking_id", flat=True)) == sorted(b.pk for b in scene.live)
    assert set(offers.values_list("status", flat=True)) == {OfferStatus.OPEN}
    for booking in scene.live:
        (event,) = events_of(booking, EventType.MISSION_SCHEDULE_CHANGED)
        offer = offer_of(booking)
        assert event.data["offer"] == offer.pk
        assert event.data["deadline"] == offer.deadline.isoformat()
        assert event.data["new_window_start"] == change.new_window_start.isoformat()
    for untouched in (scene.cancelled, scene.lapsed):
        assert not ReaccommodationOffer.objects.filter(booking=untouched).exists()
        assert not events_of(untouched, EventType.MISSION_SCHEDULE_CHANGED)


def test_one_e_mail_per_recipient_lists_all_of_their_bookings(
    scene: Scene, django_capture_on_commit_callbacks: Any
) -> None:
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        slip(scene.mission)

    by_recipient = {tuple(message.to): message for message in mail.outbox}
    assert sorted(by_recipient) == sorted(
        [
            (scene.web_user.email,),
            (scene.reseller.notification_email,),
            (scene.company.notification_email,),
        ]
    )
    web_mail = by_recipient[(scene.web_user.email,)]
    for booking in scene.web_bookings:
        assert booking.reference in web_mail.body
        assert f"/bookings/{booking.reference}/schedule-change/" in web_mail.body
    assert scene.cancelled.reference not in web_mail.body
    reseller_mail = by_recipient[(scene.reseller.notification_email,)]
    for booking in scene.api_bookings:
        offer = offer_of(booking)
        assert f"/api/v1/bookings/{booking.reference}/offers/{offer.pk}/answer/" in (
            reseller_mail.body
        )
    assert scene.lapsed.reference not in reseller_mail.body
    assert scene.sales_booking.reference in by_recipient[(scene.company.notification_email,)].body
    assert f"Mission {scene.mission.code} has a new launch window" in web_mail.subject


def test_the_reseller_sees_the_change_and_the_deadline_in_its_events_feed(scene: Scene) -> None:
    client = keyed_client(scene.reseller)
    slip(scene.mission)

    page = assert_matches_schema(client.get(EVENTS), EVENTS, "get", 200)

    changed = [e for e in page["results"] if e["type"] == "mission.schedule_changed"]
    assert sorted(e["booking"] for e in changed) == sorted(b.reference for b in scene.api_bookings)
    for event in changed:
        offer = ReaccommodationOffer.objects.get(booking__reference=event["booking"])
        assert event["data"]["offer"] == offer.pk
        assert datetime.fromisoformat(event["data"]["deadline"]) == offer.deadline


def test_a_schedule_change_saved_in_the_admin_makes_the_offers(
    scene: Scene, django_capture_on_commit_callbacks: Any
) -> None:
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    client = admin_client_with_mfa(staff)
    mission = scene.mission
    data = mission_change_data(client, mission)
    set_datetime(data, "launch_window_start", mission.launch_window_start + timedelta(days=200))
    set_datetime(data, "launch_window_end", mission.launch_window_end + timedelta(days=200))
    data["schedule_change_reason"] = "Launch vehicle manifest moved."
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(change_url(mission), data)

    assert response.status_code == 302
    change = ScheduleChange.objects.get(mission=mission)
    assert change.offers.count() == len(scene.live)
    (event,) = events_of(scene.sales_booking, EventType.MISSION_SCHEDULE_CHANGED)
    assert event.actor == f"staff:{staff.email}"
    assert len(mail.outbox) == 3
    page = client.get(response["Location"])
    assert "Schedule change recorded: 6 bookings were offered to stay, move or cancel." in (
        page.content.decode()
    )


def test_making_offers_costs_the_same_queries_for_2_or_20_bookings_of_one_recipient() -> None:
    def queries_for(count: int) -> int:
        deck = SlotClassFactory.create(capacity_g=100_000)
        reseller = ResellerFactory.create()
        for _ in range(count):
            place(deck, reseller)
        with CaptureQueriesContext(connection) as captured:
            slip(deck.mission)
        assert ReaccommodationOffer.objects.filter(booking__slot_class=deck).count() == count
        return len(captured)

    # Offers and events are inserted set-based; only the outbox grows, one row per recipient.
    assert queries_for(20) == queries_for(2)


def test_the_deadline_is_fourteen_days_capped_by_the_cutoff_but_never_under_two_days() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)

    far = offer_deadline(announced_at=now, booking_cutoff=now + timedelta(days=300))
    near = offer_deadline(announced_at=now, booking_cutoff=now + timedelta(days=5))
    past = offer_deadline(announced_at=now, booking_cutoff=now - timedelta(days=5))

    assert far == now + timedelta(days=14)
    assert near == now + timedelta(days=5)
    assert past == now + timedelta(days=2)


def test_the_deadline_follows_the_setting(settings: Any) -> None:
    settings.MOONSLOT_OFFER_ANSWER_DAYS = 30
    now = datetime(2027, 1, 1, tzinfo=UTC)

    assert offer_deadline(announced_at=now, booking_cutoff=now + timedelta(days=300)) == (
        now + timedelta(days=30)
    )


def test_a_newer_schedule_change_supersedes_an_open_offer(scene: Scene) -> None:
    booking = scene.api_bookings[0]
    first = slip(scene.mission)
    second = slip(scene.mission, days=30)

    older = ReaccommodationOffer.objects.get(booking=booking, schedule_change=first)
    newer = ReaccommodationOffer.objects.get(booking=booking, schedule_change=second)
    assert older.status == OfferStatus.DEFAULTED
    assert newer.status == OfferStatus.OPEN
    assert len(events_of(booking, EventType.MISSION_SCHEDULE_CHANGED)) == 2
    assert ReaccommodationOffer.objects.filter(status=OfferStatus.OPEN).count() == len(scene.live)


def test_making_offers_for_the_same_change_again_adds_nothing(scene: Scene) -> None:
    change = slip(scene.mission)
    scene.mission.refresh_from_db()

    again = reaccommodation.offers_create_for_change(
        change=change, booking_cutoff=scene.mission.booking_cutoff
    )

    assert again == []
    assert ReaccommodationOffer.objects.count() == len(scene.live)


# --- staying ---------------------------------------------------------------------------


def test_staying_keeps_the_booking_and_answering_again_changes_nothing(scene: Scene) -> None:
    booking = scene.api_bookings[0]
    slip(scene.mission)
    offer = offer_of(booking)

    offer_accept_stay(offer_id=offer.pk, actor=SYSTEM)
    offer_accept_stay(offer_id=offer.pk, actor=SYSTEM)

    offer.refresh_from_db()
    assert offer.status == OfferStatus.STAYED
    assert offer.answered_by == SYSTEM.label
    assert len(events_of(booking, EventType.OFFER_STAYED)) == 1
    with pytest.raises(InvalidTransition, match="already answered"):
        offer_accept_cancel(offer_id=offer.pk, actor=SYSTEM)
    booking.refresh_from_db()
    assert (booking.status, booking.slot_class_id) == (BookingStatus.CONFIRMED, scene.deck.pk)


# --- moving ----------------------------------------------------------------------------


def test_moving_keeps_reference_price_and_currency_and_moves_the_capacity(
    scene: Scene, django_capture_on_commit_callbacks: Any
) -> None:
    booking = scene.web_bookings[0]
    # Priced higher than the source: the customer still pays what they paid.
    target = another_mission_class(prices={"JPY": PRICE_PER_KG * 2, "USD": 2_400_000_00})
    slip(scene.mission)
    offer = offer_of(booking)
    source_before, target_before = taken(scene.deck), taken(target)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        offer_accept_move(offer_id=offer.pk, target_slot_class_id=target.pk, actor=SYSTEM)

    moved = Booking.objects.get(pk=booking.pk)
    assert (moved.reference, moved.price_amount, moved.currency) == (
        booking.reference,
        booking.price_amount,
        "JPY",
    )
    assert moved.slot_class_id == target.pk
    assert moved.status == BookingStatus.CONFIRMED
    assert taken(scene.deck) == (source_before[0] - 1000, 0)
    assert taken(target) == (target_before[0] + 1000, 0)
    offer.refresh_from_db()
    assert (offer.status, offer.target_slot_class_id) == (OfferStatus.MOVED, target.pk)
    (event,) = events_of(booking, EventType.OFFER_MOVED)
    assert event.data["from_mission"] == scene.mission.code
    assert event.data["to_mission"] == target.mission.code
    (notice,) = mail.outbox
    assert notice.to == [scene.web_user.email]
    assert f"has moved to mission {target.mission.code}" in notice.subject


def test_moving_hands_the_freed_room_to_the_source_waitlist_under_its_lock(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []

    def record(slot_class: SlotClass, *, now: datetime) -> int:
        # What the waitlist is given: the locked source, its counter already lowered.
        stored = SlotClass.objects.values_list("taken_g", flat=True).get(pk=slot_class.pk)
        seen.append((slot_class.pk, stored))
        return 0

    monkeypatch.setattr(reaccommodation, "waitlist_offer_freed_capacity", record)
    booking = scene.api_bookings[0]
    target = another_mission_class()
    slip(scene.mission)
    before = taken(scene.deck)[0]

    offer_accept_move(offer_id=offer_of(booking).pk, target_slot_class_id=target.pk, actor=SYSTEM)

    assert seen == [(scene.deck.pk, before - booking.mass_g)]


def test_a_move_into_a_class_without_room_is_refused_and_changes_nothing(scene: Scene) -> None:
    booking = scene.api_bookings[0]
    target = another_mission_class(capacity_g=1500, min_mass_g=500, max_mass_g=1500)
    place(target, ResellerFactory.create(), mass_g=1000)
    slip(scene.mission)
    offer = offer_of(booking)
    before = (taken(scene.deck), taken(target))

    with pytest.raises(InsufficientCapacity) as refused:
        offer_accept_move(offer_id=offer.pk, target_slot_class_id=target.pk, actor=SYSTEM)

    assert refused.value.available_g == 500
    assert (taken(scene.deck), taken(target)) == before
    offer.refresh_from_db()
    assert offer.status == OfferStatus.OPEN
    assert Booking.objects.get(pk=booking.pk).slot_class_id == scene.deck.pk


@pytest.mark.parametrize(
    ("target_kind", "error"),
    [
        ("same_mission", BookingValidationError),
        ("no_jpy", CurrencyNotOffered),
        ("too_small_per_booking", BookingValidationError),
        ("orbit", BookingValidationError),
        ("per_unit", BookingValidationError),
        ("sales_closed", SalesClosed),
        ("not_sold_through_the_api", ChannelNotAllowed),
        ("envelope_too_small", BookingValidationError),
    ],
)
def test_a_move_the_target_cannot_take_is_refused_with_a_clear_error(
    scene: Scene, target_kind: str, error: type[Exception]
) -> None:
    booking = scene.api_bookings[0]
    # Within the source class's 400 mm envelope, not within a 300 mm one.
    PayloadDeclaration.objects.filter(booking=booking).update(
        length_mm=350, width_mm=350, height_mm=350
    )
    targets = {
        "same_mission": lambda: SlotClassFactory.create(mission=scene.mission),
        "no_jpy": lambda: another_mission_class(prices={"USD": 1_200_000_00}),
        "too_small_per_booking": lambda: another_mission_class(max_mass_g=500),
        "orbit": lambda: another_mission_class(destination=Destination.LUNAR_ORBIT),
        "per_unit": lambda: SlotClassFactory.per_unit(mission=another_mission_class().mission),
        "sales_closed": lambda: another_mission_class(),
        "not_sold_through_the_api": lambda: another_mission_class(sold_on_api=False),
        "envelope_too_small": lambda: another_mission_class(max_height_mm=300),
    }
    target = targets[target_kind]()
    if target_kind == "sales_closed":
        Mission.objects.filter(pk=target.mission_id).update(status=MissionStatus.SALES_CLOSED)
    slip(scene.mission)
    before = taken(scene.deck)

    with pytest.raises(error) as refused:
        offer_accept_move(
            offer_id=offer_of(booking).pk, target_slot_class_id=target.pk, actor=SYSTEM
        )

    if isinstance(refused.value, BookingValidationError):
        assert list(refused.value.fields) == ["slot_class"]
        assert refused.value.fields["slot_class"][0]
    assert taken(scene.deck) == before
    assert offer_of(booking).status == OfferStatus.OPEN


def test_the_same_move_again_is_quiet_and_a_different_answer_after_it_is_refused(
    scene: Scene,
) -> None:
    booking = scene.api_bookings[0]
    target = another_mission_class()
    slip(scene.mission)
    offer = offer_of(booking)

    offer_accept_move(offer_id=offer.pk, target_slot_class_id=target.pk, actor=SYSTEM)
    offer_accept_move(offer_id=offer.pk, target_slot_class_id=target.pk, actor=SYSTEM)

    assert taken(target)[0] == 1000
    assert len(events_of(booking, EventType.OFFER_MOVED)) == 1
    with pytest.raises(InvalidTransition):
        offer_accept_stay(offer_id=offer.pk, actor=SYSTEM)


def test_a_per_unit_booking_moves_its_units(scene: Scene) -> None:
    capsules = SlotClassFactory.per_unit(mission=scene.mission, capacity_units=100)
    booking = place(capsules, scene.reseller, quantity=3)
    target = SlotClassFactory.per_unit(
        mission=another_mission_class().mission, capacity_units=5, max_quantity=5
    )
    slip(scene.mission)

    offer_accept_move(offer_id=offer_of(booking).pk, target_slot_class_id=target.pk, actor=SYSTEM)

    assert taken(capsules) == (0, 0)
    assert taken(target) == (30, 3)


# --- cancelling with a full refund -------------------------------------------------------


def test_cancelling_through_the_offer_refunds_the_whole_price_not_the_policy_share(
    scene: Scene,
) -> None:
    # Close to launch the factory's policy gives nothing back; the offer gives it all.
    booking = scene.api_bookings[0]
    slip(scene.mission, days=-300)
    offer = offer_of(booking)
    before = taken(scene.deck)[0]

    offer_accept_cancel(offer_id=offer.pk, actor=SYSTEM)
    offer_accept_cancel(offer_id=offer.pk, actor=SYSTEM)

    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED
    assert booking.refund_amount == booking.price_amount == PRICE_PER_KG
    assert taken(scene.deck)[0] == before - 1000
    (cancelled,) = events_of(booking, EventType.BOOKING_CANCELLED)
    assert cancelled.data["refund"] == {"amount": PRICE_PER_KG, "currency": "JPY"}
    assert len(events_of(booking, EventType.OFFER_CANCELLED)) == 1
    offer.refresh_from_db()
    assert offer.status == OfferStatus.CANCELLED


def test_cancelling_a_hold_through_the_offer_refunds_nothing_and_frees_its_room(
    scene: Scene,
) -> None:
    hold = scene.api_bookings[1]
    slip(scene.mission)
    before = taken(scene.deck)[0]

    offer_accept_cancel(offer_id=offer_of(hold).pk, actor=SYSTEM)

    hold.refresh_from_db()
    assert (hold.status, hold.refund_amount) == (BookingStatus.CANCELLED, 0)
    assert taken(scene.deck)[0] == before - 1000


def test_a_full_refund_cancel_of_a_cancelled_booking_returns_it_unchanged(scene: Scene) -> None:
    again = booking_cancel_full_refund(booking_id=scene.cancelled.pk, actor=SYSTEM)

    assert again.status == BookingStatus.CANCELLED
    assert len(events_of(scene.cancelled, EventType.BOOKING_CANCELLED)) == 1


@pytest.mark.usefixtures("stripe_sandbox")
def test_a_card_payment_is_refunded_in_full_through_stripe(
    django_capture_on_commit_callbacks: Any,
) -> None:
    from bookings import payments
    from bookings.models import Refund, RefundReason, RefundStatus

    booking = held_web_booking(price=1_200_000)
    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_card_start(
            booking_id=booking.pk,
            actor=Actor.for_user(booking.created_by),
            payment_method="pm_card_visa",
        )
    payment = booking.payments.get()
    # The launch is close, so the policy would refund nothing at all.
    slip(booking.slot_class.mission, days=-350)

    with django_capture_on_commit_callbacks(execute=True):
        offer_accept_cancel(offer_id=offer_of(booking).pk, actor=SYSTEM)

    refund = Refund.objects.get()
    assert (refund.amount, refund.reason, refund.status) == (
        1_200_000,
        RefundReason.CANCELLATION,
        RefundStatus.SUCCEEDED,
    )
    assert sandbox().refunded_total(str(payment.stripe_payment_intent_id)) == 1_200_000
    assert payments.booking_refund_cancellation(booking_id=booking.pk) == 0


# --- the deadline ------------------------------------------------------------------------


def test_unanswered_offers_default_to_staying_at_the_deadline(scene: Scene) -> None:
    slip(scene.mission)
    deadline = ReaccommodationOffer.objects.values_list("deadline", flat=True).first()
    assert deadline is not None
    early = offers_default_due(now=deadline - timedelta(seconds=1))
    booking = scene.api_bookings[0]
    offer_accept_stay(offer_id=offer_of(booking).pk, actor=SYSTEM)

    defaulted = offers_default_due(now=deadline)
    again = offers_default_due(now=deadline + timedelta(days=1))

    assert (early, defaulted, again) == (0, len(scene.live) - 1, 0)
    assert offer_of(booking).status == OfferStatus.STAYED
    for other in scene.live:
        if other.pk != booking.pk:
            assert offer_of(other).status == OfferStatus.DEFAULTED
    assert BookingEvent.objects.filter(type=EventType.OFFER_DEFAULTED).count() == (
        len(scene.live) - 1
    )
    assert Booking.objects.get(pk=scene.sales_booking.pk).slot_class_id == scene.deck.pk


def test_an_offer_past_its_deadline_reads_defaulted_and_refuses_a_move_or_a_cancel(
    scene: Scene,
) -> None:
    booking = scene.api_bookings[0]
    target = another_mission_class()
    slip(scene.mission)
    offer = offer_of(booking)
    late = offer.deadline + timedelta(minutes=1)

    assert reaccommodation.offer_status_at(offer, late) == OfferStatus.DEFAULTED
    with pytest.raises(InvalidTransition, match="deadline"):
        offer_accept_move(offer_id=offer.pk, target_slot_class_id=target.pk, actor=SYSTEM, now=late)
    with pytest.raises(InvalidTransition, match="deadline"):
        offer_accept_cancel(offer_id=offer.pk, actor=SYSTEM, now=late)
    offer_accept_stay(offer_id=offer.pk, actor=SYSTEM, now=late)  # stays anyway
    assert taken(target)[0] == 0


def test_an_offer_of_a_booking_cancelled_since_cannot_be_answered(scene: Scene) -> None:
    booking = scene.api_bookings[0]
    slip(scene.mission)
    booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    with pytest.raises(InvalidTransition, match="no longer applies"):
        offer_accept_stay(offer_id=offer_of(booking).pk, actor=SYSTEM)


# --- the customer's page ---------------------------------------------------------------


def offer_url(booking: Booking) -> str:
    return reverse("bookings:offer", kwargs={"reference": booking.reference})


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_offer_page_shows_the_choices_and_the_targets_with_room(scene: Scene) -> None:
    booking = scene.web_bookings[0]
    target = another_mission_class(name="Deck B")
    full = another_mission_class(name="Full deck", capacity_g=2000, max_mass_g=2000)
    place(full, ResellerFactory.create(), mass_g=1500)
    slip(scene.mission)

    page = signed_in(scene.web_user).get(offer_url(booking))

    text = text_of(page)
    assert page.status_code == 200
    assert f"Mission {scene.mission.code} has a new launch window" in text
    assert "Stay on the mission" in text
    assert f"{target.mission.code} — {target.mission.name}" in text
    assert "Deck B" in text
    assert "Full deck" not in text
    assert "everything paid comes back: ¥180,000,000" in text
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()


def test_answering_on_the_site_moves_the_booking_and_says_so(scene: Scene) -> None:
    booking = scene.web_bookings[0]
    target = another_mission_class()
    slip(scene.mission)
    client = signed_in(scene.web_user)

    response = client.post(offer_url(booking), {"choice": "move", "slot_class": target.pk})

    assert response.status_code == 302
    assert response["Location"] == reverse("bookings:detail", args=[booking.reference])
    assert Booking.objects.get(pk=booking.pk).slot_class_id == target.pk
    detail = client.get(response["Location"])
    assert f"has moved to mission {target.mission.code}" in text_of(detail)


def test_a_move_without_a_class_or_to_a_class_not_offered_is_refused_on_the_page(
    scene: Scene,
) -> None:
    booking = scene.web_bookings[0]
    another_mission_class()
    foreign = SlotClassFactory.create(mission=scene.mission)
    slip(scene.mission)
    client = signed_in(scene.web_user)

    no_class = client.post(offer_url(booking), {"choice": "move"})
    not_offered = client.post(offer_url(booking), {"choice": "move", "slot_class": foreign.pk})

    assert no_class.status_code == 200
    assert "Choose the mission and class to move to." in text_of(no_class)
    assert not_offered.status_code == 200
    assert offer_of(booking).status == OfferStatus.OPEN


def test_cancelling_on_the_site_refunds_in_full(scene: Scene) -> None:
    booking = scene.web_bookings[0]
    slip(scene.mission)

    response = signed_in(scene.web_user).post(offer_url(booking), {"choice": "cancel"})

    assert response.status_code == 302
    booking.refresh_from_db()
    assert (booking.status, booking.refund_amount) == (BookingStatus.CANCELLED, PRICE_PER_KG)


def test_answers_on_the_site_need_the_csrf_token(scene: Scene) -> None:
    booking = scene.web_bookings[0]
    slip(scene.mission)
    client = Client(enforce_csrf_checks=True)
    client.force_login(scene.web_user)

    response = client.post(offer_url(booking), {"choice": "stay"})

    assert response.status_code == 403
    assert offer_of(booking).status == OfferStatus.OPEN


def test_another_customers_offer_page_is_not_found_on_every_verb(scene: Scene) -> None:
    booking = scene.web_bookings[0]
    slip(scene.mission)
    stranger, _org = web_customer()
    client = signed_in(stranger)

    assert client.get(offer_url(booking)).status_code == 404
    assert client.post(offer_url(booking), {"choice": "cancel"}).status_code == 404
    assert offer_of(booking).status == OfferStatus.OPEN


def test_viewers_see_the_offer_but_cannot_answer(scene: Scene) -> None:
    booking = scene.sales_booking
    slip(scene.mission)
    viewer = UserFactory.create()
    MembershipFactory.create(user=viewer, organisation=scene.company, role=MemberRole.VIEWER)
    client = signed_in(viewer)

    page = client.get(offer_url(booking))
    answer = client.post(offer_url(booking), {"choice": "cancel"})

    assert page.status_code == 200
    assert "An owner or booker of the organisation can answer this offer." in text_of(page)
    assert answer.status_code == 403
    assert offer_of(booking).status == OfferStatus.OPEN


def test_the_offer_page_renders_in_japanese(scene: Scene) -> None:
    booking = scene.web_bookings[0]
    target = another_mission_class()
    slip(scene.mission)
    client = signed_in(scene.web_user)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})

    page = client.get(offer_url(booking))

    assert page.status_code == 200
    assert '<html lang="ja">' in page.content.decode()
    text = text_of(page)
    assert target.mission.name_ja in text  # the target mission's Japanese name
    assert "予約一覧" in text  # the breadcrumb, from the project's catalogue


def test_a_booking_without_offers_has_no_offer_page(scene: Scene) -> None:
    response = signed_in(scene.web_user).get(offer_url(scene.web_bookings[0]))

    assert response.status_code == 404


def test_the_booking_page_panel_points_to_the_open_offer(scene: Scene) -> None:
    from django.template.loader import render_to_string

    booking = scene.web_bookings[0]
    slip(scene.mission)

    panel = render_to_string(
        "bookings/offers/booking_panel.html",
        {"booking": booking, "status": "confirmed", "can_cancel": True},
    )

    assert offer_url(booking) in panel
    assert reverse("bookings:rebook", args=[booking.reference]) in panel


# --- sales answer in the admin ---------------------------------------------------------


def test_sales_answer_a_move_for_the_customer_in_the_admin(scene: Scene) -> None:
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    client = admin_client_with_mfa(staff)
    booking = scene.sales_booking
    target = another_mission_class()
    slip(scene.mission)
    offer = offer_of(booking)

    listing = client.get(
        "/admin/bookings/reaccommodationoffer/",
        {"status": "open", "schedule_change__mission__id__exact": str(scene.mission.pk)},
    )
    url = reverse("admin:bookings_reaccommodationoffer_answer", args=[offer.pk])
    page = client.get(url)
    response = client.post(
        url, {"choice": OfferChoice.MOVE, "slot_class": target.pk, "note": "Phoned in."}
    )

    assert listing.status_code == 200
    assert booking.reference in listing.content.decode()
    assert page.status_code == 200
    assert response.status_code == 302
    offer.refresh_from_db()
    assert (offer.status, offer.answered_by) == (OfferStatus.MOVED, f"staff:{staff.email}")
    (event,) = events_of(booking, EventType.OFFER_MOVED)
    assert event.reason == "Phoned in."


def test_the_admin_list_filters_offers_by_status(scene: Scene) -> None:
    client = admin_client_with_mfa(UserFactory.create(is_staff=True, is_superuser=True))
    slip(scene.mission)
    offer_accept_stay(offer_id=offer_of(scene.sales_booking).pk, actor=SYSTEM)

    stayed = client.get("/admin/bookings/reaccommodationoffer/", {"status": "stayed"})

    content = stayed.content.decode()
    assert scene.sales_booking.reference in content
    assert scene.api_bookings[0].reference not in content


# --- under real concurrency -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres")
def test_two_moves_into_the_last_room_one_wins() -> None:
    from tests.bookings.concurrency_helpers import counters, live_totals, run_together

    deck = SlotClassFactory.create(capacity_g=100_000)
    first, second = (place(deck, ResellerFactory.create()) for _ in range(2))
    target = another_mission_class(capacity_g=1000, min_mass_g=500, max_mass_g=1000)
    slip(deck.mission)
    offers = [offer_of(first).pk, offer_of(second).pk]

    def move(offer_id: int) -> ReaccommodationOffer:
        return offer_accept_move(offer_id=offer_id, target_slot_class_id=target.pk, actor=SYSTEM)

    outcomes = run_together([lambda: move(offers[0]), lambda: move(offers[1])])

    won = [o for o in outcomes if o.error is None]
    lost = [o for o in outcomes if o.error is not None]
    assert len(won) == 1
    assert len(lost) == 1
    assert isinstance(lost[0].error, InsufficientCapacity)
    assert counters(target.pk) == live_totals(target.pk) == (1000, 0)
    assert counters(deck.pk) == live_totals(deck.pk) == (1000, 0)
    statuses = sorted(ReaccommodationOffer.objects.values_list("status", flat=True))
    assert statuses == [OfferStatus.MOVED, OfferStatus.OPEN]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres")
def test_a_cancel_and_a_move_of_the_same_booking_at_once_leave_the_counters_true() -> None:
    from tests.bookings.concurrency_helpers import counters, live_totals, run_together

    deck = SlotClassFactory.create(capacity_g=100_000)
    booking = place(deck, ResellerFactory.create())
    target = another_mission_class()
    slip(deck.mission)
    offer_id = offer_of(booking).pk

    outcomes = run_together(
        [
            lambda: offer_accept_move(
                offer_id=offer_id, target_slot_class_id=target.pk, actor=SYSTEM
            ),
            lambda: offer_accept_cancel(offer_id=offer_id, actor=SYSTEM),
        ]
    )

    assert sum(o.error is None for o in outcomes) == 1
    assert all(o.error is None or isinstance(o.error, InvalidTransition) for o in outcomes)
    assert counters(deck.pk) == live_totals(deck.pk)
    assert counters(target.pk) == live_totals(target.pk)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres")
def test_a_cancel_waiting_behind_a_move_frees_the_class_the_booking_is_in() -> None:
    from django.db import transaction

    from tests.bookings.concurrency_helpers import (
        Background,
        counters,
        live_totals,
        wait_until_blocked_on_lock,
    )

    deck = SlotClassFactory.create(capacity_g=100_000)
    booking = place(deck, ResellerFactory.create())
    # Another booking stays on the deck, so a wrong decrement passes the counter's
    # constraint silently (and would let the deck be oversold) instead of failing loudly.
    place(deck, ResellerFactory.create())
    target = another_mission_class()
    slip(deck.mission)
    offer_id = offer_of(booking).pk

    with transaction.atomic():
        offer_accept_move(offer_id=offer_id, target_slot_class_id=target.pk, actor=SYSTEM)
        # The cancel reads the booking's class (still the deck: the move has not committed)
        # and waits for that class's lock, which the move holds until it commits.
        cancel = Background(lambda: booking_cancel(booking_id=booking.pk, actor=SYSTEM))
        wait_until_blocked_on_lock(cancel.pid)
    outcome = cancel.outcome()

    assert outcome.error is None
    booking.refresh_from_db()
    assert booking.status == "cancelled"
    assert booking.slot_class_id == target.pk
    assert counters(deck.pk) == live_totals(deck.pk)
    assert counters(target.pk) == live_totals(target.pk)


def test_the_booking_page_points_to_the_open_offer_and_to_rebooking(scene: Scene) -> None:
    user, organisation = web_customer()
    booking = place(scene.deck, organisation, channel="web", user=user)
    client = Client()
    client.force_login(user)
    page = reverse("bookings:detail", args=[booking.reference])
    before = text_of(client.get(page))
    assert "See your choices" not in before
    assert reverse("bookings:rebook", args=[booking.reference]) in client.get(page).content.decode()
    slip(scene.mission)
    after = client.get(page).content.decode()
    assert reverse("bookings:offer", args=[booking.reference]) in after
    assert "has a new launch window" in html.unescape(after)


def test_a_slip_and_a_move_ask_both_missions_manifests_to_rebuild(scene: Scene) -> None:
    from bookings.models import OutboxMessage

    def rebuilds() -> set[int]:
        return {
            message.payload["mission_id"]
            for message in OutboxMessage.objects.filter(topic="manifest.rebuild")
        }

    OutboxMessage.objects.filter(topic="manifest.rebuild").delete()
    slip(scene.mission)
    assert rebuilds() == {scene.mission.pk}
    target = another_mission_class()
    OutboxMessage.objects.filter(topic="manifest.rebuild").delete()
    offer_accept_move(
        offer_id=offer_of(scene.sales_booking).pk, target_slot_class_id=target.pk, actor=SYSTEM
    )
    assert rebuilds() == {scene.mission.pk, target.mission_id}
