"""My bookings and cancelling through HTTP: whose bookings a person sees, what roles allow,
what a cancellation refunds, and that capacity comes back."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MemberRole, Organisation, User
from bookings import services
from bookings.models import Booking, BookingStatus
from bookings.validation import PayloadInput
from marketplace.models import SlotClass
from tests.bookings.test_web_flow import customer, personal_org, text_of
from tests.factories import MembershipFactory, MissionFactory, OrganisationFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

# session, user, count, the page of bookings (class, mission, organisation, payload, role)
LIST_QUERIES = 4


def place(
    user: User,
    *,
    slot_class: SlotClass | None = None,
    organisation: Organisation | None = None,
    mass_g: int = 1000,
    now: Any = None,
) -> Booking:
    slot_class = slot_class or SlotClassFactory.create()
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=organisation or personal_org(user),
        channel="web",
        actor=services.Actor.for_user(user),
        mass_g=mass_g,
        payload=PayloadInput(name="Probe", given=frozenset({"name"})),
        now=now,
    )


def detail(booking: Booking) -> str:
    return reverse("bookings:detail", kwargs={"reference": booking.reference})


def cancel(booking: Booking) -> str:
    return reverse("bookings:cancel", kwargs={"reference": booking.reference})


# --- My bookings ---------------------------------------------------------------------------


def test_my_bookings_shows_own_and_company_bookings_never_others(client: Client) -> None:
    deck = SlotClassFactory.create()
    me = customer(client)
    colleague = customer()
    company = OrganisationFactory.create(name="Lunar Foods KK")
    MembershipFactory.create(user=me, organisation=company, role=MemberRole.VIEWER)
    MembershipFactory.create(user=colleague, organisation=company, role=MemberRole.BOOKER)
    mine = place(me, slot_class=deck)
    companys = place(colleague, slot_class=deck, organisation=company)
    colleagues_own = place(colleague, slot_class=deck)
    strangers = place(customer(), slot_class=deck)

    page = text_of(client.get(reverse("bookings:list")))

    assert mine.reference in page
    assert companys.reference in page
    assert "Lunar Foods KK" in page
    assert colleagues_own.reference not in page
    assert strangers.reference not in page


def test_my_bookings_lists_newest_first_with_live_status(client: Client) -> None:
    me = customer(client)
    lapsed = place(me, now=timezone.now() - timedelta(hours=2))
    live = place(me)
    confirmed = place(me)
    services.booking_confirm(booking_id=confirmed.pk, actor=services.Actor.system())

    page = text_of(client.get(reverse("bookings:list")))

    order = [page.index(b.reference) for b in (confirmed, live, lapsed)]
    assert order == sorted(order)
    assert re.search(rf"{lapsed.reference} Expired", page)
    assert re.search(rf"{live.reference} Held", page)
    assert re.search(rf"{confirmed.reference} Confirmed", page)


def test_my_bookings_shows_class_amount_and_price(client: Client) -> None:
    me = customer(client)
    deck = SlotClassFactory.create(name="Deck Alpha")
    capsule = SlotClassFactory.per_unit(name="Message capsule")
    place(me, slot_class=deck, mass_g=2500)
    services.booking_hold(
        slot_class_id=capsule.pk, currency="JPY", organisation=personal_org(me), channel="web",
        actor=services.Actor.for_user(me), quantity=2,
    )  # fmt: skip

    page = text_of(client.get(reverse("bookings:list")))

    assert "Deck Alpha" in page
    assert "2.5 kg" in page
    assert "¥450,000,000" in page  # 2.5 kg at ¥180,000,000 per kg
    assert "2 units (20 g)" in page
    assert "¥60,000" in page
    assert deck.mission.code in page


def test_my_bookings_with_none_says_so(client: Client) -> None:
    customer(client)

    assert "You have no bookings yet." in text_of(client.get(reverse("bookings:list")))


@pytest.mark.parametrize("count", [1, 20])
def test_my_bookings_makes_a_fixed_number_of_queries(
    client: Client, django_assert_num_queries: Any, count: int
) -> None:
    me = customer(client)
    company = OrganisationFactory.create()
    MembershipFactory.create(user=me, organisation=company, role=MemberRole.OWNER)
    for index in range(count):
        place(me, organisation=company if index % 2 else None)

    with django_assert_num_queries(LIST_QUERIES):
        response = client.get(reverse("bookings:list"))

    assert response.status_code == 200
    assert len(response.context["rows"]) == count


def test_header_links_my_bookings_only_when_signed_in(client: Client) -> None:
    SlotClassFactory.create()
    assert reverse("bookings:list") not in client.get("/").content.decode()

    customer(client)

    assert reverse("bookings:list") in client.get("/").content.decode()


@pytest.mark.parametrize("name", ["bookings:list", "bookings:detail", "bookings:cancel"])
def test_anonymous_visitors_are_sent_to_sign_in(client: Client, name: str) -> None:
    booking = place(customer())
    kwargs = {} if name == "bookings:list" else {"reference": booking.reference}

    response = client.get(reverse(name, kwargs=kwargs))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


# --- roles -----------------------------------------------------------------------------------


def test_a_viewer_sees_the_companys_booking_but_cannot_cancel_it(client: Client) -> None:
    booker, viewer = customer(), customer(client)
    company = OrganisationFactory.create()
    MembershipFactory.create(user=booker, organisation=company, role=MemberRole.BOOKER)
    MembershipFactory.create(user=viewer, organisation=company, role=MemberRole.VIEWER)
    booking = place(booker, organisation=company)

    page = client.get(detail(booking))
    get = client.get(cancel(booking))
    post = client.post(cancel(booking))

    assert page.status_code == 200
    assert cancel(booking) not in page.content.decode()
    assert get.status_code == 403
    assert post.status_code == 403
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD


@pytest.mark.parametrize("role", [MemberRole.OWNER, MemberRole.BOOKER])
def test_owners_and_bookers_cancel_the_companys_bookings(client: Client, role: str) -> None:
    colleague, me = customer(), customer(client)
    company = OrganisationFactory.create()
    MembershipFactory.create(user=colleague, organisation=company, role=MemberRole.BOOKER)
    MembershipFactory.create(user=me, organisation=company, role=role)
    booking = place(colleague, organisation=company)

    assert cancel(booking) in client.get(detail(booking)).content.decode()
    client.post(cancel(booking))

    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED


def test_another_customers_booking_is_404_and_stays_put(client: Client) -> None:
    booking = place(customer())
    customer(client)

    assert client.get(detail(booking)).status_code == 404
    assert client.get(cancel(booking)).status_code == 404
    assert client.post(cancel(booking), {"reason": "mine now"}).status_code == 404
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD


# --- cancelling --------------------------------------------------------------------------------


def test_cancelling_a_hold_previews_no_refund_and_frees_the_capacity(client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000, max_mass_g=50_000)
    me = customer(client)
    booking = place(me, slot_class=deck, mass_g=50_000)
    place(me, slot_class=deck, mass_g=50_000)
    deck.refresh_from_db()
    assert deck.taken_g == 100_000

    preview = text_of(client.get(cancel(booking)))
    response = client.post(cancel(booking), {"reason": "Changed our plans."})

    assert "¥0" in preview
    assert "Nothing is paid on a hold, so nothing is refunded." in preview
    assert response.status_code == 302
    assert response["Location"] == detail(booking)
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED
    deck.refresh_from_db()
    assert deck.taken_g == 50_000
    again = place(me, slot_class=deck, mass_g=50_000)  # the freed capacity can be booked
    assert again.status == BookingStatus.HELD
    page = text_of(client.get(detail(booking)))
    assert f"Booking {booking.reference} is cancelled and its capacity released." in page
    assert "Changed our plans." in page  # the reason, in the history
    assert "Cancelled · You" in page


def test_cancelling_a_confirmed_booking_shows_the_tier_and_records_the_refund(
    client: Client,
) -> None:
    mission = MissionFactory.create(launch_window_start=timezone.now() + timedelta(days=200))
    deck = SlotClassFactory.create(mission=mission, tiers={365: 90, 180: 50, 0: 0})
    me = customer(client)
    booking = place(me, slot_class=deck, mass_g=1000)
    services.booking_confirm(booking_id=booking.pk, actor=services.Actor.system())
    expected = booking.price_amount * 50 // 100

    preview = client.get(cancel(booking))
    text = text_of(preview)
    assert f"¥{expected:,}" in text
    assert "at least 180 days before launch: 50% refunded" in text
    assert preview.context["tier"].days_before_launch == 180
    response = client.post(cancel(booking))

    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED
    assert booking.refund_amount == expected
    page = text_of(client.get(response["Location"]))
    assert f"Refund due: ¥{expected:,}." in page


def test_cancelling_close_to_launch_refunds_nothing_and_says_why(client: Client) -> None:
    mission = MissionFactory.create(
        launch_window_start=timezone.now() + timedelta(days=100),
        booking_cutoff=timezone.now() + timedelta(days=10),
    )
    deck = SlotClassFactory.create(mission=mission, tiers={365: 90, 180: 50})
    me = customer(client)
    booking = place(me, slot_class=deck)
    services.booking_confirm(booking_id=booking.pk, actor=services.Actor.system())

    text = text_of(client.get(cancel(booking)))

    assert "¥0" in text
    assert "No rule of the cancellation policy applies" in text


@pytest.mark.parametrize("state", ["cancelled", "expired"])
def test_a_finished_booking_cannot_be_cancelled_again(client: Client, state: str) -> None:
    me = customer(client)
    if state == "expired":
        booking = place(me, now=timezone.now() - timedelta(hours=1))
    else:
        booking = place(me)
        services.booking_cancel(booking_id=booking.pk, actor=services.Actor.for_user(me))

    page = client.get(cancel(booking))
    response = client.post(cancel(booking))

    assert "This booking can no longer be cancelled." in text_of(page)
    assert cancel(booking) not in client.get(detail(booking)).content.decode()
    assert response.status_code == 302
    booking.refresh_from_db()
    assert booking.status == ("cancelled" if state == "cancelled" else BookingStatus.HELD)


def test_cancel_without_the_csrf_token_is_refused() -> None:
    client = Client(enforce_csrf_checks=True)
    me = customer(client)
    booking = place(me)

    response = client.post(cancel(booking))

    assert response.status_code == 403
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD


def test_cancel_page_renders_in_japanese(client: Client) -> None:
    me = customer(client)
    booking = place(me)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})

    page = client.get(cancel(booking))

    text = text_of(page)
    assert '<html lang="ja">' in page.content.decode()
    assert f"ご予約 {booking.reference} のキャンセル" in text
    assert "仮押さえの段階ではお支払いがないため、返金はありません。" in text
    assert "この予約をキャンセル" in text
