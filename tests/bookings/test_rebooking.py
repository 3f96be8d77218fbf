"""A customer whose payload will not be ready moves a confirmed booking to a later mission
(``booking_rebook``): same reference, everything paid carried over, the source class's
rebooking fee owed; on the site ("Move to a later mission") and through the API
(``POST /bookings/{reference}/rebook/``)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MemberRole
from bookings.exceptions import BookingValidationError, InsufficientCapacity, InvalidTransition
from bookings.models import Booking, BookingEvent, EventType
from bookings.reaccommodation import booking_rebook, rebooking_fee
from bookings.services import Actor
from marketplace.models import SlotClass
from tests.bookings.api_helpers import BOOKING_KEYS, keyed_client
from tests.bookings.test_reaccommodation import (
    another_mission_class,
    place,
    signed_in,
    slip,
    taken,
    text_of,
    web_customer,
)
from tests.factories import (
    MembershipFactory,
    MissionFactory,
    ResellerFactory,
    SlotClassFactory,
    UserFactory,
)
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
REBOOK = "/api/v1/bookings/{reference}/rebook/"


def fee_of(price: int, percent: int) -> int:
    """The fee worked out with Decimal, rounded half up, independently of the code."""
    exact = Decimal(price) * Decimal(percent) / Decimal(100)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def earlier_class(**overrides: Any) -> SlotClass:
    """A class on a mission launching before ``another_mission_class``'s."""
    return SlotClassFactory.create(**overrides)


def sooner_class(**overrides: Any) -> SlotClass:
    """A class on a mission launching before ``earlier_class``'s."""
    now = timezone.now()
    sooner = MissionFactory.create(
        launch_window_start=now + timedelta(days=200),
        launch_window_end=now + timedelta(days=230),
        booking_cutoff=now + timedelta(days=100),
    )
    return SlotClassFactory.create(mission=sooner, **overrides)


def rebook_url(booking: Booking) -> str:
    return reverse("bookings:rebook", kwargs={"reference": booking.reference})


# --- the service -------------------------------------------------------------------------


def test_rebooking_moves_to_a_later_mission_for_the_fee(
    django_capture_on_commit_callbacks: Any,
) -> None:
    source = earlier_class(rebooking_fee_percent=15)
    user, personal = web_customer()
    booking = place(source, personal, channel="web", user=user, mass_g=1700)
    target = another_mission_class()
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        done = booking_rebook(
            booking_id=booking.pk, target_slot_class_id=target.pk, actor=Actor.for_user(user)
        )

    moved = Booking.objects.get(pk=booking.pk)
    assert (moved.reference, moved.slot_class_id) == (booking.reference, target.pk)
    assert (moved.price_amount, moved.currency) == (booking.price_amount, "JPY")
    expected_fee = fee_of(booking.price_amount, 15)
    assert (done.fee.amount, done.fee.currency) == (expected_fee, "JPY")
    (event,) = BookingEvent.objects.filter(booking=booking, type=EventType.BOOKING_REBOOKED)
    assert event.data["fee"] == {"amount": expected_fee, "currency": "JPY"}
    assert (event.data["from_slot_class"], event.data["to_slot_class"]) == (source.pk, target.pk)
    assert taken(source)[0] == 0
    assert taken(target)[0] == 1700
    (notice,) = mail.outbox
    assert notice.to == [user.email]
    assert "rebooking fee of ¥" in notice.body


@pytest.mark.parametrize(
    ("price", "currency", "percent"),
    [(1_234_567, "JPY", 10), (12_345, "USD", 15), (99, "USD", 50), (5_000_000, "JPY", 0)],
)
def test_the_fee_is_the_classs_share_of_the_price_rounded_half_up(
    price: int, currency: str, percent: int
) -> None:
    slot_class = SlotClassFactory.create(rebooking_fee_percent=percent)
    booking = Booking(slot_class=slot_class, price_amount=price, currency=currency)

    fee = rebooking_fee(booking)

    assert (fee.amount, fee.currency) == (fee_of(price, percent), currency)


def test_rebooking_to_a_mission_that_does_not_launch_later_is_refused() -> None:
    source = earlier_class()
    booking = place(source, ResellerFactory.create())
    earlier = sooner_class()

    with pytest.raises(BookingValidationError) as refused:
        booking_rebook(booking_id=booking.pk, target_slot_class_id=earlier.pk, actor=SYSTEM)

    assert "launches after" in refused.value.fields["slot_class"][0]
    assert taken(source)[0] == 1000


def test_only_a_confirmed_booking_can_be_rebooked() -> None:
    hold = place(earlier_class(), ResellerFactory.create(), confirm=False)
    target = another_mission_class()

    with pytest.raises(InvalidTransition, match="Only a confirmed booking"):
        booking_rebook(booking_id=hold.pk, target_slot_class_id=target.pk, actor=SYSTEM)

    assert taken(target)[0] == 0


def test_rebooking_while_a_schedule_change_offer_is_open_is_refused() -> None:
    source = earlier_class()
    booking = place(source, ResellerFactory.create())
    target = another_mission_class()
    slip(source.mission, days=10)

    with pytest.raises(InvalidTransition, match="free of charge"):
        booking_rebook(booking_id=booking.pk, target_slot_class_id=target.pk, actor=SYSTEM)


def test_rebooking_into_a_class_without_room_is_refused_and_changes_nothing() -> None:
    source = earlier_class()
    booking = place(source, ResellerFactory.create())
    full = another_mission_class(capacity_g=1000, max_mass_g=1000)
    place(full, ResellerFactory.create())

    with pytest.raises(InsufficientCapacity):
        booking_rebook(booking_id=booking.pk, target_slot_class_id=full.pk, actor=SYSTEM)

    assert Booking.objects.get(pk=booking.pk).slot_class_id == source.pk
    assert (taken(source)[0], taken(full)[0]) == (1000, 1000)
    assert not BookingEvent.objects.filter(type=EventType.BOOKING_REBOOKED).exists()


def test_the_same_rebooking_again_returns_it_with_the_first_fee() -> None:
    source = earlier_class(rebooking_fee_percent=20)
    booking = place(source, ResellerFactory.create())
    target = another_mission_class()
    first = booking_rebook(booking_id=booking.pk, target_slot_class_id=target.pk, actor=SYSTEM)
    # A later change of the policy does not change what was owed.
    SlotClass.objects.filter(pk=source.pk).update(rebooking_fee_percent=50)

    again = booking_rebook(booking_id=booking.pk, target_slot_class_id=target.pk, actor=SYSTEM)

    assert again.fee == first.fee
    assert taken(target)[0] == 1000
    assert BookingEvent.objects.filter(type=EventType.BOOKING_REBOOKED).count() == 1


# --- the site ----------------------------------------------------------------------------


def test_the_rebook_page_lists_later_classes_with_room_and_the_fee() -> None:
    source = earlier_class(rebooking_fee_percent=10)
    user, personal = web_customer()
    booking = place(source, personal, channel="web", user=user)
    later = another_mission_class(name="Later deck")
    full = another_mission_class(name="Full deck", capacity_g=1000, max_mass_g=1000)
    place(full, ResellerFactory.create())
    sooner_class(name="Sooner deck")

    page = signed_in(user).get(rebook_url(booking))

    text = text_of(page)
    assert page.status_code == 200
    assert "Later deck" in text
    assert "Full deck" not in text
    assert "Sooner deck" not in text
    assert f"Rebooking fee: ¥{fee_of(booking.price_amount, 10):,} (10% of the price)" in text
    assert later.mission.code in text


def test_moving_on_the_site_rebooks_and_shows_the_fee() -> None:
    source = earlier_class()
    user, personal = web_customer()
    booking = place(source, personal, channel="web", user=user)
    later = another_mission_class()
    client = signed_in(user)

    response = client.post(rebook_url(booking), {"slot_class": later.pk})

    assert response.status_code == 302
    assert Booking.objects.get(pk=booking.pk).slot_class_id == later.pk
    detail = client.get(response["Location"])
    assert f"has moved to mission {later.mission.code}" in text_of(detail)
    assert "rebooking fee of ¥" in text_of(detail)


def test_a_class_not_listed_is_refused_on_the_page() -> None:
    source = earlier_class()
    user, personal = web_customer()
    booking = place(source, personal, channel="web", user=user)
    another_mission_class()
    sooner = sooner_class()

    response = signed_in(user).post(rebook_url(booking), {"slot_class": sooner.pk})

    assert response.status_code == 200
    assert Booking.objects.get(pk=booking.pk).slot_class_id == source.pk


def test_the_rebook_page_needs_the_csrf_token_and_a_member() -> None:
    source = earlier_class()
    user, personal = web_customer()
    booking = place(source, personal, channel="web", user=user)
    later = another_mission_class()
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(user)
    stranger = signed_in(web_customer()[0])
    viewer = UserFactory.create()
    MembershipFactory.create(user=viewer, organisation=personal, role=MemberRole.VIEWER)

    assert checked.post(rebook_url(booking), {"slot_class": later.pk}).status_code == 403
    assert stranger.get(rebook_url(booking)).status_code == 404
    assert stranger.post(rebook_url(booking), {"slot_class": later.pk}).status_code == 404
    assert signed_in(viewer).post(rebook_url(booking), {"slot_class": later.pk}).status_code == (
        403
    )
    assert Booking.objects.get(pk=booking.pk).slot_class_id == source.pk


def test_the_rebook_page_renders_in_japanese() -> None:
    source = earlier_class()
    user, personal = web_customer(language="ja")
    booking = place(source, personal, channel="web", user=user)
    later = another_mission_class()
    client = signed_in(user)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})

    page = client.get(rebook_url(booking))

    assert page.status_code == 200
    assert '<html lang="ja">' in page.content.decode()
    assert later.mission.name_ja in text_of(page)
    assert "予約一覧" in text_of(page)


# --- the API -----------------------------------------------------------------------------


def test_rebooking_through_the_api() -> None:
    reseller = ResellerFactory.create()
    client = keyed_client(reseller)
    source = earlier_class(rebooking_fee_percent=10)
    booking = place(source, reseller)
    later = another_mission_class()
    url = REBOOK.replace("{reference}", booking.reference)

    first = client.post(url, {"slot_class": later.pk}, format="json", HTTP_IDEMPOTENCY_KEY="r1")
    replay = client.post(url, {"slot_class": later.pk}, format="json", HTTP_IDEMPOTENCY_KEY="r1")

    body = assert_matches_schema(first, REBOOK, "post", 200)
    assert set(body["booking"]) == BOOKING_KEYS
    assert body["booking"]["reference"] == booking.reference
    assert body["booking"]["slot_class"] == later.pk
    assert body["booking"]["price"] == {"amount": booking.price_amount, "currency": "JPY"}
    assert body["fee"] == {"amount": fee_of(booking.price_amount, 10), "currency": "JPY"}
    assert assert_matches_schema(replay, REBOOK, "post", 200) == body
    assert replay["Idempotent-Replayed"] == "true"
    assert BookingEvent.objects.filter(type=EventType.BOOKING_REBOOKED).count() == 1


def test_api_rebooking_errors_follow_the_contract(api_client: Any) -> None:
    reseller = ResellerFactory.create()
    client = keyed_client(reseller)
    booking = place(earlier_class(), reseller)
    hold = place(earlier_class(), reseller, confirm=False)
    full = another_mission_class(capacity_g=1000, max_mass_g=1000)
    place(full, ResellerFactory.create())
    later = another_mission_class()

    def post(target: Booking, body: dict[str, Any], via: Any = client) -> Any:
        return via.post(REBOOK.replace("{reference}", target.reference), body, format="json")

    no_key = assert_matches_schema(
        post(booking, {"slot_class": later.pk}, api_client), REBOOK, "post", 401
    )
    foreign = assert_matches_schema(
        post(booking, {"slot_class": later.pk}, keyed_client()), REBOOK, "post", 404
    )
    no_room = assert_matches_schema(post(booking, {"slot_class": full.pk}), REBOOK, "post", 409)
    held = assert_matches_schema(post(hold, {"slot_class": later.pk}), REBOOK, "post", 409)
    missing = assert_matches_schema(post(booking, {}), REBOOK, "post", 400)
    unknown = assert_matches_schema(
        post(booking, {"slot_class": 2_000_000_000}), REBOOK, "post", 400
    )

    assert no_key["code"] == "not_authenticated"
    assert foreign["code"] == "not_found"
    assert (no_room["code"], no_room["available_g"]) == ("insufficient_capacity", 0)
    assert held["code"] == "invalid_state"
    assert list(missing["fields"]) == list(unknown["fields"]) == ["slot_class"]
    assert Booking.objects.get(pk=booking.pk).slot_class_id != later.pk
