"""The booking transitions, checked against figures the test computes itself."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from accounts.models import CreditLimit
from bookings import services
from bookings.exceptions import (
    BookingValidationError,
    ChannelNotAllowed,
    CreditLimitExceeded,
    CurrencyNotOffered,
    HoldExpired,
    HoldLimitExceeded,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
)
from bookings.models import (
    REFERENCE_ALPHABET,
    Booking,
    BookingEvent,
    BookingStatus,
    OutboxMessage,
    ReviewStatus,
)
from bookings.services import Actor
from bookings.validation import PayloadInput
from marketplace.models import MissionStatus, SlotClass
from tests.factories import MissionFactory, OrganisationFactory, ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")


def hold(slot_class: SlotClass, organisation=None, **kwargs) -> Booking:
    kwargs.setdefault("currency", "JPY")
    kwargs.setdefault("channel", "api")
    if not slot_class.is_per_unit:
        kwargs.setdefault("mass_g", 1000)
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=organisation or OrganisationFactory.create(),
        actor=SYSTEM,
        **kwargs,
    )


def taken(slot_class: SlotClass) -> tuple[int, int]:
    slot_class.refresh_from_db()
    return slot_class.taken_g, slot_class.taken_units


def test_hold_takes_capacity_and_fixes_the_price_by_the_contract_rule() -> None:
    slot_class = SlotClassFactory.create(prices={"JPY": 180_000_000, "USD": 1_234_567})
    booking = hold(slot_class, mass_g=2500)
    usd = hold(slot_class, mass_g=1100, currency="USD")
    assert booking.status == BookingStatus.HELD
    assert booking.price_amount == 450_000_000  # ¥180M/kg × 2.5 kg
    # 1,234,567 ¢/kg × 1.1 kg = 1,358,023.7 ¢ → rounded half up to 1,358,024 ¢
    assert usd.price_amount == 1_358_024
    assert taken(slot_class) == (3600, 0)
    assert len(booking.reference) == 6
    assert set(booking.reference) <= set(REFERENCE_ALPHABET)
    event = BookingEvent.objects.get(booking=booking)
    assert (event.type, event.to_status) == ("booking.held", "held")
    assert OutboxMessage.objects.filter(topic="booking.notify").count() == 2


def test_a_reference_collision_is_retried_under_a_fresh_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slot_class = SlotClassFactory.create()
    first = hold(slot_class)
    drawn = iter([first.reference, first.reference, "FRESH2"])
    monkeypatch.setattr(services, "new_reference", lambda: next(drawn))

    with transaction.atomic():  # a caller's transaction survives the collisions
        second = hold(slot_class)
        assert Booking.objects.filter(slot_class=slot_class).count() == 2

    assert second.reference == "FRESH2"
    assert taken(slot_class) == (2000, 0)
    assert BookingEvent.objects.filter(booking=second, type="booking.held").count() == 1


def test_per_unit_hold_counts_units_and_mass() -> None:
    capsule = SlotClassFactory.per_unit(unit_mass_g=10, capacity_units=5, max_quantity=5)
    booking = hold(capsule, quantity=3)
    assert (booking.mass_g, booking.quantity, booking.price_amount) == (30, 3, 90_000)
    assert taken(capsule) == (30, 3)
    with pytest.raises(InsufficientCapacity) as excinfo:
        hold(capsule, quantity=3)
    assert excinfo.value.available_units == 2
    assert excinfo.value.available_g == 20


def test_hold_refuses_what_the_class_does_not_allow() -> None:
    slot_class = SlotClassFactory.create(min_mass_g=500, max_mass_g=5000, mass_step_g=100)
    for mass, needle in [(400, "minimum"), (5100, "maximum"), (550, "steps")]:
        with pytest.raises(BookingValidationError) as excinfo:
            hold(slot_class, mass_g=mass)
        assert needle in excinfo.value.fields["mass_g"][0]
    with pytest.raises(BookingValidationError) as excinfo:
        hold(slot_class, mass_g=1000, payload=PayloadInput.from_mapping(
            {"dimensions_mm": [100, 900, 100], "power_w": 99}
        ))  # fmt: skip
    assert "900 mm" in excinfo.value.fields["payload.dimensions_mm"][0]
    assert "20 W" in excinfo.value.fields["payload.power_w"][0]
    with pytest.raises(CurrencyNotOffered):
        hold(slot_class, currency="EUR")
    assert taken(slot_class) == (0, 0)


def test_hold_refuses_closed_sales_and_wrong_channel() -> None:
    web_only = SlotClassFactory.create(sold_on_api=False)
    with pytest.raises(ChannelNotAllowed):
        hold(web_only)
    past_cutoff = SlotClassFactory.create(
        mission=MissionFactory.create(booking_cutoff=timezone.now() - timedelta(minutes=1))
    )
    with pytest.raises(SalesClosed):
        hold(past_cutoff)
    planned = SlotClassFactory.create(mission=MissionFactory.create(status=MissionStatus.PLANNED))
    with pytest.raises(SalesClosed):
        hold(planned)


def test_hold_beyond_capacity_is_refused_with_what_is_left() -> None:
    slot_class = SlotClassFactory.create(capacity_g=3000, max_mass_g=3000)
    hold(slot_class, mass_g=2000)
    with pytest.raises(InsufficientCapacity) as excinfo:
        hold(slot_class, mass_g=1100)
    assert excinfo.value.available_g == 1000
    hold(slot_class, mass_g=1000)
    assert taken(slot_class) == (3000, 0)


def test_lapsed_hold_is_free_before_the_sweep_and_released_by_the_next_hold() -> None:
    slot_class = SlotClassFactory.create(capacity_g=2000, max_mass_g=2000)
    start = timezone.now()
    first = hold(slot_class, mass_g=2000, now=start, hold_minutes=10)
    later = start + timedelta(minutes=11)
    # Reads see it free at once, before any write.
    annotated = SlotClass.objects.with_availability(later).get(pk=slot_class.pk)
    assert annotated.available_g == 2000
    annotated_booking = Booking.objects.with_live_status(later).get(pk=first.pk)
    assert getattr(annotated_booking, "live_status") == "expired"  # noqa: B009
    assert first.status_at(later) == "expired"
    second = hold(slot_class, mass_g=2000, now=later)
    first.refresh_from_db()
    assert first.status == BookingStatus.EXPIRED
    assert second.status == BookingStatus.HELD
    assert taken(slot_class) == (2000, 0)
    assert BookingEvent.objects.filter(booking=first, type="booking.expired").count() == 1


def test_confirm_is_idempotent_and_refused_after_expiry() -> None:
    slot_class = SlotClassFactory.create()
    start = timezone.now()
    booking = hold(slot_class, now=start, hold_minutes=10)
    confirmed = services.booking_confirm(booking_id=booking.pk, actor=SYSTEM, now=start)
    again = services.booking_confirm(booking_id=booking.pk, actor=SYSTEM, now=start)
    assert confirmed.status == again.status == BookingStatus.CONFIRMED
    assert BookingEvent.objects.filter(booking=booking, type="booking.confirmed").count() == 1

    lapsed = hold(slot_class, now=start, hold_minutes=10)
    with pytest.raises(HoldExpired):  # not swept yet
        services.booking_confirm(
            booking_id=lapsed.pk, actor=SYSTEM, now=start + timedelta(minutes=10)
        )
    services.bookings_expire(now=start + timedelta(minutes=10))
    with pytest.raises(HoldExpired):  # swept
        services.booking_confirm(booking_id=lapsed.pk, actor=SYSTEM)


def test_cancel_frees_capacity_and_records_the_policy_refund() -> None:
    mission = MissionFactory.create(launch_window_start=timezone.now() + timedelta(days=200))
    slot_class = SlotClassFactory.create(mission=mission, tiers={365: 90, 180: 50, 0: 0})
    booking = hold(slot_class, mass_g=1000)
    services.booking_confirm(booking_id=booking.pk, actor=SYSTEM)
    cancelled = services.booking_cancel(booking_id=booking.pk, actor=SYSTEM, reason="changed plans")
    assert cancelled.status == BookingStatus.CANCELLED
    assert cancelled.refund_amount == booking.price_amount * 50 // 100
    assert taken(slot_class) == (0, 0)
    # Cancelling again changes nothing.
    again = services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)
    assert again.cancelled_at == cancelled.cancelled_at
    assert BookingEvent.objects.filter(booking=booking, type="booking.cancelled").count() == 1
    with pytest.raises(InvalidTransition):
        services.booking_confirm(booking_id=booking.pk, actor=SYSTEM)


def test_cancelling_a_hold_refunds_nothing() -> None:
    booking = hold(SlotClassFactory.create())
    cancelled = services.booking_cancel(booking_id=booking.pk, actor=SYSTEM)
    assert cancelled.refund_amount == 0


def test_sweep_expires_only_lapsed_holds_and_is_safe_to_run_twice() -> None:
    slot_class = SlotClassFactory.create()
    start = timezone.now()
    lapsing = [hold(slot_class, now=start, hold_minutes=5) for _ in range(3)]
    confirmed = hold(slot_class, now=start, hold_minutes=5)
    services.booking_confirm(booking_id=confirmed.pk, actor=SYSTEM, now=start)
    live = hold(slot_class, now=start, hold_minutes=60)
    at = start + timedelta(minutes=6)
    assert services.bookings_expire(now=at) == 3
    assert services.bookings_expire(now=at) == 0
    statuses = dict(Booking.objects.values_list("pk", "status"))
    assert {statuses[b.pk] for b in lapsing} == {"expired"}
    assert statuses[confirmed.pk] == "confirmed"
    assert statuses[live.pk] == "held"
    assert taken(slot_class) == (2000, 0)


def test_held_mass_cap_counts_only_live_holds() -> None:
    reseller = ResellerFactory.create(held_mass_cap_g=3000)
    slot_class = SlotClassFactory.create()
    start = timezone.now()
    hold(slot_class, reseller, mass_g=2000, now=start, hold_minutes=10)
    with pytest.raises(HoldLimitExceeded):
        hold(slot_class, reseller, mass_g=1100, now=start)
    # Once the first hold lapses it no longer counts.
    hold(slot_class, reseller, mass_g=3000, now=start + timedelta(minutes=11))


def test_confirm_on_account_respects_the_credit_limit_per_currency() -> None:
    reseller = ResellerFactory.create()
    slot_class = SlotClassFactory.create(prices={"JPY": 1_000_000})
    CreditLimit.objects.create(organisation=reseller, currency="JPY", amount=2_500_000)
    first = hold(slot_class, reseller, mass_g=2000)  # ¥2,000,000
    second = hold(slot_class, reseller, mass_g=1000)  # ¥1,000,000
    services.booking_confirm(booking_id=first.pk, actor=SYSTEM, on_account=True)
    with pytest.raises(CreditLimitExceeded):
        services.booking_confirm(booking_id=second.pk, actor=SYSTEM, on_account=True)
    second.refresh_from_db()
    assert second.status == BookingStatus.HELD


def test_payload_update_merges_checks_limits_and_stops_at_the_cutoff() -> None:
    slot_class = SlotClassFactory.create()
    booking = hold(slot_class, payload=PayloadInput.from_mapping({"name": "Rover"}))
    services.booking_payload_update(
        booking_id=booking.pk,
        actor=SYSTEM,
        payload=PayloadInput.from_mapping(
            {"mass_g": 900, "dimensions_mm": [100, 100, 100], "export_classification": "EAR99"}
        ),
    )
    booking.payload.refresh_from_db()
    assert booking.payload.name == "Rover"
    assert booking.payload.dimensions_mm == [100, 100, 100]
    assert booking.payload.review_status == ReviewStatus.DATA_COMPLETE
    with pytest.raises(BookingValidationError):
        services.booking_payload_update(
            booking_id=booking.pk, actor=SYSTEM, payload=PayloadInput.from_mapping({"mass_g": 5000})
        )
    services.booking_confirm(booking_id=booking.pk, actor=SYSTEM)
    after_cutoff = slot_class.mission.booking_cutoff + timedelta(seconds=1)
    with pytest.raises(SalesClosed):
        services.booking_payload_update(
            booking_id=booking.pk,
            actor=SYSTEM,
            payload=PayloadInput.from_mapping({"name": "x"}),
            now=after_cutoff,
        )


def test_counters_match_the_bookings_after_a_mixed_history() -> None:
    slot_class = SlotClassFactory.create(capacity_g=20_000, max_mass_g=20_000)
    start = timezone.now()
    bookings = [
        hold(slot_class, mass_g=1000 + 100 * i, now=start, hold_minutes=5) for i in range(6)
    ]
    services.booking_confirm(booking_id=bookings[0].pk, actor=SYSTEM, now=start)
    services.booking_cancel(booking_id=bookings[1].pk, actor=SYSTEM, now=start)
    services.bookings_expire(now=start + timedelta(minutes=5))
    expected = bookings[0].mass_g  # only the confirmed one still holds capacity
    live = Booking.objects.filter(slot_class=slot_class, status__in=["held", "confirmed"])
    assert live.aggregate(total=Sum("mass_g"))["total"] == expected
    assert taken(slot_class) == (expected, 0)


def test_capacity_counter_cannot_pass_capacity_in_the_database() -> None:
    slot_class = SlotClassFactory.create(capacity_g=1000, max_mass_g=1000)
    with pytest.raises(IntegrityError), transaction.atomic():
        SlotClass.objects.filter(pk=slot_class.pk).update(taken_g=1001)


def test_events_feed_numbers_only_committed_events_in_order() -> None:
    org = ResellerFactory.create()
    slot_class = SlotClassFactory.create()
    booking = hold(slot_class, org)
    services.booking_confirm(booking_id=booking.pk, actor=SYSTEM)
    hold(slot_class)  # another organisation's
    feed = services.booking_event_feed(organisation=org)
    assert [e.type for e in feed] == ["booking.held", "booking.confirmed"]
    assert feed[0].seq is not None
    assert feed[1].seq is not None
    assert feed[0].seq < feed[1].seq
    assert services.booking_event_feed(organisation=org, after=feed[-1].seq or 0) == []
