"""Money in the back office: the dashboard's overdue instalments, flagged bookings, waitlist
length and what confirmed bookings still owe; the change list's overdue and payment
filters, which add no query to the list."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from bookings.models import (
    Booking,
    Instalment,
    PaymentStatus,
    Refund,
    WaitlistEntry,
)
from marketplace.money import Money
from tests.admin.helpers import admin_client_with_mfa, bulk_bookings
from tests.admin.helpers import record_payment as pay
from tests.factories import OrganisationFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
CHANGELIST = "/admin/bookings/booking/"


@pytest.fixture
def finance_client(finance: User) -> Client:
    return admin_client_with_mfa(finance)


def instalment(booking: Booking, amount: int, *, due_in_days: int, paid: int = 0, **kw: Any) -> Any:
    return Instalment.objects.create(
        booking=booking,
        position=kw.pop("position", 1),
        kind=kw.pop("kind", "instalment"),
        label="Instalment",
        amount=amount,
        currency=booking.currency,
        due_at=timezone.now() + timedelta(days=due_in_days),
        amount_paid=paid,
        **kw,
    )


def test_the_dashboard_counts_overdue_instalments_per_currency_and_links_the_filter(
    finance_client: Client,
) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    customer = OrganisationFactory.create()
    yen = bulk_bookings(deck, customer, 3, status="confirmed")
    (dollar,) = bulk_bookings(deck, customer, 1, status="confirmed", currency="USD")
    instalment(yen[0], 1_000_000, due_in_days=-2, paid=250_000)  # overdue, ¥750,000 short
    instalment(yen[1], 2_000_000, due_in_days=-1)  # overdue, ¥2,000,000
    instalment(yen[2], 9_000_000, due_in_days=5)  # not yet due
    instalment(dollar, 12_345, due_in_days=-30)  # overdue, $123.45
    instalment(
        yen[2], 5_000, due_in_days=-9, position=2, status="paid", paid=5_000, paid_at=timezone.now()
    )
    Booking.objects.filter(pk=yen[1].pk).update(overdue_since=timezone.now())

    response = finance_client.get(DASHBOARD)
    page = response.content.decode()

    assert response.context["overdue_instalments"] == [
        (2, Money(2_750_000, "JPY")),
        (1, Money(12_345, "USD")),
    ]
    assert response.context["flagged_overdue_count"] == 1
    assert "3 instalments overdue" in page
    assert "¥2,750,000" in page
    assert "$123.45" in page
    assert 'href="/admin/bookings/booking/?overdue=yes"' in page


def test_the_dashboard_shows_each_classs_waitlist_length(finance_client: Client) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    other = SlotClassFactory.create(mission=deck.mission)
    customer = OrganisationFactory.create()
    bulk_bookings(deck, customer, 2, status="confirmed")  # sums must not be multiplied
    for status in ("waiting", "waiting", "offered", "booked", "lapsed", "withdrawn"):
        WaitlistEntry.objects.create(
            slot_class=deck,
            organisation=customer,
            channel="web",
            mass_g=1_000,
            currency="JPY",
            status=status,
        )

    response = finance_client.get(DASHBOARD)

    lines = {row.slot_class.pk: row for m in response.context["missions"] for row in m.classes}
    assert lines[deck.pk].waitlist == 3
    assert lines[other.pk].waitlist == 0
    assert lines[deck.pk].sold_g == 2 * deck.min_mass_g


def test_outstanding_is_the_price_less_money_kept_never_below_zero(
    finance_client: Client,
) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    customer = OrganisationFactory.create()
    price = 1_000_000
    _unpaid, part, twice, goodwill, overpaid = bulk_bookings(
        deck, customer, 5, status="confirmed", price_amount=price
    )
    (on_account,) = bulk_bookings(
        deck, customer, 1, status="confirmed", price_amount=price, on_account=True
    )
    (cancelled,) = bulk_bookings(deck, customer, 1, status="cancelled", price_amount=price)
    pay(part, 400_000)
    pay(part, 100_000, attempt=2, status=PaymentStatus.FAILED)  # no money
    duplicate = pay(twice, price, amount_refunded=price)
    pay(twice, price, attempt=2)
    Refund.objects.create(
        payment=duplicate, amount=price, currency="JPY", reason="duplicate", actor="t"
    )
    kept = pay(goodwill, price, amount_refunded=50_000)
    Refund.objects.create(payment=kept, amount=50_000, currency="JPY", reason="goodwill", actor="t")
    pay(overpaid, price + 70_000)
    pay(on_account, 300_000)
    pay(cancelled, 10)

    response = finance_client.get(DASHBOARD)

    # unpaid 1,000,000 + part 600,000 + twice 0 + goodwill 0 + overpaid 0 (not −70,000)
    # + on account 700,000.
    assert response.context["outstanding"] == [Money(2_300_000, "JPY")]
    assert response.context["outstanding_on_account"] == [Money(700_000, "JPY")]
    assert response.context["revenue"] == [Money(6 * price, "JPY")]


def test_the_change_list_filters_overdue_and_under_or_overpaid_bookings(
    sales: User,
) -> None:
    client = admin_client_with_mfa(sales)
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    customer = OrganisationFactory.create()
    late, flagged, on_time, short, over, plain = bulk_bookings(
        deck, customer, 6, status="confirmed"
    )
    instalment(late, 1_000, due_in_days=-1)
    Booking.objects.filter(pk=flagged.pk).update(overdue_since=timezone.now())
    instalment(on_time, 1_000, due_in_days=3)
    instalment(short, 1_000, due_in_days=3, paid=400)
    instalment(over, 1_000, due_in_days=-3, paid=1_500, status="paid", paid_at=timezone.now())

    def refs(query: str) -> set[str]:
        response = client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200
        return {b.reference for b in response.context["cl"].result_list}

    assert refs("overdue=yes") == {late.reference, flagged.reference}
    assert refs("payment=underpaid") == {short.reference}
    assert refs("payment=overpaid") == {over.reference}
    assert len(refs("overdue=nonsense")) == 6
    page = client.get(CHANGELIST).content.decode()
    assert "?overdue=yes" in page
    assert "?payment=underpaid" in page
    assert plain.reference in page


def test_the_unpaid_deposit_of_a_lapsed_hold_is_not_an_overdue_instalment(
    finance_client: Client,
) -> None:
    """A plan hold's deposit falls due when the hold expires: past that date the hold has
    lapsed (or been swept), which frees the capacity; nobody owes anything."""
    deck = SlotClassFactory.create(capacity_g=1_000_000)
    customer = OrganisationFactory.create()
    (lapsed,) = bulk_bookings(
        deck, customer, 1, hold_expires_at=timezone.now() - timedelta(hours=1)
    )
    (expired,) = bulk_bookings(deck, customer, 1, status="expired")
    (confirmed,) = bulk_bookings(deck, customer, 1, status="confirmed")
    for booking in (lapsed, expired, confirmed):
        instalment(booking, 200_000, due_in_days=-1, kind="deposit")

    response = finance_client.get(DASHBOARD)
    listed = finance_client.get(f"{CHANGELIST}?overdue=yes").context["cl"].result_list

    assert response.context["overdue_instalments"] == [(1, Money(200_000, "JPY"))]
    assert {b.reference for b in listed} == {confirmed.reference}


def test_the_filtered_change_list_costs_what_the_plain_one_does(
    sales: User, django_assert_num_queries: Any
) -> None:
    client = admin_client_with_mfa(sales)
    deck = SlotClassFactory.create(capacity_g=10_000_000)
    customer = OrganisationFactory.create()
    for booking in bulk_bookings(deck, customer, 30, status="confirmed"):
        instalment(booking, 1_000, due_in_days=-1, paid=10)
    client.get(CHANGELIST)

    # As the plain list (test_booking_admin's pin): the filters are EXISTS in its queries.
    for query in ("overdue=yes", "payment=underpaid", "payment=overpaid"):
        with django_assert_num_queries(10):
            client.get(f"{CHANGELIST}?{query}")
