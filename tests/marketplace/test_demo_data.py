"""``manage.py load_demo_data``: a realistic catalogue, idempotent, sellable whenever it runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, DeniedParty, Membership, Organisation, User
from accounts.services import api_key_authenticate
from marketplace.management.commands.load_demo_data import (
    MIN_SALES_LEAD,
    MISSIONS,
    calendar_shift_years,
)
from marketplace.models import (
    CancellationTier,
    LanderModel,
    LanderPosition,
    Mission,
    MissionStatus,
    PaymentPlan,
    PaymentPlanStep,
    Pricing,
    ScheduleChange,
    SlotClass,
    SlotClassPrice,
)
from marketplace.money import Money
from marketplace.services import mission_check_allocations

pytestmark = pytest.mark.django_db

MODELS = [
    LanderModel,
    LanderPosition,
    Mission,
    ScheduleChange,
    SlotClass,
    SlotClassPrice,
    CancellationTier,
    User,
    EmailAddress,
    Organisation,
    Membership,
    ApiKey,
    PaymentPlan,
    PaymentPlanStep,
    DeniedParty,
]


def load() -> list[str]:
    out = StringIO()
    call_command("load_demo_data", stdout=out)
    return out.getvalue().splitlines()


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def printed_key(lines: list[str]) -> str:
    return next(line.strip() for line in lines if line.strip().startswith("msk_"))


def test_running_twice_leaves_the_same_rows() -> None:
    first_lines = load()
    first = counts()
    first_ids = set(SlotClass.objects.values_list("pk", flat=True))

    second_lines = load()

    assert counts() == first
    assert set(SlotClass.objects.values_list("pk", flat=True)) == first_ids
    assert first["Mission"] == 2
    assert first["ScheduleChange"] == 1
    assert first["ApiKey"] == 1
    # The key is printed once; the second run says how to get another instead.
    assert api_key_authenticate(printed_key(first_lines)).organisation.name == "Orbit Travel"
    assert not any(line.strip().startswith("msk_") for line in second_lines)
    assert any("issue_api_key --reseller" in line for line in second_lines)


def test_m3_slipped_a_year_with_a_recorded_reason() -> None:
    load()

    m3 = Mission.objects.get(code="M3")
    change = m3.schedule_changes.get()
    assert change.reason
    assert change.new_window_start == m3.launch_window_start
    assert m3.launch_window_start.year - change.old_window_start.year == 1
    assert m3.booking_cutoff <= m3.launch_window_start


def test_the_catalogue_is_on_sale_within_each_landers_capacity() -> None:
    load()

    now = timezone.now()
    for mission in Mission.objects.select_related("lander"):
        assert mission.status == MissionStatus.ON_SALE
        assert mission.name_ja
        assert mission.booking_cutoff > now + MIN_SALES_LEAD - timedelta(days=1)
        allocated = mission_check_allocations(mission_id=mission.pk)
        assert allocated <= mission.lander.payload_capacity_g
        for slot_class in mission.slot_classes.all():
            slot_class.full_clean()  # every class passes the model's own rules
            assert slot_class.name_ja
            assert slot_class.position is not None
            assert slot_class.position.lander_id == mission.lander_id
            assert {p.currency for p in slot_class.prices.all()} == {"JPY", "USD"}
            assert slot_class.cancellation_tiers.count() == 3


def test_m3_sells_deck_rover_orbit_and_capsules_at_realistic_prices() -> None:
    load()

    classes = {c.name: c for c in SlotClass.objects.filter(mission__code="M3")}
    deck, capsule = classes["Lander deck"], classes["Message capsule"]
    assert {"Rover-hosted", "Orbit release"} <= classes.keys()
    assert classes["Orbit release"].destination == "lunar_orbit"
    assert [deck.price_for("JPY"), deck.price_for("USD")] == [
        Money(180_000_000, "JPY"),
        Money(120_000_000, "USD"),
    ]
    assert capsule.pricing == Pricing.PER_UNIT
    assert (capsule.unit_mass_g, capsule.inert_only, capsule.channels) == (1, True, ["web", "api"])
    assert capsule.hold_minutes_web == 20
    assert capsule.total_price(currency="USD", mass_g=3, quantity=3).amount == 600_00


def test_demo_people_can_sign_in() -> None:
    load()

    admin = User.objects.get(email="admin@moonslot.example")
    customer = User.objects.get(email="customer@moonslot.example")
    assert admin.is_superuser
    assert admin.check_password("moonslot-admin-demo")
    assert customer.check_password("moonslot-customer-demo")
    assert not customer.is_staff
    assert EmailAddress.objects.filter(user=customer, verified=True, primary=True).exists()
    assert Organisation.objects.filter(memberships__user=customer, kind="personal").exists()


def test_a_rerun_does_not_reset_a_changed_password() -> None:
    load()
    admin = User.objects.get(email="admin@moonslot.example")
    admin.set_password("changed-by-the-owner")
    admin.save()

    lines = load()

    admin.refresh_from_db()
    assert admin.check_password("changed-by-the-owner")
    assert any("admin@moonslot.example" in line and "left as it was" in line for line in lines)


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 11, 21, tzinfo=UTC),
        datetime(2027, 3, 1, tzinfo=UTC),
        datetime(2027, 12, 31, tzinfo=UTC),
        datetime(2031, 6, 15, tzinfo=UTC),
    ],
)
def test_the_calendar_moves_on_whole_years_so_sales_stay_open(now: datetime) -> None:
    years = calendar_shift_years(now)

    for spec in MISSIONS:
        start = spec.launch_window[0].replace(year=spec.launch_window[0].year + years)
        assert start - spec.cutoff_before_launch >= now + MIN_SALES_LEAD
    first = MISSIONS[0]
    earlier = first.launch_window[0].replace(year=first.launch_window[0].year + years - 1)
    assert years == 0 or earlier - first.cutoff_before_launch < now + MIN_SALES_LEAD


def test_the_demo_missions_are_listed_on_the_site_and_the_api() -> None:
    load()
    client = Client()

    page = client.get("/")
    api = client.get("/api/v1/missions/")

    assert page.status_code == 200
    assert {"M3", "M4"} <= set(re.findall(r"\bM[34]\b", page.content.decode()))
    assert api.status_code == 200
    assert {m["code"] for m in api.json()["results"]} >= {"M3", "M4"}


def test_kilogram_classes_are_paid_in_milestones_and_capsules_in_full() -> None:
    load()
    plan = PaymentPlan.objects.get()
    shares = plan.deposit_percent + sum(step.percent for step in plan.steps.all())
    assert shares == 100
    for slot_class in SlotClass.objects.all():
        expected = None if slot_class.pricing == Pricing.PER_UNIT else plan.pk
        assert slot_class.payment_plan_id == expected, slot_class
    assert DeniedParty.objects.filter(active=True).count() == 2
