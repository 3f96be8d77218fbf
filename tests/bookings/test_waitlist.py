"""The waitlist: freed capacity goes to the first waiting entries that fit, as offer holds,
before any new hold; offers lapse, get booked or are declined; the counters always equal a
sum the test computes itself from what it placed, never the class's own figures."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MemberRole, Organisation
from bookings import services
from bookings.exceptions import (
    BookingValidationError,
    ChannelNotAllowed,
    CurrencyNotOffered,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
)
from bookings.models import (
    CAPACITY_STATUSES,
    Booking,
    BookingEvent,
    BookingStatus,
    OutboxMessage,
    WaitlistEntry,
    WaitlistStatus,
)
from bookings.services import Actor
from bookings.waitlist import (
    OFFER_WINDOW_MAX,
    OFFER_WINDOW_MIN,
    WAITLIST_OFFERED,
    CapacityAvailable,
    offer_window,
    waitlist_join,
    waitlist_list,
    waitlist_offer_freed_capacity,
    waitlist_withdraw,
    waitlists_sweep,
)
from marketplace.locks import slot_class_qs_for_update
from marketplace.models import MissionStatus, SlotClass, SlotClassPrice
from tests.bookings.concurrency_helpers import counters as concurrent_counters
from tests.bookings.concurrency_helpers import live_totals, run_together
from tests.bookings.test_web_flow import customer, personal_org, text_of
from tests.factories import (
    MembershipFactory,
    MissionFactory,
    OrganisationFactory,
    ResellerFactory,
    SlotClassFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
CAPACITY_G = 10_000


def deck(**kwargs: Any) -> SlotClass:
    """A per-kg class of 10 kg, sold from 500 g to 10 kg in steps of 100 g."""
    kwargs.setdefault("capacity_g", CAPACITY_G)
    kwargs.setdefault("max_mass_g", CAPACITY_G)
    return SlotClassFactory.create(**kwargs)


def hold(
    slot_class: SlotClass,
    mass_g: int,
    organisation: Organisation | None = None,
    *,
    now: datetime | None = None,
    **kwargs: Any,
) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        currency=kwargs.pop("currency", "JPY"),
        organisation=organisation or OrganisationFactory.create(),
        channel=kwargs.pop("channel", "api"),
        actor=SYSTEM,
        mass_g=None if slot_class.is_per_unit else mass_g,
        quantity=kwargs.pop("quantity", None),
        now=now,
        **kwargs,
    )


def join(
    slot_class: SlotClass,
    mass_g: int | None,
    organisation: Organisation | None = None,
    *,
    now: datetime | None = None,
    **kwargs: Any,
) -> WaitlistEntry:
    return waitlist_join(
        slot_class_id=slot_class.pk,
        organisation=organisation or ResellerFactory.create(),
        channel=kwargs.pop("channel", "api"),
        actor=kwargs.pop("actor", SYSTEM),
        currency=kwargs.pop("currency", "JPY"),
        mass_g=mass_g,
        now=now,
        **kwargs,
    )


def fresh(entry: WaitlistEntry) -> WaitlistEntry:
    return WaitlistEntry.objects.select_related("offer_booking").get(pk=entry.pk)


def counters(slot_class: SlotClass) -> tuple[int, int]:
    slot_class.refresh_from_db()
    return slot_class.taken_g, slot_class.taken_units


def rows_taken_g(slot_class: SlotClass) -> int:
    """What the booking rows themselves hold (the counters must agree)."""
    total = Booking.objects.filter(slot_class=slot_class, status__in=CAPACITY_STATUSES).aggregate(
        total=Sum("mass_g")
    )["total"]
    return int(total or 0)


# --- freed capacity goes to the first entries that fit ------------------------------------


def test_cancel_in_a_sold_out_class_offers_the_freed_capacity_to_the_first_entries_that_fit():
    slot_class = deck()
    first = hold(slot_class, 4_000)
    hold(slot_class, 6_000)
    too_large = join(slot_class, 5_000)
    smaller = join(slot_class, 3_000)
    smallest = join(slot_class, 1_000)
    after = join(slot_class, 500)
    placed_g = 6_000  # the independent model: what stays held after the cancel

    services.booking_cancel(booking_id=first.pk, actor=SYSTEM)

    # 4 kg freed: 5 kg does not fit and keeps its place; 3 kg and then 1 kg do; 500 g no longer.
    assert fresh(too_large).status == WaitlistStatus.WAITING
    assert fresh(after).status == WaitlistStatus.WAITING
    for entry in (smaller, smallest):
        entry = fresh(entry)
        assert entry.status == WaitlistStatus.OFFERED
        offer = entry.offer_booking
        assert offer is not None
        assert offer.status == BookingStatus.HELD
        assert offer.organisation_id == entry.organisation_id
        assert offer.channel == "api"
        assert offer.mass_g == entry.mass_g
        assert offer.currency == "JPY"
        # Today's price: 180,000,000 JPY per kg.
        assert offer.price_amount == 180_000 * entry.mass_g
        placed_g += entry.mass_g
    assert placed_g == CAPACITY_G
    assert counters(slot_class) == (placed_g, 0)
    assert rows_taken_g(slot_class) == placed_g


def test_the_offer_is_a_hold_with_its_own_window_events_and_notification():
    slot_class = deck(hold_minutes_api=3 * 24 * 60)
    booking = hold(slot_class, CAPACITY_G)
    entry = join(slot_class, 2_000)
    now = timezone.now()

    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM, now=now)

    offer = fresh(entry).offer_booking
    assert offer is not None
    # The API's three days are capped at the offer window's maximum.
    assert offer.hold_expires_at == now + OFFER_WINDOW_MAX
    assert fresh(entry).offered_at == now
    types = list(BookingEvent.objects.filter(booking=offer).values_list("type", "data"))
    assert [t for t, _data in types] == ["booking.held", WAITLIST_OFFERED]
    offered_data = types[1][1]
    assert offered_data["waitlist_entry"] == entry.pk
    assert offered_data["hold_expires_at"] == (now + OFFER_WINDOW_MAX).isoformat()
    assert offered_data["price"] == {"amount": 360_000_000, "currency": "JPY"}
    assert offer.payload.review_status == "declared"
    assert OutboxMessage.objects.filter(
        topic="booking.notify", payload__booking_id=offer.pk, payload__type="booking.held"
    ).exists()


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [(20, OFFER_WINDOW_MIN), (6 * 60, timedelta(hours=6)), (7 * 24 * 60, OFFER_WINDOW_MAX)],
)
def test_the_offer_window_is_the_channels_hold_time_within_bounds(minutes, expected):
    slot_class = SlotClassFactory.build(hold_minutes_web=minutes)

    assert offer_window(slot_class, "web") == expected


def test_an_offer_that_lapses_unanswered_passes_the_capacity_to_the_next_entry():
    slot_class = deck()
    booking = hold(slot_class, 6_000)
    hold(slot_class, 4_000)
    early = join(slot_class, 5_000)
    late = join(slot_class, 6_000)
    now = timezone.now()
    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM, now=now)
    assert fresh(early).status == WaitlistStatus.OFFERED
    assert fresh(late).status == WaitlistStatus.WAITING  # 1 kg left after the 5 kg offer

    later = now + OFFER_WINDOW_MAX + timedelta(minutes=1)
    assert services.bookings_expire(now=later) == 1

    early = fresh(early)
    assert early.status == WaitlistStatus.LAPSED
    assert early.offer_booking is not None
    assert early.offer_booking.status == BookingStatus.EXPIRED
    late = fresh(late)
    assert late.status == WaitlistStatus.OFFERED
    assert late.offer_booking is not None
    assert late.offer_booking.hold_expires_at == later + OFFER_WINDOW_MAX
    assert counters(slot_class) == (4_000 + 6_000, 0)
    assert rows_taken_g(slot_class) == 10_000


def test_the_expiry_sweep_gives_a_lapsed_ordinary_hold_to_the_waitlist():
    slot_class = deck()
    now = timezone.now()
    hold(slot_class, 7_000, now=now, hold_minutes=30)
    hold(slot_class, 3_000)
    waiting = join(slot_class, 2_000)
    assert fresh(waiting).status == WaitlistStatus.WAITING

    assert services.bookings_expire(now=now + timedelta(minutes=31)) == 1

    waiting = fresh(waiting)
    assert waiting.status == WaitlistStatus.OFFERED
    assert counters(slot_class) == (3_000 + 2_000, 0)
    assert rows_taken_g(slot_class) == 5_000


def test_joining_counts_a_lapsed_hold_as_free_room():
    slot_class = deck()
    now = timezone.now()
    hold(slot_class, 7_000, now=now - timedelta(hours=1), hold_minutes=30)
    hold(slot_class, 3_000)

    with pytest.raises(CapacityAvailable) as refused:
        join(slot_class, 7_000, now=now)
    assert refused.value.available_g == 7_000


def test_a_new_hold_never_takes_capacity_freed_for_the_waitlist():
    slot_class = deck()
    now = timezone.now()
    hold(slot_class, 4_000, now=now, hold_minutes=30)
    hold(slot_class, 6_000)
    entry = join(slot_class, 4_000, now=now)
    later = now + timedelta(minutes=31)

    # The lapsed 4 kg goes to the waiting 4 kg entry, so the newcomer is refused.
    with pytest.raises(InsufficientCapacity):
        hold(slot_class, 1_000, now=later)

    services.bookings_expire(now=later)
    assert fresh(entry).status == WaitlistStatus.OFFERED
    with pytest.raises(InsufficientCapacity):
        hold(slot_class, 500, now=later)
    assert counters(slot_class) == (10_000, 0)


def test_per_unit_entries_wait_for_units_and_are_offered_units():
    capsules = SlotClassFactory.per_unit(capacity_units=10, max_quantity=10)
    booking = services.booking_hold(
        slot_class_id=capsules.pk,
        currency="USD",
        organisation=OrganisationFactory.create(),
        channel="web",
        actor=SYSTEM,
        quantity=10,
    )
    big = join(capsules, None, quantity=8, currency="USD", channel="web")
    small = join(capsules, None, quantity=2, currency="USD", channel="web")
    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    assert fresh(big).status == WaitlistStatus.OFFERED
    assert fresh(small).status == WaitlistStatus.OFFERED
    offer = fresh(small).offer_booking
    assert offer is not None
    assert (offer.quantity, offer.mass_g, offer.price_amount) == (2, 20, 2 * 200_00)
    assert counters(capsules) == (100, 10)


def test_never_oversold_when_offers_follow_each_other():
    """Many cancels in turn with a queue of mixed sizes: the class never holds more than its
    capacity, and the counters equal the rows."""
    slot_class = deck()
    bookings = [hold(slot_class, 1_000) for _ in range(10)]
    sizes = [3_000, 500, 2_000, 1_500, 700, 5_000, 1_000, 800]
    entries = [join(slot_class, size) for size in sizes]
    for booking in bookings:
        services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)
        taken_g, _units = counters(slot_class)
        assert taken_g <= CAPACITY_G
        assert taken_g == rows_taken_g(slot_class)
    offered = [e for e in entries if fresh(e).status == WaitlistStatus.OFFERED]
    assert sum(e.mass_g for e in offered) == rows_taken_g(slot_class)
    # The first entries that fit, in order: 3 kg, 0.5, 2, 1.5, 0.7 (7.7 kg), 5 kg no,
    # 1 kg (8.7), 0.8 (9.5).
    assert [e.mass_g for e in offered] == [3_000, 500, 2_000, 1_500, 700, 1_000, 800]


# --- the outcome of an offer --------------------------------------------------------------


def _offered(slot_class: SlotClass | None = None) -> tuple[SlotClass, WaitlistEntry, Booking]:
    slot_class = slot_class or deck()
    booking = hold(slot_class, CAPACITY_G)
    entry = join(slot_class, 2_000)
    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)
    entry = fresh(entry)
    assert entry.offer_booking is not None
    return slot_class, entry, entry.offer_booking


def test_confirming_the_offer_books_the_entry_read_at_once_and_written_by_the_sweep():
    _slot_class, entry, offer = _offered()

    services.booking_confirm(booking_id=offer.pk, actor=SYSTEM, on_account=True)

    (listed,) = waitlist_list(organisation=entry.organisation)
    assert listed.live_status == WaitlistStatus.BOOKED  # type: ignore[attr-defined]
    assert fresh(entry).status == WaitlistStatus.OFFERED  # not written yet
    waitlists_sweep()
    assert fresh(entry).status == WaitlistStatus.BOOKED
    # A booked entry is not withdrawn: the booking is cancelled instead.
    with pytest.raises(InvalidTransition):
        waitlist_withdraw(entry_id=entry.pk, actor=SYSTEM)


def test_a_lapsed_offer_reads_lapsed_before_any_sweep():
    _slot_class, entry, offer = _offered()
    Booking.objects.filter(pk=offer.pk).update(
        hold_expires_at=timezone.now() - timedelta(seconds=1)
    )

    (listed,) = waitlist_list(organisation=entry.organisation)

    assert listed.live_status == WaitlistStatus.LAPSED  # type: ignore[attr-defined]
    assert listed.position is None  # type: ignore[attr-defined]


def test_cancelling_the_offer_hold_declines_it_and_passes_the_capacity_on():
    slot_class, entry, offer = _offered()
    next_entry = join(slot_class, 9_000)  # 8 kg free: does not fit yet

    services.booking_cancel(booking_id=offer.pk, actor=SYSTEM)

    assert fresh(entry).status == WaitlistStatus.WITHDRAWN
    assert fresh(next_entry).status == WaitlistStatus.OFFERED
    assert counters(slot_class) == (9_000, 0)


# --- withdrawing ------------------------------------------------------------------------


def test_withdrawing_a_waiting_entry_takes_it_out_of_the_queue_and_is_idempotent():
    slot_class = deck()
    booking = hold(slot_class, CAPACITY_G)
    gone = join(slot_class, 1_000)
    stays = join(slot_class, 1_000)

    assert waitlist_withdraw(entry_id=gone.pk, actor=SYSTEM).status == WaitlistStatus.WITHDRAWN
    assert waitlist_withdraw(entry_id=gone.pk, actor=SYSTEM).status == WaitlistStatus.WITHDRAWN
    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    assert fresh(gone).status == WaitlistStatus.WITHDRAWN
    assert fresh(gone).offer_booking is None
    assert fresh(stays).status == WaitlistStatus.OFFERED


def test_withdrawing_an_offered_entry_cancels_its_hold_and_serves_the_next_entry():
    slot_class, entry, offer = _offered()
    next_entry = join(slot_class, 9_000)

    withdrawn = waitlist_withdraw(entry_id=entry.pk, actor=SYSTEM)

    assert withdrawn.status == WaitlistStatus.WITHDRAWN
    offer.refresh_from_db()
    assert offer.status == BookingStatus.CANCELLED
    assert fresh(next_entry).status == WaitlistStatus.OFFERED
    assert counters(slot_class) == (9_000, 0)
    assert rows_taken_g(slot_class) == 9_000


def test_positions_count_only_waiting_entries_ahead_in_the_same_class():
    slot_class = deck()
    hold(slot_class, CAPACITY_G)
    reseller = ResellerFactory.create()
    first = join(slot_class, 1_000, reseller)
    join(slot_class, 1_000)  # another organisation's, still ahead of ours
    withdrawn = join(slot_class, 1_000)
    waitlist_withdraw(entry_id=withdrawn.pk, actor=SYSTEM)
    third = join(slot_class, 2_000, reseller)
    elsewhere = deck()
    hold(elsewhere, CAPACITY_G)
    own_queue = join(elsewhere, 1_000, reseller)

    positions = {e.pk: e.position for e in waitlist_list(organisation=reseller)}  # type: ignore[attr-defined]

    assert positions == {first.pk: 1, third.pk: 3, own_queue.pk: 1}


# --- joining ------------------------------------------------------------------------------


def test_joining_a_class_with_room_for_the_request_is_refused():
    slot_class = deck()
    hold(slot_class, 8_000)

    with pytest.raises(CapacityAvailable) as refused:
        join(slot_class, 2_000)
    assert refused.value.available_g == 2_000
    # More than is free: it may wait.
    assert join(slot_class, 2_100).status == WaitlistStatus.WAITING


def test_joining_is_checked_against_the_class_limits_like_a_hold():
    slot_class = deck(min_mass_g=500, mass_step_g=100)
    hold(slot_class, CAPACITY_G)

    with pytest.raises(BookingValidationError) as below:
        join(slot_class, 400)
    assert set(below.value.fields) == {"mass_g"}
    with pytest.raises(BookingValidationError) as off_step:
        join(slot_class, 1_050)
    assert set(off_step.value.fields) == {"mass_g"}
    with pytest.raises(BookingValidationError) as too_big:
        join(slot_class, CAPACITY_G + 100)
    assert set(too_big.value.fields) == {"mass_g"}
    with pytest.raises(CurrencyNotOffered):
        join(slot_class, 1_000, currency="EUR")
    assert not WaitlistEntry.objects.exists()


def test_joining_needs_the_channel_and_the_sale_open():
    web_only = deck(sold_on_api=False)
    hold(web_only, CAPACITY_G, channel="web")
    with pytest.raises(ChannelNotAllowed):
        join(web_only, 1_000, channel="api")

    closed = deck(mission=MissionFactory.create(status=MissionStatus.SALES_CLOSED))
    with pytest.raises(SalesClosed):
        join(closed, 1_000)


def test_an_organisation_stands_in_a_queue_a_few_times_at_most():
    slot_class = deck()
    hold(slot_class, CAPACITY_G)
    reseller = ResellerFactory.create()
    for _ in range(5):
        join(slot_class, 1_000, reseller)

    with pytest.raises(BookingValidationError) as refused:
        join(slot_class, 1_000, reseller)
    assert set(refused.value.fields) == {"slot_class"}


# --- what stops an offer ------------------------------------------------------------------


def test_entries_wait_while_the_mission_is_not_on_sale():
    slot_class = deck()
    booking = hold(slot_class, CAPACITY_G)
    entry = join(slot_class, 1_000)
    slot_class.mission.status = MissionStatus.SALES_CLOSED
    slot_class.mission.save(update_fields=["status"])

    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    assert fresh(entry).status == WaitlistStatus.WAITING
    assert counters(slot_class) == (0, 0)


def test_an_entry_over_its_organisations_hold_cap_is_skipped_for_the_next():
    slot_class = deck()
    booking = hold(slot_class, CAPACITY_G)
    capped = ResellerFactory.create(held_mass_cap_g=2_000)
    hold(deck(), 1_500, capped)  # already holds 1.5 kg elsewhere
    over_cap = join(slot_class, 1_000, capped)
    next_entry = join(slot_class, 1_000)

    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    assert fresh(over_cap).status == WaitlistStatus.WAITING
    assert fresh(next_entry).status == WaitlistStatus.OFFERED


def test_an_entry_in_a_currency_no_longer_offered_is_skipped():
    slot_class = deck()
    booking = hold(slot_class, CAPACITY_G)
    in_usd = join(slot_class, 1_000, currency="USD")
    in_jpy = join(slot_class, 1_000)
    SlotClassPrice.objects.filter(slot_class=slot_class, currency="USD").delete()

    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    assert fresh(in_usd).status == WaitlistStatus.WAITING
    assert fresh(in_jpy).status == WaitlistStatus.OFFERED


def test_the_sweep_offers_capacity_raised_by_sales():
    slot_class = deck(mission=MissionFactory.create())
    hold(slot_class, CAPACITY_G)
    entry = join(slot_class, 2_000)
    SlotClass.objects.filter(pk=slot_class.pk).update(capacity_g=CAPACITY_G + 2_000)

    assert waitlists_sweep() == 1

    assert fresh(entry).status == WaitlistStatus.OFFERED
    assert counters(slot_class) == (CAPACITY_G + 2_000, 0)
    assert waitlists_sweep() == 0


def test_offering_with_nothing_free_writes_nothing(django_assert_max_num_queries):
    slot_class = deck()
    hold(slot_class, CAPACITY_G)
    join(slot_class, 1_000)
    locked = slot_class_qs_for_update().get(pk=slot_class.pk)

    # Settling the offers, then nothing free: two queries at most, no entry read.
    with django_assert_max_num_queries(1):
        assert waitlist_offer_freed_capacity(locked, now=timezone.now()) == 0


def test_the_web_entry_offer_is_made_for_the_person_who_joined():
    slot_class = deck()
    booking = hold(slot_class, CAPACITY_G)
    person = UserFactory.create()
    organisation = OrganisationFactory.create()
    entry = join(slot_class, 1_000, organisation, channel="web", actor=Actor.for_user(person))

    services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)

    offer = fresh(entry).offer_booking
    assert offer is not None
    assert (offer.channel, offer.created_by_id, offer.organisation_id) == (
        "web",
        person.pk,
        organisation.pk,
    )


# --- the website --------------------------------------------------------------------------


def join_url(slot_class: SlotClass) -> str:
    return reverse(
        "bookings:waitlist-join",
        kwargs={"code": slot_class.mission.code, "slot_class_id": slot_class.pk},
    )


def sold_out_deck() -> tuple[SlotClass, Booking]:
    slot_class = deck()
    return slot_class, hold(slot_class, CAPACITY_G)


def test_the_mission_page_offers_the_waitlist_for_a_sold_out_class_only(client: Client):
    full, _booking = sold_out_deck()
    open_class = deck(mission=full.mission)
    page = client.get(reverse("marketplace:mission-detail", kwargs={"code": full.mission.code}))
    html = page.content.decode()

    assert join_url(full) in html
    assert join_url(open_class) not in html
    assert (
        reverse("bookings:new", kwargs={"code": full.mission.code, "slot_class_id": open_class.pk})
        in html
    )
    assert "Join the waitlist" in text_of(page)


def test_joining_on_the_site_needs_a_signed_in_customer(client: Client):
    slot_class, _booking = sold_out_deck()

    response = client.get(join_url(slot_class))

    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_a_customer_joins_with_a_csrf_protected_post_and_sees_the_entry(client: Client):
    slot_class, blocking = sold_out_deck()
    csrf_client = Client(enforce_csrf_checks=True)
    person = customer(csrf_client)
    client.force_login(person)
    form = {"mass": "2", "unit": "kg", "currency": "JPY"}

    assert csrf_client.post(join_url(slot_class), form).status_code == 403
    page = client.get(join_url(slot_class))
    assert page.status_code == 200
    organisation = str(personal_org(person).pk)
    first = client.post(join_url(slot_class), {**form, "organisation": organisation})
    again = client.post(join_url(slot_class), {**form, "organisation": organisation})

    assert first.status_code == again.status_code == 302
    assert first["Location"] == reverse("bookings:waitlist")
    (entry,) = WaitlistEntry.objects.all()  # the repeated form queued nothing twice
    assert (entry.mass_g, entry.channel, entry.created_by_id) == (2_000, "web", person.pk)
    listing = text_of(client.get(reverse("bookings:waitlist")))
    assert "number 1 in the queue" in listing

    services.booking_cancel(booking_id=blocking.pk, actor=SYSTEM)
    offer = fresh(entry).offer_booking
    assert offer is not None
    listing_page = client.get(reverse("bookings:waitlist"))
    assert reverse("bookings:detail", kwargs={"reference": offer.reference}) in (
        listing_page.content.decode()
    )
    assert "Pay for the hold" in text_of(listing_page)
    # The offer is a hold of the customer's own: it shows in My bookings, payable.
    assert offer.reference in text_of(client.get(reverse("bookings:list")))


def test_an_amount_outside_the_class_limits_is_refused_on_the_form(client: Client):
    slot_class, _booking = sold_out_deck()
    person = customer(client)

    response = client.post(
        join_url(slot_class),
        {"mass": "250", "unit": "g", "currency": "JPY", "organisation": personal_org(person).pk},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["mass"]
    assert not WaitlistEntry.objects.exists()


def test_a_class_with_room_sends_the_customer_to_book_instead(client: Client):
    slot_class = deck()
    hold(slot_class, 8_000)
    person = customer(client)

    response = client.post(
        join_url(slot_class),
        {"mass": "2", "unit": "kg", "currency": "JPY", "organisation": personal_org(person).pk},
    )

    assert response.status_code == 302
    assert response["Location"].startswith(
        reverse(
            "bookings:new", kwargs={"code": slot_class.mission.code, "slot_class_id": slot_class.pk}
        )
    )
    assert "mass=2" in response["Location"]
    assert not WaitlistEntry.objects.exists()


def test_withdrawing_on_the_site_is_a_post_by_an_owner_or_booker(client: Client):
    slot_class, _booking = sold_out_deck()
    person = customer(client)
    mine = join(slot_class, 1_000, personal_org(person), channel="web")
    company = OrganisationFactory.create()
    MembershipFactory.create(user=person, organisation=company, role=MemberRole.VIEWER)
    only_viewing = join(slot_class, 1_000, company, channel="web")
    strangers = join(slot_class, 1_000, OrganisationFactory.create(), channel="web")

    def withdraw(entry: WaitlistEntry) -> Any:
        return client.post(reverse("bookings:waitlist-withdraw", kwargs={"entry_id": entry.pk}))

    assert (
        client.get(reverse("bookings:waitlist-withdraw", kwargs={"entry_id": mine.pk})).status_code
        == 405
    )
    assert withdraw(strangers).status_code == 404
    assert withdraw(only_viewing).status_code == 403
    assert withdraw(mine).status_code == 302
    assert fresh(mine).status == WaitlistStatus.WITHDRAWN
    assert fresh(only_viewing).status == fresh(strangers).status == WaitlistStatus.WAITING
    listing = text_of(client.get(reverse("bookings:waitlist")))
    assert "Withdrawn" in listing
    huge = client.post(reverse("bookings:waitlist-withdraw", kwargs={"entry_id": 10**20}))
    assert huge.status_code == 404


@pytest.mark.parametrize("count", [1, 12])
def test_my_waitlist_makes_a_fixed_number_of_queries(
    client: Client, django_assert_num_queries: Any, count: int
):
    person = customer(client)
    organisation = personal_org(person)
    classes = [sold_out_deck()[0] for _ in range(3)]
    entries = [join(classes[i % 3], 1_000 + 100 * i, organisation) for i in range(count)]
    services.booking_cancel(
        booking_id=Booking.objects.filter(slot_class=classes[0]).first().pk,  # type: ignore[union-attr]
        actor=SYSTEM,
    )
    assert any(fresh(e).status == WaitlistStatus.OFFERED for e in entries)

    # session, user, count, the page (entries with class, mission, offer, positions, role)
    with django_assert_num_queries(4):
        response = client.get(reverse("bookings:waitlist"))

    assert response.status_code == 200
    assert len(response.context["rows"]) == count


# --- under real concurrency (PostgreSQL) ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.usefixtures("require_postgres")
def test_never_oversold_when_cancels_expiries_new_holds_and_joins_race():
    """Cancels, the expiry sweep, new holds and joins at once on one sold-out class with a
    queue: the counters equal the rows, never pass the capacity, every offer is one live
    hold for one entry, and no entry is left waiting that the free capacity could take."""
    capacity_g = 20_000
    slot_class = deck(capacity_g=capacity_g, max_mass_g=capacity_g)
    now = timezone.now()
    cancellable = [hold(slot_class, 1_000) for _ in range(12)]
    for _ in range(4):  # lapse in a moment, for the sweep to free
        hold(slot_class, 1_000, now=now - timedelta(minutes=29), hold_minutes=30)
    hold(slot_class, 4_000)
    sizes = [3_000, 500, 2_000, 1_500, 700, 5_000, 1_000, 800, 2_500, 600]
    queued = [join(slot_class, size) for size in sizes]
    organisations = [OrganisationFactory.create() for _ in range(10)]
    later = now + timedelta(minutes=2)

    def cancel(booking: Booking) -> object:
        return services.booking_cancel(booking_id=booking.pk, actor=SYSTEM, now=later)

    def new_hold(organisation: Organisation) -> object:
        return hold(slot_class, 1_000, organisation, now=later)

    def late_join(mass_g: int) -> object:
        return join(slot_class, mass_g, now=later)

    calls: list[Any] = [partial(cancel, b) for b in cancellable]
    calls += [partial(new_hold, org) for org in organisations]
    calls += [partial(late_join, size) for size in (900, 1_200, 4_500)]
    calls += [partial(services.bookings_expire, now=later) for _ in range(2)]
    calls += [partial(waitlists_sweep, now=later)]
    outcomes = run_together(calls)

    expected = (InsufficientCapacity, CapacityAvailable)
    unexpected = [o.error for o in outcomes if o.error and not isinstance(o.error, expected)]
    assert unexpected == []
    mass, units = live_totals(slot_class.pk)
    assert concurrent_counters(slot_class.pk) == (mass, units)
    assert mass <= capacity_g
    entries = list(
        WaitlistEntry.objects.select_related("offer_booking").filter(slot_class=slot_class)
    )
    offers = [e.offer_booking for e in entries if e.status == WaitlistStatus.OFFERED]
    assert offers, "the freed capacity went to nobody on the waitlist"
    assert all(b is not None and b.status == BookingStatus.HELD for b in offers)
    assert len({b.pk for b in offers if b is not None}) == len(offers)
    assert all(
        e.offer_booking is not None and e.offer_booking.mass_g == e.mass_g
        for e in entries
        if e.status == WaitlistStatus.OFFERED
    )
    free_g = capacity_g - mass
    still_waiting = [e.mass_g for e in entries if e.status == WaitlistStatus.WAITING]
    assert all(size > free_g for size in still_waiting), (free_g, still_waiting)
    assert len(entries) >= len(queued)


# --- the back office ----------------------------------------------------------------------


def admin_request(user: Any) -> Any:
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.test import RequestFactory

    request = RequestFactory().post("/admin/")
    request.user = user
    request.session = {}  # type: ignore[assignment]
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    return request


def test_the_admin_lists_each_queue_in_order_with_places_and_offers():
    from django.contrib import admin as django_admin

    from bookings.admin_waitlist import WaitlistEntryAdmin

    slot_class, blocking = sold_out_deck()
    first = join(slot_class, 3_000)
    second = join(slot_class, 1_000)
    offered = join(slot_class, 500)
    model_admin = WaitlistEntryAdmin(WaitlistEntry, django_admin.site)
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    SlotClass.objects.filter(pk=slot_class.pk).update(capacity_g=CAPACITY_G + 500)

    model_admin.serve_queues(admin_request(staff), WaitlistEntry.objects.filter(pk=first.pk))

    rows = list(model_admin.get_queryset(admin_request(staff)).order_by(*model_admin.ordering))
    assert [r.pk for r in rows] == [first.pk, second.pk, offered.pk]
    assert [model_admin.position_display(r) for r in rows] == ["1", "2", "–"]
    assert model_admin.status_display(rows[2]) == "Offered a hold"
    offer = fresh(offered).offer_booking
    assert offer is not None
    assert offer.reference in model_admin.offer_display(rows[2])
    assert not model_admin.has_add_permission(admin_request(staff))
    assert blocking.pk  # the class stays full but for the raised 500 g

    model_admin.withdraw_entries(admin_request(staff), WaitlistEntry.objects.filter(pk=second.pk))
    assert fresh(second).status == WaitlistStatus.WITHDRAWN


def test_the_admin_registers_a_url_with_its_secret_once_and_re_enables_disabled_ones():
    from django.contrib import admin as django_admin

    from bookings.admin_waitlist import WebhookEndpointAddForm, WebhookEndpointAdmin
    from bookings.models import WebhookEndpoint

    reseller = ResellerFactory.create()
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    model_admin = WebhookEndpointAdmin(WebhookEndpoint, django_admin.site)
    refused = WebhookEndpointAddForm({"organisation": reseller.pk, "url": "http://x.example/"})
    assert not refused.is_valid()
    assert "url" in refused.errors
    form = WebhookEndpointAddForm(
        {"organisation": reseller.pk, "url": "https://hooks.example.com/in"}
    )
    assert form.is_valid(), form.errors
    request = admin_request(staff)

    model_admin.save_model(request, form.instance, form, change=False)

    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.startswith("whsec_")
    assert any(endpoint.secret in str(m) for m in request._messages)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        is_active=False, consecutive_failures=20, disabled_at=timezone.now()
    )
    listed = model_admin.get_queryset(admin_request(staff)).get(pk=endpoint.pk)
    assert (model_admin.pending(listed), model_admin.failed(listed)) == (0, 0)

    model_admin.enable_endpoints(admin_request(staff), WebhookEndpoint.objects.all())

    endpoint.refresh_from_db()
    assert endpoint.is_active
    assert endpoint.consecutive_failures == 0
