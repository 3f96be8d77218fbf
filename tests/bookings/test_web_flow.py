"""The public booking flow through HTTP: from the mission page's Book button to the hold page,
with every refusal a person can meet, the one-time form token, CSRF, languages and e-mails."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.core import mail
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MemberRole, Organisation, OrganisationKind, User
from accounts.services import personal_organisation_create
from bookings import services
from bookings.forms import MOONSLOT_TERMS_VERSION
from bookings.models import (
    Booking,
    BookingStatus,
    Payment,
    PaymentProvider,
    PaymentStatus,
    ReviewStatus,
)
from marketplace.models import MissionStatus, SlotClass
from tests.factories import (
    LanderPositionFactory,
    MembershipFactory,
    MissionFactory,
    OrganisationFactory,
    SlotClassFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# session, user, booking (class, mission, organisation, payload, role), events, and the
# payment panel's two (payments, their refunds)
DETAIL_QUERIES = 7  # + the open re-accommodation offer, if any


# --- helpers -----------------------------------------------------------------------------


def customer(client: Client | None = None, *, language: str = "en") -> User:
    """A signed-up customer: a user with a personal organisation, signed in on ``client``."""
    user = UserFactory.create(preferred_language=language)
    personal_organisation_create(user=user)
    if client is not None:
        client.force_login(user)
    return user


def personal_org(user: User) -> Organisation:
    return Organisation.objects.get(kind=OrganisationKind.PERSONAL, memberships__user=user)


def book_url(slot_class: SlotClass) -> str:
    return reverse(
        "bookings:new", kwargs={"code": slot_class.mission.code, "slot_class_id": slot_class.pk}
    )


def text_of(response: Any) -> str:
    """The page as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def open_form(client: Client, slot_class: SlotClass, **query: str) -> tuple[Any, str]:
    response = client.get(book_url(slot_class), query)
    assert response.status_code == 200
    return response, response.context["token"]


def capsule_data(token: str, organisation: Organisation, **overrides: str) -> dict[str, str]:
    data = {
        "token": token,
        "organisation": str(organisation.pk),
        "quantity": "3",
        "currency": "JPY",
        "description": "Hello from Earth, 2026.",
        "inert_confirmed": "on",
        "accept_terms": "on",
        "action": "hold",
    }
    return {key: value for key, value in {**data, **overrides}.items() if value is not None}


def deck_data(token: str, organisation: Organisation, **overrides: str) -> dict[str, str]:
    data = {
        "token": token,
        "organisation": str(organisation.pk),
        "mass": "2.5",
        "unit": "kg",
        "currency": "JPY",
        "payload_name": "Regolith sampler",
        "description": "A small scoop and camera.",
        "payload_mass": "2400",
        "dimensions_0": "300",
        "dimensions_1": "200",
        "dimensions_2": "100",
        "power_w": "15",
        "battery_wh": "50",
        "pressure_kpa": "",
        "propellant_g": "",
        "other_hazard": "",
        "export_classification": "EAR99",
        "accept_terms": "on",
        "action": "hold",
    }
    return {key: value for key, value in {**data, **overrides}.items() if value is not None}


def per_kg_half_up(rate: int, mass_g: int) -> int:
    """The contract's rounding, worked out with Decimal rather than the code under test."""
    exact = Decimal(rate) * Decimal(mass_g) / Decimal(1000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def hold(
    client: Client,
    slot_class: SlotClass,
    build: Callable[..., dict[str, str]],
    **overrides: str | None,
) -> Any:
    """Open the form, fill it with ``build``'s answers changed by ``overrides`` (``None``
    leaves a field out), and place the hold."""
    user = client.session.get("_auth_user_id")
    assert user is not None
    _page, token = open_form(client, slot_class)
    data: dict[str, str | None] = {**build(token, personal_org(User.objects.get(pk=user)))}
    data.update(overrides)
    return client.post(book_url(slot_class), {k: v for k, v in data.items() if v is not None})


# --- from the mission page to the form ----------------------------------------------------


def test_mission_page_book_button_opens_the_booking_form_with_the_quote(client: Client) -> None:
    deck = SlotClassFactory.create()
    customer(client)
    mission_url = reverse("marketplace:mission-detail", kwargs={"code": deck.mission.code})

    page = client.get(
        mission_url, {"slot_class": str(deck.pk), "mass": "2.5", "unit": "kg", "currency": "USD"}
    ).content.decode()
    assert f'action="{book_url(deck)}"' in page
    assert '<input type="hidden" name="mass" value="2.5">' in page

    form_page = client.get(book_url(deck), {"mass": "2.5", "unit": "kg", "currency": "USD"})
    assert "$3,000,000.00" in text_of(form_page)  # 2.5 kg at $1,200,000.00 per kg


def test_book_button_is_absent_for_a_class_sold_only_by_sales(client: Client) -> None:
    deck = SlotClassFactory.create(sold_on_web=False)
    mission_url = reverse("marketplace:mission-detail", kwargs={"code": deck.mission.code})
    customer(client)

    assert book_url(deck) not in client.get(mission_url).content.decode()
    assert client.get(book_url(deck)).status_code == 404


def test_anonymous_visitor_is_sent_to_sign_in_and_back(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()

    response = client.get(book_url(capsule), {"quantity": "2"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login") + "?next=")
    assert "book" in response["Location"]
    assert client.post(book_url(capsule), {}).status_code == 302
    assert Booking.objects.count() == 0


@pytest.mark.parametrize(
    "path", ["/missions/T0/book/99999999999999999999999/", "/missions/NOPE/book/1/"]
)
def test_unknown_or_absurd_class_numbers_answer_404(client: Client, path: str) -> None:
    customer(client)

    assert client.get(path).status_code == 404


def test_a_class_booked_under_another_missions_code_answers_404(client: Client) -> None:
    deck = SlotClassFactory.create()
    other = MissionFactory.create()
    customer(client)

    url = reverse("bookings:new", kwargs={"code": other.code, "slot_class_id": deck.pk})

    assert client.get(url).status_code == 404


def test_closed_mission_shows_no_form_and_refuses_a_post(client: Client) -> None:
    deck = SlotClassFactory.create(mission=MissionFactory.create(status=MissionStatus.ON_SALE))
    user = customer(client)
    _page, token = open_form(client, deck)
    deck.mission.status = MissionStatus.SALES_CLOSED
    deck.mission.save()

    page = client.get(book_url(deck))
    response = client.post(book_url(deck), deck_data(token, personal_org(user)))

    assert "Sales for this mission have closed" in text_of(page)
    assert 'name="token"' not in page.content.decode()
    assert "Sales for this mission have closed" in text_of(response)
    assert Booking.objects.count() == 0


# --- capsules end to end -------------------------------------------------------------------


def test_booking_a_capsule_ends_on_the_hold_page(client: Client) -> None:
    capsule = SlotClassFactory.per_unit(prices={"JPY": 30_000, "USD": 200_00})
    user = customer(client)

    form_page, token = open_form(client, capsule)
    assert "¥30,000" in text_of(form_page)  # the default quantity of one, priced
    before = timezone.now()
    response = client.post(book_url(capsule), capsule_data(token, personal_org(user)))
    after = timezone.now()

    booking = Booking.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "bookings:detail", kwargs={"reference": booking.reference}
    )
    assert booking.channel == "web"
    assert booking.created_by == user
    assert booking.organisation == personal_org(user)
    assert (booking.quantity, booking.mass_g) == (3, 30)
    assert (booking.price_amount, booking.currency) == (90_000, "JPY")
    assert booking.payload.description == "Hello from Earth, 2026."
    assert booking.payload.inert_confirmed is True
    assert booking.terms_version == MOONSLOT_TERMS_VERSION == "2026-11"
    assert booking.terms_accepted_at is not None
    assert before <= booking.terms_accepted_at <= after

    page = client.get(response["Location"])
    markup = page.content.decode()
    assert f'<h1 class="reference">{booking.reference}</h1>' in markup
    assert "¥90,000" in text_of(page)
    assert f'href="{reverse("payments:pay", args=[booking.reference])}"' in markup
    remaining = re.search(r'data-remaining="(\d+)"', markup)
    assert remaining is not None
    assert 19 * 60 <= int(remaining.group(1)) <= 20 * 60  # the class's 20-minute web hold
    assert "js/countdown.js" in markup
    assert re.search(r"\b(19|20):\d\d\b", text_of(page))  # the server-rendered clock
    assert "Held" in text_of(page)
    assert f"Your hold {booking.reference} is placed" in text_of(page)


def test_capsule_without_the_inert_confirmation_is_refused(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    customer(client)

    response = hold(client, capsule, capsule_data, inert_confirmed=None)

    assert response.status_code == 200
    assert "Confirm that the item is inert to book this class." in text_of(response)
    assert Booking.objects.count() == 0


def test_capsule_without_a_message_is_refused(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    customer(client)

    response = hold(client, capsule, capsule_data, description="   ")

    assert "Write what your capsule carries." in text_of(response)
    assert Booking.objects.count() == 0


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("11", "The maximum is 10 units per booking."),
        ("0", "The minimum is 1 units."),
        ("two", "Enter a whole number of units, such as 3."),
    ],
)
def test_capsule_quantity_outside_the_limits_is_refused(
    client: Client, quantity: str, message: str
) -> None:
    capsule = SlotClassFactory.per_unit(max_quantity=10)
    customer(client)

    response = hold(client, capsule, capsule_data, quantity=quantity)

    assert message in text_of(response)
    assert Booking.objects.count() == 0


# --- per-kg bookings with a payload --------------------------------------------------------


def test_per_kg_booking_records_the_payload_declaration(client: Client) -> None:
    position = LanderPositionFactory.create()
    deck = SlotClassFactory.create(
        mission=MissionFactory.create(lander=position.lander), position=position
    )
    customer(client)

    response = hold(client, deck, deck_data, mass="2.5", unit="kg")

    booking = Booking.objects.select_related("payload").get()
    assert response.status_code == 302
    assert booking.mass_g == 2500
    assert booking.quantity is None
    assert booking.price_amount == per_kg_half_up(180_000_000, 2500)
    payload = booking.payload
    assert payload.name == "Regolith sampler"
    assert payload.mass_g == 2400
    assert payload.dimensions_mm == [300, 200, 100]
    assert payload.power_w == 15
    assert payload.hazards == [{"type": "lithium_battery", "energy_wh": 50}]
    assert payload.export_classification == "EAR99"
    assert payload.review_status == ReviewStatus.DATA_COMPLETE

    page = text_of(client.get(response["Location"]))
    assert "Regolith sampler" in page
    assert "Lithium battery: 50 Wh" in page
    assert "300 × 200 × 100 mm" in page


def test_mass_typed_in_grams_is_exact(client: Client) -> None:
    deck = SlotClassFactory.create(mass_step_g=1, min_mass_g=1)
    customer(client)

    hold(client, deck, deck_data, mass="1,234", unit="g", payload_mass="1.2 kg")

    booking = Booking.objects.select_related("payload").get()
    assert booking.mass_g == 1234
    assert booking.payload.mass_g == 1200
    assert booking.price_amount == per_kg_half_up(180_000_000, 1234)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"power_w": "25"}, "25 W exceeds the class's maximum power of 20 W."),
        (
            {"dimensions_0": "500"},
            "The length of 500 mm exceeds the class's maximum of 400 mm (400 × 400 × 400 mm).",
        ),
        ({"mass": "400", "unit": "g", "payload_mass": "300"}, "The minimum is 500 g."),
        ({"mass": "2550", "unit": "g"}, "Book in steps of 100 g."),
        ({"mass": "51", "unit": "kg"}, "The maximum is 50 kg per booking."),
        ({"payload_mass": "2.6 kg"}, "The payload weighs more than the 2.5 kg booked."),
        ({"battery_wh": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"export_classification": ""}, "Choose the payload's export classification."),
        ({"payload_name": ""}, "Give your payload a name."),
        ({"dimensions_2": ""}, "Give all three dimensions in millimetres."),
        ({"mass": "lots"}, "Enter a number such as 2.5 (kg) or 2500 (g)."),
        ({"mass": "9" * 80}, "That is not a mass we can read."),
        ({"power_w": "9" * 30}, "Ensure this value is less than or equal to 2147483647."),
        ({"currency": "EUR"}, "EUR is not offered for this slot class."),
    ],
)
def test_refusals_name_the_limit_and_hold_nothing(
    client: Client, overrides: dict[str, str], message: str
) -> None:
    deck = SlotClassFactory.create(
        min_mass_g=500, max_mass_g=50_000, mass_step_g=100, max_power_w=20
    )
    customer(client)

    response = hold(client, deck, deck_data, **overrides)

    assert response.status_code == 200
    assert message in text_of(response)
    assert "The hold was not placed." in text_of(response)
    assert Booking.objects.count() == 0
    deck.refresh_from_db()
    assert deck.taken_g == 0


def test_sold_out_class_says_so(client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000, min_mass_g=500)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=99_800)
    customer(client)

    response = hold(client, deck, deck_data, mass="1", unit="kg", payload_mass="900")

    assert "This class is sold out." in text_of(response)
    assert Booking.objects.count() == 0


def test_more_than_is_left_names_what_is_left(client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=99_000)
    customer(client)

    response = hold(client, deck, deck_data, mass="2.5", unit="kg")

    assert "Only 1 kg is still available in this class." in text_of(response)
    assert Booking.objects.count() == 0


def test_units_more_than_are_left_names_what_is_left(client: Client) -> None:
    capsule = SlotClassFactory.per_unit(capacity_units=100, max_quantity=10)
    SlotClass.objects.filter(pk=capsule.pk).update(taken_units=98, taken_g=980)
    customer(client)

    response = hold(client, capsule, capsule_data, quantity="3")

    assert "Only 2 units are still available in this class." in text_of(response)
    assert Booking.objects.count() == 0


def test_terms_not_accepted_is_refused(client: Client) -> None:
    deck = SlotClassFactory.create()
    customer(client)

    response = hold(client, deck, deck_data, accept_terms=None)

    assert "Accept the booking terms to place the hold." in text_of(response)
    assert f"(version {MOONSLOT_TERMS_VERSION})" in text_of(response)
    assert Booking.objects.count() == 0


def update_price(client: Client, slot_class: SlotClass, *, mass: str) -> tuple[Any, str]:
    """Press "Update price" with only the amount filled in."""
    user = User.objects.get(pk=client.session["_auth_user_id"])
    _page, token = open_form(client, slot_class)
    data = {"token": token, "organisation": str(personal_org(user).pk), "mass": mass,
            "unit": "kg", "currency": "JPY", "action": "price"}  # fmt: skip
    return client.post(book_url(slot_class), data), token


def test_update_price_shows_the_price_without_holding_or_scolding(client: Client) -> None:
    deck = SlotClassFactory.create()
    customer(client)

    response, token = update_price(client, deck, mass="3")

    page = text_of(response)
    assert f"¥{per_kg_half_up(180_000_000, 3000):,}" in page
    assert "Give your payload a name." not in page
    assert "Accept the booking terms" not in page
    assert Booking.objects.count() == 0
    assert response.context["token"] == token  # still usable for the hold


def test_update_price_still_names_an_amount_outside_the_limits(client: Client) -> None:
    deck = SlotClassFactory.create(max_mass_g=50_000)
    customer(client)

    response, _token = update_price(client, deck, mass="60")

    assert "The maximum is 50 kg per booking." in text_of(response)


# --- one hold per form --------------------------------------------------------------------


def test_double_submit_places_one_hold(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    user = customer(client)
    _page, token = open_form(client, capsule)
    data = capsule_data(token, personal_org(user))

    first = client.post(book_url(capsule), data)
    second = client.post(book_url(capsule), data)

    booking = Booking.objects.get()
    detail = reverse("bookings:detail", kwargs={"reference": booking.reference})
    assert first["Location"] == detail
    assert second.status_code == 302
    assert second["Location"] == detail
    capsule.refresh_from_db()
    assert capsule.taken_units == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_submits_of_one_form_hold_once(require_postgres: None) -> None:
    # A real double click: two requests with the same session and token, released together.
    # Both find the token unspent in the session; the cache claim lets one through.
    capsule = SlotClassFactory.per_unit()
    user = customer()
    opener = Client()
    opener.force_login(user)
    _page, token = open_form(opener, capsule)
    data = capsule_data(token, personal_org(user))
    start = threading.Barrier(2)
    statuses: list[int] = []

    def submit() -> None:
        try:
            browser = Client()
            browser.cookies = opener.cookies
            start.wait(timeout=10)
            statuses.append(browser.post(book_url(capsule), data).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert statuses == [302, 302]
    assert Booking.objects.count() == 1
    capsule.refresh_from_db()
    assert capsule.taken_units == 3


def test_a_submit_while_the_same_form_is_being_placed_holds_nothing_more(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    user = customer(client)
    _page, token = open_form(client, capsule)
    cache.set(f"bookings:form-token:{token}", "pending")  # the first click is in flight

    response = client.post(book_url(capsule), capsule_data(token, personal_org(user)))

    assert response.status_code == 302
    assert response["Location"] == reverse("bookings:list")
    assert Booking.objects.count() == 0


def test_a_refused_form_can_be_corrected_and_sent_again(client: Client) -> None:
    capsule = SlotClassFactory.per_unit(max_quantity=10)
    user = customer(client)
    _page, token = open_form(client, capsule)

    refused = client.post(book_url(capsule), capsule_data(token, personal_org(user), quantity="11"))
    placed = client.post(book_url(capsule), capsule_data(token, personal_org(user), quantity="2"))

    assert refused.status_code == 200
    assert placed.status_code == 302
    assert Booking.objects.get().quantity == 2


def test_a_form_token_not_issued_to_this_session_is_refused(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    user = customer(client)

    response = client.post(book_url(capsule), capsule_data("0" * 32, personal_org(user)))

    assert response.status_code == 200
    assert "This form has expired." in text_of(response)
    assert response.context["token"] != "0" * 32
    assert Booking.objects.count() == 0


def test_two_forms_open_place_two_holds(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    user = customer(client)
    _page, first = open_form(client, capsule)
    _page, second = open_form(client, capsule)

    client.post(book_url(capsule), capsule_data(first, personal_org(user)))
    client.post(book_url(capsule), capsule_data(second, personal_org(user)))

    assert Booking.objects.count() == 2


# --- which organisation --------------------------------------------------------------------


def test_a_company_booker_chooses_the_organisation(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    user = customer(client)
    company = OrganisationFactory.create(name="Lunar Foods KK")
    MembershipFactory.create(user=user, organisation=company, role=MemberRole.BOOKER)
    viewing = OrganisationFactory.create(name="Watch Only Ltd")
    MembershipFactory.create(user=user, organisation=viewing, role=MemberRole.VIEWER)

    page, token = open_form(client, capsule)
    markup = page.content.decode()
    assert f'<option value="{personal_org(user).pk}" selected>Personal account</option>' in markup
    assert "Lunar Foods KK" in markup
    assert "Watch Only Ltd" not in markup
    client.post(book_url(capsule), capsule_data(token, company))

    assert Booking.objects.get().organisation == company


@pytest.mark.parametrize("role", [MemberRole.VIEWER, None])
def test_booking_for_an_organisation_one_may_not_book_for_is_refused(
    client: Client, role: str | None
) -> None:
    capsule = SlotClassFactory.per_unit()
    customer(client)
    other = OrganisationFactory.create()
    if role is not None:
        MembershipFactory.create(user=User.objects.get(), organisation=other, role=role)

    response = hold(client, capsule, capsule_data, organisation=str(other.pk))

    assert "You cannot book for that organisation." in text_of(response)
    assert Booking.objects.count() == 0


def test_a_user_without_an_organisation_books_for_a_new_personal_one(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    user = UserFactory.create()  # made by sales, say: no sign-up, no organisation yet
    client.force_login(user)

    _page, token = open_form(client, capsule)
    client.post(book_url(capsule), capsule_data(token, personal_org(user)))

    assert Booking.objects.get().organisation.kind == OrganisationKind.PERSONAL


# --- the hold page -------------------------------------------------------------------------


def held_booking(user: User, slot_class: SlotClass | None = None, **kwargs: Any) -> Booking:
    slot_class = slot_class or SlotClassFactory.per_unit()
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=personal_org(user),
        channel="web",
        actor=services.Actor.for_user(user),
        quantity=1,
        payload=services.PayloadInput(
            description="hi", inert_confirmed=True, given=frozenset({"description"})
        ),
        terms_version=MOONSLOT_TERMS_VERSION,
        **kwargs,
    )


def test_hold_page_reference_is_case_insensitive(client: Client) -> None:
    booking = held_booking(customer(client))

    response = client.get(f"/bookings/{booking.reference.lower()}/")

    assert response.status_code == 200
    assert booking.reference in response.content.decode()


@pytest.mark.parametrize("reference", ["ABC", "ABCDEFG", "AB%00CD", "ABCD..", "ZZZZZZ"])
def test_hold_page_for_odd_references_is_404(client: Client, reference: str) -> None:
    customer(client)

    assert client.get(f"/bookings/{reference}/").status_code == 404


def test_another_customers_booking_is_404_on_every_page(client: Client) -> None:
    booking = held_booking(customer())
    customer(client)
    detail = reverse("bookings:detail", kwargs={"reference": booking.reference})
    cancel = reverse("bookings:cancel", kwargs={"reference": booking.reference})

    assert client.get(detail).status_code == 404
    assert client.get(cancel).status_code == 404
    assert client.post(cancel).status_code == 404
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD


def test_a_lapsed_hold_shows_expired_without_a_pay_link(client: Client) -> None:
    user = customer(client)
    booking = held_booking(user, now=timezone.now() - timedelta(hours=1))

    page = client.get(reverse("bookings:detail", kwargs={"reference": booking.reference}))

    text = text_of(page)
    assert "Expired" in text
    assert "This hold has expired" in text
    assert reverse("payments:pay", args=[booking.reference]) not in page.content.decode()
    assert "data-countdown" not in page.content.decode()
    assert "The hold lapsed before it was paid." in text  # the timeline, before any sweep


def test_a_confirmed_booking_page_is_the_confirmation(client: Client) -> None:
    user = customer(client)
    booking = held_booking(user)
    services.booking_confirm(booking_id=booking.pk, actor=services.Actor.system("payment"))

    page = client.get(reverse("bookings:detail", kwargs={"reference": booking.reference}))

    text = text_of(page)
    assert f"Confirmed — your reference is {booking.reference}" in text
    assert reverse("payments:pay", args=[booking.reference]) not in page.content.decode()
    assert "data-countdown" not in page.content.decode()
    assert "Moonslot, automatically" in text  # who confirmed, in words


def test_hold_page_timeline_says_who_did_what(client: Client) -> None:
    user = customer(client)
    booking = held_booking(user)

    text = text_of(client.get(reverse("bookings:detail", kwargs={"reference": booking.reference})))

    assert re.search(r"Held · You", text)
    assert "Version 2026-11" in text


def test_hold_page_makes_a_fixed_number_of_queries(
    client: Client, django_assert_num_queries: Any
) -> None:
    user = customer(client)
    booking = held_booking(user)
    services.booking_confirm(booking_id=booking.pk, actor=services.Actor.for_user(user))
    # A paid booking, so the payment panel's refunds query runs too (it is skipped when
    # there is no payment to look under).
    Payment.objects.create(
        booking=booking, provider=PaymentProvider.STRIPE, attempt=1,
        amount=booking.price_amount, currency=booking.currency, status=PaymentStatus.SUCCEEDED,
        succeeded_at=timezone.now(), idempotency_key=f"test-{booking.reference}",
    )  # fmt: skip
    url = reverse("bookings:detail", kwargs={"reference": booking.reference})

    with django_assert_num_queries(DETAIL_QUERIES):
        response = client.get(url)

    assert response.status_code == 200
    assert re.search(r"Paid by card: ¥30,000 ?\.", text_of(response))


# --- CSRF ----------------------------------------------------------------------------------


def test_a_hold_without_the_csrf_token_is_refused() -> None:
    capsule = SlotClassFactory.per_unit()
    client = Client(enforce_csrf_checks=True)
    user = customer(client)
    _page, token = open_form(client, capsule)

    response = client.post(book_url(capsule), capsule_data(token, personal_org(user)))

    assert response.status_code == 403
    assert Booking.objects.count() == 0


def test_a_hold_with_the_csrf_token_goes_through() -> None:
    capsule = SlotClassFactory.per_unit()
    client = Client(enforce_csrf_checks=True)
    user = customer(client)
    page, token = open_form(client, capsule)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert csrf is not None

    data = capsule_data(token, personal_org(user), csrfmiddlewaretoken=csrf.group(1))
    response = client.post(book_url(capsule), data)

    assert response.status_code == 302
    assert Booking.objects.count() == 1


# --- languages and e-mails -----------------------------------------------------------------


def test_booking_form_renders_in_japanese(client: Client) -> None:
    deck = SlotClassFactory.create(name="Deck", name_ja="デッキ", min_mass_g=500)
    customer(client)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})

    page = client.get(book_url(deck))
    refused = hold(client, deck, deck_data, mass="400", unit="g", payload_mass="300")

    assert '<html lang="ja">' in page.content.decode()
    assert "デッキ" in text_of(page)
    assert "仮押さえする" in text_of(page)
    assert "最小は 500 g です。" in text_of(refused)
    assert Booking.objects.count() == 0


def test_hold_e_mail_links_to_the_booking_page_in_the_customers_language(
    client: Client, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.SITE_URL = "https://moonslot.example"
    capsule = SlotClassFactory.per_unit()
    customer(client, language="ja")

    with django_capture_on_commit_callbacks(execute=True):
        hold(client, capsule, capsule_data)

    booking = Booking.objects.get()
    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    assert f"https://moonslot.example/bookings/{booking.reference}/" in body
    assert f"ご予約 {booking.reference} を仮押さえしました。" in body


def test_hold_e_mail_in_english(client: Client, django_capture_on_commit_callbacks: Any) -> None:
    capsule = SlotClassFactory.per_unit()
    customer(client, language="en")

    with django_capture_on_commit_callbacks(execute=True):
        hold(client, capsule, capsule_data)

    body = mail.outbox[0].body
    reference = Booking.objects.get().reference
    assert f"Your booking {reference} is held." in body
    assert "Pay before" in body
    assert f"/bookings/{reference}/" in body
