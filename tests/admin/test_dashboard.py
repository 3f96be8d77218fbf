"""The sales dashboard: capacity, money, expiring holds, payload reviews and resellers, each
figure checked against numbers the test works out itself, at a fixed number of queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from bookings.models import BookingStatus, ReviewStatus
from marketplace.models import MissionStatus
from marketplace.money import Money
from tests.admin.helpers import admin_client_with_mfa, bulk_bookings, staff_user
from tests.factories import MissionFactory, OrganisationFactory, ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"


@pytest.fixture
def finance_client(finance: User) -> Client:
    return admin_client_with_mfa(finance)


def class_line(response: Any, slot_class_pk: int) -> Any:
    for mission in response.context["missions"]:
        for line in mission.classes:
            if line.slot_class.pk == slot_class_pk:
                return line
    raise AssertionError(f"class {slot_class_pk} not on the dashboard")


def test_capacity_counts_confirmed_as_sold_live_holds_as_held_and_lapsed_holds_as_free(
    finance_client: Client,
) -> None:
    deck = SlotClassFactory.create(capacity_g=100_000, min_mass_g=1_000)
    capsule = SlotClassFactory.per_unit(mission=deck.mission, capacity_units=500, unit_mass_g=10)
    customer = OrganisationFactory.create()
    now = timezone.now()
    bulk_bookings(deck, customer, 3, status=BookingStatus.CONFIRMED, mass_g=2_000)
    bulk_bookings(deck, customer, 2, mass_g=1_500)
    bulk_bookings(deck, customer, 4, mass_g=1_000, hold_expires_at=now - timedelta(hours=2))
    bulk_bookings(deck, customer, 5, status=BookingStatus.CANCELLED, mass_g=1_000)
    bulk_bookings(deck, customer, 1, status=BookingStatus.EXPIRED, mass_g=1_000)
    bulk_bookings(capsule, customer, 6, status=BookingStatus.CONFIRMED, mass_g=30)
    finished = SlotClassFactory.create(
        mission=MissionFactory.create(status=MissionStatus.COMPLETED)
    )

    response = finance_client.get(DASHBOARD)

    deck_line = class_line(response, deck.pk)
    assert (deck_line.sold_g, deck_line.held_g, deck_line.free_g) == (6_000, 3_000, 91_000)
    assert (deck_line.sold_percent, deck_line.held_percent, deck_line.free_percent) == (6, 3, 91)
    capsule_line = class_line(response, capsule.pk)
    assert (capsule_line.sold_g, capsule_line.sold_units, capsule_line.free_g) == (180, 18, 4_820)
    with pytest.raises(AssertionError):
        class_line(response, finished.pk)
    page = response.content.decode()
    assert 'style="width: 6%"' in page
    assert 'style="width: 91%"' in page


def test_money_is_summed_per_currency_from_confirmed_bookings_only(
    finance_client: Client,
) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    other_mission = SlotClassFactory.create(capacity_g=1_000_000)
    customer = OrganisationFactory.create()
    confirmed = BookingStatus.CONFIRMED
    bulk_bookings(deck, customer, 2, status=confirmed, price_amount=180_000_000)
    bulk_bookings(other_mission, customer, 1, status=confirmed, price_amount=20_000_000)
    bulk_bookings(
        deck,
        customer,
        3,
        status=confirmed,
        currency="USD",
        price_amount=1_200_000_00,
        on_account=True,
    )
    bulk_bookings(deck, customer, 1, status=confirmed, price_amount=7_000, on_account=True)
    bulk_bookings(deck, customer, 4, price_amount=999_999_999)  # held: not revenue
    bulk_bookings(deck, customer, 2, status=BookingStatus.CANCELLED, price_amount=999_999_999)

    response = finance_client.get(DASHBOARD)

    assert response.context["revenue"] == [
        Money(2 * 180_000_000 + 20_000_000 + 7_000, "JPY"),
        Money(3 * 1_200_000_00, "USD"),
    ]
    # No payments recorded: every confirmed price is still owed; on account, the invoiced part.
    assert response.context["outstanding"] == response.context["revenue"]
    assert response.context["outstanding_on_account"] == [
        Money(7_000, "JPY"),
        Money(3 * 1_200_000_00, "USD"),
    ]
    by_mission = {line.mission.pk: line.revenue for line in response.context["missions"]}
    assert by_mission[other_mission.mission_id] == [Money(20_000_000, "JPY")]
    assert "¥380,007,000" in response.content.decode()


def test_holds_expiring_within_a_day_and_payloads_awaiting_review_are_listed(
    finance_client: Client,
) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    customer = OrganisationFactory.create()
    now = timezone.now()
    soon = bulk_bookings(deck, customer, 2, hold_expires_at=now + timedelta(hours=3))
    bulk_bookings(deck, customer, 1, hold_expires_at=now + timedelta(days=3))
    bulk_bookings(deck, customer, 1, hold_expires_at=now - timedelta(minutes=1))
    safety = bulk_bookings(deck, customer, 1, review_status=ReviewStatus.SAFETY_REVIEW)
    export = bulk_bookings(
        deck, customer, 1, status=BookingStatus.CONFIRMED, review_status=ReviewStatus.EXPORT_REVIEW
    )
    bulk_bookings(deck, customer, 1, status=BookingStatus.CONFIRMED, review_status="accepted")
    # A complete declaration of a confirmed booking waits for operations to accept it (as in
    # their queue); a held one's does not yet.
    to_accept = bulk_bookings(
        deck, customer, 1, status=BookingStatus.CONFIRMED, review_status=ReviewStatus.DATA_COMPLETE
    )
    bulk_bookings(deck, customer, 1, review_status=ReviewStatus.DATA_COMPLETE)
    bulk_bookings(
        deck, customer, 1, status=BookingStatus.CANCELLED, review_status=ReviewStatus.SAFETY_REVIEW
    )
    bulk_bookings(
        deck,
        customer,
        1,
        review_status=ReviewStatus.SAFETY_REVIEW,
        hold_expires_at=now - timedelta(minutes=1),
    )

    response = finance_client.get(DASHBOARD)

    assert response.context["expiring_count"] == 2
    assert {b.reference for b in response.context["expiring"]} == {b.reference for b in soon}
    assert response.context["awaiting_count"] == 3
    assert {b.reference for b in response.context["awaiting"]} == {
        b.reference for b in safety + export + to_accept
    }


def test_reseller_commission_is_integer_and_rounded_down(finance_client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    orbit = ResellerFactory.create(name="Orbit Travel", commission_bp=833)
    customer = OrganisationFactory.create(name="Direct customer")
    confirmed = BookingStatus.CONFIRMED
    bulk_bookings(deck, orbit, 1, status=confirmed, price_amount=1_000_001)
    bulk_bookings(deck, orbit, 1, status=confirmed, currency="USD", price_amount=12_345)
    bulk_bookings(deck, orbit, 2, price_amount=5_000_000)  # held: counted, not revenue
    bulk_bookings(deck, customer, 1, status=confirmed, price_amount=9_000_000)

    response = finance_client.get(DASHBOARD)

    lines = {(line.name, line.currency): line for line in response.context["resellers"]}
    assert set(lines) == {("Orbit Travel", "JPY"), ("Orbit Travel", "USD")}
    jpy, usd = lines["Orbit Travel", "JPY"], lines["Orbit Travel", "USD"]
    assert (jpy.bookings, jpy.confirmed, jpy.revenue) == (3, 1, Money(1_000_001, "JPY"))
    # 1,000,001 × 8.33% = 83,300.0833 → ¥83,300; 12,345 ¢ × 8.33% = 1,028.34 ¢ → $10.28.
    assert jpy.commission == Money(83_300, "JPY")
    assert usd.commission == Money(1_028, "USD")
    page = response.content.decode()
    assert "¥83,300" in page
    assert "$10.28" in page
    assert "8.33%" in page
    assert "rounded down" in page


def test_the_dashboard_costs_the_same_number_of_queries_at_any_volume(
    finance_client: Client, django_assert_num_queries: Any
) -> None:
    reseller = ResellerFactory.create()
    customer = OrganisationFactory.create()
    classes = [SlotClassFactory.create(capacity_g=100_000_000) for _ in range(3)]
    now = timezone.now()

    def seed(count: int) -> None:
        for slot_class in classes:
            per = count // 6
            bulk_bookings(slot_class, customer, per, hold_expires_at=now + timedelta(hours=2))
            bulk_bookings(slot_class, reseller, per, status=BookingStatus.CONFIRMED)
            bulk_bookings(slot_class, reseller, per, review_status=ReviewStatus.SAFETY_REVIEW)

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert finance_client.get(DASHBOARD).status_code == 200
        return len(captured)

    seed(12)
    small = count_queries()
    seed(600)
    large = count_queries()

    assert small == large
    # Session, user, permissions (2), capacity (with the waitlist), money (with what is
    # still owed), overdue instalments, flagged bookings, expiring (count, list), awaiting
    # review (count, list), resellers.
    with django_assert_num_queries(13):
        finance_client.get(DASHBOARD)


def test_the_dashboard_is_linked_from_the_index_and_needs_booking_view_permission(
    finance_client: Client,
) -> None:
    index = finance_client.get("/admin/").content.decode()
    no_role = admin_client_with_mfa(staff_user())

    assert 'href="/admin/dashboard/"' in index
    assert 'href="/admin/audit-log/"' in index
    assert no_role.get(DASHBOARD).status_code == 403
    assert 'href="/admin/dashboard/"' not in no_role.get("/admin/").content.decode()
