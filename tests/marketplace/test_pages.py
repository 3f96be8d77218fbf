"""The public catalogue through HTTP: the mission list and a mission's page with its quote."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from marketplace.models import Mission, MissionStatus, ScheduleChange, SlotClass
from tests.factories import LanderPositionFactory, MissionFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

# missions (+ lander), slot classes (+ position, availability subquery), prices, schedule
# changes: measured with one mission and pinned, so a per-row query anywhere shows up here.
CATALOGUE_QUERIES = 4


def text_of(response: Any) -> str:
    """The page as a reader sees it: tags dropped, whitespace collapsed."""
    html = response.content.decode()
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def detail_url(mission: Mission) -> str:
    return reverse("marketplace:mission-detail", kwargs={"code": mission.code})


def quote(client: Client, slot_class: SlotClass, **params: str) -> str:
    query: dict[str, str | int] = {"slot_class": slot_class.pk, **params}
    response = client.get(detail_url(slot_class.mission), query)
    assert response.status_code == 200
    return text_of(response)


def yen(amount: int) -> str:
    return f"¥{amount:,}"


def dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def per_kg_half_up(rate: int, mass_g: int) -> int:
    """The contract's rounding, worked out with Decimal rather than the code under test."""
    exact = Decimal(rate) * Decimal(mass_g) / Decimal(1000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def add_slip(mission: Mission, *, days: int, reason: str) -> ScheduleChange:
    start, end = mission.launch_window_start, mission.launch_window_end
    change = ScheduleChange.objects.create(
        mission=mission,
        old_window_start=start,
        old_window_end=end,
        new_window_start=start + timedelta(days=days),
        new_window_end=end + timedelta(days=days),
        reason=reason,
    )
    Mission.objects.filter(pk=mission.pk).update(
        launch_window_start=start + timedelta(days=days),
        launch_window_end=end + timedelta(days=days),
    )
    return change


def full_mission(**kwargs: Any) -> Mission:
    """A mission with a positioned per-kg class, a per-unit class and a slip: every prefetch
    the pages use has rows to fetch."""
    mission = MissionFactory.create(**kwargs)
    position = LanderPositionFactory.create(lander=mission.lander)
    SlotClassFactory.create(mission=mission, position=position)
    SlotClassFactory.create(mission=mission, capacity_g=20_000, max_mass_g=20_000)
    SlotClassFactory.per_unit(mission=mission)
    add_slip(mission, days=30, reason="Launch vehicle readiness")
    return mission


# --- Mission list ---------------------------------------------------------------------


def test_list_page_query_count_stays_fixed_from_one_mission_to_thirty(
    client: Client, django_assert_num_queries: Any
) -> None:
    full_mission(name="Only flight")
    with django_assert_num_queries(CATALOGUE_QUERIES):
        response = client.get("/")
    assert "Only flight" in text_of(response)

    for number in range(29):
        full_mission(name=f"Flight number {number}")
    with django_assert_num_queries(CATALOGUE_QUERIES):
        response = client.get("/")

    assert response.status_code == 200
    page = text_of(response)
    assert page.count("Details and instant quote") == 30
    assert page.count("1,000 of 1,000 units left") == 30


def test_list_page_capacity_follows_taken_mass(client: Client) -> None:
    mission = MissionFactory.create()
    deck = SlotClassFactory.create(mission=mission, capacity_g=100_000)
    assert "100 kg of 100 kg left" in text_of(client.get("/"))

    SlotClass.objects.filter(pk=deck.pk).update(taken_g=37_500)

    page = text_of(client.get("/"))
    assert "62.5 kg of 100 kg left" in page
    assert "100 kg of 100 kg left" not in page


def test_list_page_capacity_follows_taken_units(client: Client) -> None:
    capsule = SlotClassFactory.per_unit(unit_mass_g=10, capacity_units=1000)
    SlotClass.objects.filter(pk=capsule.pk).update(taken_units=400, taken_g=4_000)

    page = text_of(client.get("/"))

    assert "600 of 1,000 units left" in page
    assert "6 kg of 10 kg" in page


def test_list_page_shows_a_sold_out_class_as_empty(client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=10_000, max_mass_g=10_000)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=10_000)

    response = client.get("/")

    assert "0 g of 10 kg left" in text_of(response)
    assert 'style="width: 0%"' in response.content.decode()


def test_list_page_shows_each_missions_facts_and_from_prices(client: Client) -> None:
    mission = MissionFactory.create(
        code="M9", name="Far side flight", landing_site="Schrödinger basin"
    )
    SlotClassFactory.create(
        mission=mission, min_mass_g=500, prices={"JPY": 180_000_000, "USD": 1_200_000_00}
    )

    page = text_of(client.get("/"))

    for expected in (
        "M9",
        "Far side flight",
        mission.lander.name,
        "Lunar surface",
        "Schrödinger basin",
        "On sale",
        "from ¥90,000,000 for 500 g",
        "¥180,000,000 per kg",
        "from $600,000.00 for 500 g",
    ):
        assert expected in page


def test_list_page_orders_missions_by_launch_soonest_first(client: Client) -> None:
    now = timezone.now()
    for name, days in (("Later flight", 700), ("Soonest flight", 200), ("Middle flight", 450)):
        MissionFactory.create(name=name, launch_window_start=now + timedelta(days=days))

    page = text_of(client.get("/"))

    positions = [page.index(name) for name in ("Soonest flight", "Middle flight", "Later flight")]
    assert positions == sorted(positions)


def test_list_page_leaves_out_completed_and_failed_missions(client: Client) -> None:
    MissionFactory.create(name="Finished flight", status=MissionStatus.COMPLETED)
    MissionFactory.create(name="Lost flight", status=MissionStatus.FAILED)
    MissionFactory.create(name="Closed flight", status=MissionStatus.SALES_CLOSED)

    page = text_of(client.get("/"))

    assert "Finished flight" not in page
    assert "Lost flight" not in page
    assert "Closed flight" in page
    assert "Sales closed" in page


def test_list_page_with_no_missions_says_so(client: Client) -> None:
    response = client.get(reverse("marketplace:mission-list"))

    assert response.status_code == 200
    assert "No missions are open right now" in text_of(response)


def test_list_page_flags_a_rescheduled_mission(client: Client) -> None:
    mission = MissionFactory.create()
    add_slip(mission, days=365, reason="Lander integration")
    add_slip(mission, days=30, reason="Range availability")

    assert "Rescheduled 2 times" in text_of(client.get("/"))


# --- Mission page ---------------------------------------------------------------------


def test_mission_page_answers_404_for_an_unknown_code(client: Client) -> None:
    MissionFactory.create(code="M3")

    assert client.get("/missions/NOPE/").status_code == 404
    assert client.get("/missions/%00/").status_code == 404


def test_mission_page_answers_for_a_finished_mission_without_quoting(client: Client) -> None:
    mission = MissionFactory.create(name="Finished flight", status=MissionStatus.COMPLETED)
    deck = SlotClassFactory.create(mission=mission)

    page = quote(client, deck, mass="2500", unit="g", currency="JPY")

    assert "Finished flight" in page
    assert "Sales for this mission are closed" in page
    assert yen(450_000_000) not in page
    assert "Instant quote" not in page


def test_mission_page_shows_class_limits_prices_and_capacity(client: Client) -> None:
    mission = MissionFactory.create(description="Our far side flight.")
    SlotClassFactory.create(
        mission=mission,
        name="Top deck",
        min_mass_g=1_000,
        max_mass_g=25_000,
        mass_step_g=500,
        max_length_mm=300,
        max_width_mm=200,
        max_height_mm=100,
        max_power_w=15,
    )
    SlotClassFactory.per_unit(
        mission=mission, name="Capsule", unit_mass_g=20, min_quantity=2, max_quantity=5
    )

    page = text_of(client.get(detail_url(mission)))

    for expected in (
        "Our far side flight.",
        "Top deck",
        "1 kg to 25 kg",
        "500 g",
        "300 × 200 × 100 mm",
        "up to 15 W",
        "Web Reseller API Sales (admin)",
        "¥180,000,000 per kg",
        "$1,200,000.00 per kg",
        "100 kg of 100 kg left",
        "Capsule",
        "2 to 5 units",
        "20 g",
        "¥30,000 per unit",
        "1,000 of 1,000 units left",
    ):
        assert expected in page


def test_mission_page_lists_schedule_changes(client: Client) -> None:
    mission = MissionFactory.create()
    old_start = mission.launch_window_start
    add_slip(mission, days=365, reason="Lander integration took longer than planned")

    page = text_of(client.get(detail_url(mission)))

    assert "Schedule changes" in page
    assert "Lander integration took longer than planned" in page
    assert f"{old_start:%Y}" in page
    assert f"{old_start + timedelta(days=365):%Y}" in page


def test_mission_page_without_schedule_changes_has_no_history(client: Client) -> None:
    mission = MissionFactory.create()

    assert "Schedule changes" not in text_of(client.get(detail_url(mission)))


def test_mission_page_makes_a_fixed_number_of_queries_while_quoting(
    client: Client, django_assert_num_queries: Any
) -> None:
    mission = full_mission()
    deck = mission.slot_classes.first()
    assert deck is not None

    with django_assert_num_queries(CATALOGUE_QUERIES):
        response = client.get(
            detail_url(mission),
            {"slot_class": str(deck.pk), "mass": "2.5", "unit": "kg", "currency": "JPY"},
        )

    assert yen(450_000_000) in text_of(response)


def test_book_placeholder_shows_only_while_the_mission_is_bookable(client: Client) -> None:
    on_sale = SlotClassFactory.create().mission
    closed = SlotClassFactory.create(
        mission=MissionFactory.create(status=MissionStatus.SALES_CLOSED)
    ).mission
    past_cutoff = MissionFactory.create(
        launch_window_start=timezone.now() + timedelta(days=10),
        booking_cutoff=timezone.now() - timedelta(days=1),
    )
    SlotClassFactory.create(mission=past_cutoff)

    assert ">Book</button>" in client.get(detail_url(on_sale)).content.decode()
    assert ">Book</button>" not in client.get(detail_url(closed)).content.decode()
    assert ">Book</button>" not in client.get(detail_url(past_cutoff)).content.decode()


# --- Quotes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mass", "unit"),
    [
        ("2500", "g"),
        ("2,500", "g"),
        ("2.5", "kg"),
        ("2.500", "kg"),
        ("2.5 kg", "g"),
        ("２．５", "kg"),
    ],
)
def test_quote_prices_mass_per_kg_exactly(client: Client, mass: str, unit: str) -> None:
    deck = SlotClassFactory.create(prices={"JPY": 180_000_000})

    page = quote(client, deck, mass=mass, unit=unit, currency="JPY")

    assert yen(450_000_000) in page
    assert "2.5 kg at ¥180,000,000 per kg" in page


@pytest.mark.parametrize("mass_g", [1_001, 1_500, 2_347])
def test_quote_rounds_per_kg_prices_half_up_to_the_cent(client: Client, mass_g: int) -> None:
    rate = 1_234_567  # US cents per kg
    deck = SlotClassFactory.create(
        min_mass_g=1, mass_step_g=1, max_mass_g=50_000, prices={"USD": rate, "JPY": 185_000_000}
    )

    page = quote(client, deck, mass=str(mass_g), unit="g", currency="USD")

    assert dollars(per_kg_half_up(rate, mass_g)) in page


def test_quote_rounds_half_a_cent_up() -> None:
    # The test's own arithmetic: 1,234,567 × 1.5 = 1,851,850.5 cents, which must round up.
    assert per_kg_half_up(1_234_567, 1_500) == 1_851_851


def test_quote_prices_units_by_quantity(client: Client) -> None:
    capsule = SlotClassFactory.per_unit(prices={"JPY": 30_000, "USD": 200_00}, max_quantity=10)

    assert yen(90_000) in quote(client, capsule, quantity="3", currency="JPY")
    page = quote(client, capsule, quantity="3", currency="USD")
    assert dollars(600_00) in page
    assert "3 units × $200.00 (30 g in total)" in page


@pytest.mark.parametrize(
    ("mass", "message"),
    [
        ("400", "The minimum per booking in this class is 500 g."),
        ("0", "The minimum per booking in this class is 500 g."),
        ("50100", "The maximum per booking in this class is 50 kg."),
        ("99999999999999999999999999999", "The maximum per booking in this class is 50 kg."),
        ("2550", "Mass is sold in steps of 100 g: try 2.5 kg or 2.6 kg."),
    ],
)
def test_quote_refuses_mass_outside_the_class_limits(
    client: Client, mass: str, message: str
) -> None:
    deck = SlotClassFactory.create(min_mass_g=500, max_mass_g=50_000, mass_step_g=100)

    page = quote(client, deck, mass=mass, unit="g", currency="JPY")

    assert message in page
    assert "Capacity is not reserved until you book." not in page


def test_quote_refuses_more_mass_than_is_left(client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000, max_mass_g=50_000)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=90_000)

    page = quote(client, deck, mass="20", unit="kg", currency="JPY")

    assert "Only 10 kg is still available in this class." in page
    assert yen(3_600_000_000) not in page
    assert yen(1_800_000_000) in quote(client, deck, mass="10", unit="kg", currency="JPY")


def test_quote_says_sold_out_when_less_than_the_minimum_is_left(client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000, min_mass_g=500)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=99_600)

    assert "This class is sold out." in quote(client, deck, mass="1", unit="kg", currency="JPY")


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("0", "The minimum per booking in this class is 2 units."),
        ("11", "The maximum per booking in this class is 10 units."),
        ("2.5", "Enter a whole number of units, such as 3."),
        ("-3", "Enter a number of units above zero."),
        ("abc", "Enter a whole number of units, such as 3."),
        ("", "Enter how many units you want."),
    ],
)
def test_quote_refuses_bad_quantities(client: Client, quantity: str, message: str) -> None:
    capsule = SlotClassFactory.per_unit(min_quantity=2, max_quantity=10)

    page = quote(client, capsule, quantity=quantity, currency="JPY")

    assert message in page
    assert "Capacity is not reserved until you book." not in page


def test_quote_refuses_more_units_than_are_left(client: Client) -> None:
    capsule = SlotClassFactory.per_unit(unit_mass_g=10, capacity_units=100, max_quantity=10)
    SlotClass.objects.filter(pk=capsule.pk).update(taken_units=97, taken_g=970)

    page = quote(client, capsule, quantity="5", currency="JPY")

    assert "Only 3 units are still available in this class." in page
    assert yen(150_000) not in page


@pytest.mark.parametrize(
    ("mass", "message"),
    [
        ("abc", "Enter a number such as 2.5 (kg) or 2500 (g)."),
        ("1e9999", "Enter a number such as 2.5 (kg) or 2500 (g)."),
        ("NaN", "Enter a number such as 2.5 (kg) or 2500 (g)."),
        ("2,5", "Enter a number such as 2.5 (kg) or 2500 (g)."),
        ("\x00", "Null characters are not allowed."),
        ("-5", "Enter a mass above zero."),
        ("", "Enter the mass of your payload."),
        ("2500.5", "Enter whole grams, or switch to kg for up to 3 decimals."),
        ("9" * 80, "That is not a mass we can read."),
    ],
)
def test_quote_explains_unreadable_mass_without_failing(
    client: Client, mass: str, message: str
) -> None:
    deck = SlotClassFactory.create()

    page = quote(client, deck, mass=mass, unit="g", currency="JPY")

    assert message in page
    assert "Capacity is not reserved until you book." not in page


def test_quote_refuses_kilograms_finer_than_a_gram(client: Client) -> None:
    deck = SlotClassFactory.create(min_mass_g=1, mass_step_g=1)

    page = quote(client, deck, mass="2.0005", unit="kg", currency="JPY")

    assert "Enter kilograms with at most 3 decimals (1 g)." in page


def test_quote_refuses_an_unknown_unit(client: Client) -> None:
    deck = SlotClassFactory.create()

    assert "Choose g or kg." in quote(client, deck, mass="2", unit="lb", currency="JPY")


@pytest.mark.parametrize("slot_class", ["999999", "abc", "", "-1", "1" * 40])
def test_quote_for_a_class_not_on_the_mission_says_so(client: Client, slot_class: str) -> None:
    mission = SlotClassFactory.create().mission

    response = client.get(
        detail_url(mission),
        {"slot_class": slot_class, "mass": "2", "unit": "kg", "currency": "JPY"},
    )

    assert response.status_code == 200
    assert "That slot class is not sold on this mission." in text_of(response)


def test_quote_for_another_missions_class_says_so(client: Client) -> None:
    mission = SlotClassFactory.create().mission
    elsewhere = SlotClassFactory.create()

    response = client.get(
        detail_url(mission),
        {"slot_class": str(elsewhere.pk), "mass": "2", "unit": "kg", "currency": "JPY"},
    )

    assert "That slot class is not sold on this mission." in text_of(response)
    assert yen(360_000_000) not in text_of(response)


def test_quote_in_an_unknown_currency_says_so(client: Client) -> None:
    deck = SlotClassFactory.create()

    page = quote(client, deck, mass="2", unit="kg", currency="EUR")

    assert "EUR is not offered for this slot class." in page


def test_quote_in_a_currency_the_class_does_not_offer_says_so(client: Client) -> None:
    deck = SlotClassFactory.create(prices={"JPY": 180_000_000})

    page = quote(client, deck, mass="2", unit="kg", currency="USD")

    assert "USD is not offered for this slot class." in page
    assert "$" not in page.split("Instant quote")[1]


def test_mission_page_links_to_its_public_status_page(client: Client) -> None:
    mission = MissionFactory.create(code="M9")
    page = client.get(f"/missions/{mission.code}/").content.decode()
    assert 'href="/missions/M9/status/"' in page
    assert client.get("/missions/M9/status/").status_code == 200
