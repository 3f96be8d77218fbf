"""Reseller statements through the admin: who may open them, exact figures for a reseller at
12.5% with a refund and a cancellation, the period's validation, the CSV, and a constant
number of queries at any number of bookings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import CreditLimit, Organisation, User
from bookings.models import BillingDocument, Booking, Refund
from marketplace.models import SlotClass
from marketplace.money import Money
from tests.admin.helpers import (
    admin_client_with_mfa,
    bulk_bookings,
    read_streamed_csv,
    record_payment,
)
from tests.factories import OrganisationFactory, ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

URL = "/admin/statements/"
MARCH = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create(capacity_g=10_000_000)


@pytest.fixture
def reseller() -> Organisation:
    orbit = ResellerFactory.create(name="Orbit Travel", commission_bp=1250)
    CreditLimit.objects.create(organisation=orbit, currency="JPY", amount=10_000_000)
    return orbit


def confirmed(
    deck: SlotClass, org: Organisation, price: int, at: datetime, **fields: Any
) -> Booking:
    fields.setdefault("on_account", True)
    (booking,) = bulk_bookings(deck, org, 1, status="confirmed", price_amount=price, **fields)
    Booking.objects.filter(pk=booking.pk).update(confirmed_at=at)
    booking.refresh_from_db()
    return booking


def scene(deck: SlotClass, reseller: Organisation) -> dict[str, Booking]:
    """March 2026 for Orbit Travel (12.5%): three JPY bookings and one USD booking
    confirmed on account, one of them cancelled with ¥400,000 due back (nothing was paid),
    one paid by transfer and refunded ¥500,000 with a credit note; and what must not count."""
    first = confirmed(deck, reseller, 1_000_003, MARCH)
    paid = confirmed(deck, reseller, 2_000_000, MARCH.replace(day=31, hour=23, minute=59))
    cancelled = confirmed(deck, reseller, 600_000, MARCH.replace(day=2))
    Booking.objects.filter(pk=cancelled.pk).update(
        status="cancelled", cancelled_at=MARCH.replace(day=20), refund_amount=400_000
    )
    dollars = confirmed(deck, reseller, 10_001, MARCH.replace(day=15), currency="USD")
    payment = record_payment(paid, 2_000_000, succeeded_at=MARCH, amount_refunded=500_000)
    refund = Refund.objects.create(
        payment=payment,
        amount=500_000,
        currency="JPY",
        status="succeeded",
        reason="goodwill",
        actor="staff:manager@moonslot.example",
        created_at=MARCH.replace(day=25),
    )
    BillingDocument.objects.create(
        number="CRN-2026-000003",
        kind="credit_note",
        booking=paid,
        refund=refund,
        currency="JPY",
        total_amount=500_000,
        buyer_name="Orbit Travel",
    )
    # Not in the statement: February, April, not on account, another reseller.
    confirmed(deck, reseller, 7_000_000, MARCH.replace(month=2, day=28))
    confirmed(deck, reseller, 7_000_000, MARCH.replace(month=4, day=1, hour=0, minute=0))
    confirmed(deck, reseller, 7_000_000, MARCH, on_account=False)
    confirmed(deck, ResellerFactory.create(), 7_000_000, MARCH)
    return {"first": first, "paid": paid, "cancelled": cancelled, "dollars": dollars}


def test_statement_figures_are_exact_at_12_5_percent_with_a_refund(
    finance: User, deck: SlotClass, reseller: Organisation
) -> None:
    bookings = scene(deck, reseller)

    response = admin_client_with_mfa(finance).get(
        URL, {"reseller": str(reseller.pk), "month": "2026-03"}
    )

    assert response.status_code == 200
    statement = response.context["statement"]
    assert {b.reference for b in statement.bookings} == {b.reference for b in bookings.values()}
    jpy, usd = statement.totals
    # JPY: gross 1,000,003 + 2,000,000 + 600,000 = 3,600,003; credits 400,000 + 500,000;
    # net sales 2,700,003; commission 12.5% = 337,500.375 → 337,500; owed 2,362,503.
    assert (jpy.gross_money, jpy.credits_money) == (
        Money(3_600_003, "JPY"),
        Money(900_000, "JPY"),
    )
    assert jpy.net_sales == Money(2_700_003, "JPY")
    assert jpy.commission == Money(337_500, "JPY")
    assert jpy.net_owed == Money(2_362_503, "JPY")
    # USD: 10,001 ¢ at 12.5% = 1,250.125 ¢ → $12.50; owed $87.51.
    assert (usd.commission, usd.net_owed) == (Money(1_250, "USD"), Money(8_751, "USD"))
    assert [(c.reference, c.money.amount, c.credit_note) for c in statement.credits] == [
        (bookings["cancelled"].reference, 400_000, ""),
        (bookings["paid"].reference, 500_000, "CRN-2026-000003"),
    ]
    # Now: confirmed on account and still confirmed, all periods: everything but the
    # cancelled booking and the one not on account.
    (balance,) = [line for line in statement.balance if line.currency == "JPY"]
    outstanding = 1_000_003 + 2_000_000 + 7_000_000 + 7_000_000
    assert balance.outstanding == Money(outstanding, "JPY")
    assert balance.available == Money(10_000_000 - outstanding, "JPY")
    page = response.content.decode()
    assert "¥2,362,503" in page
    assert "12.50%" in page
    assert "CRN-2026-000003" in page
    assert "rounded toward zero" in page


def test_the_statement_exports_as_csv(
    manager: User, deck: SlotClass, reseller: Organisation
) -> None:
    bookings = scene(deck, reseller)

    response = admin_client_with_mfa(manager).get(
        URL,
        {
            "reseller": str(reseller.pk),
            "date_from": "2026-03-01",
            "date_to": "2026-03-31",
            "export": "csv",
        },
    )

    rows = read_streamed_csv(response)
    assert response["Content-Type"].startswith("text/csv")
    by_section: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert {r["reference"] for r in by_section["booking"]} == {
        b.reference for b in bookings.values()
    }
    totals = {
        (row["section"], row["currency"]): row["amount_minor_units"]
        for row in rows
        if row["section"].startswith("total:")
    }
    assert totals["total:net_owed", "JPY"] == "2362503"
    assert totals["total:commission", "USD"] == "1250"
    assert totals["total:credits", "JPY"] == "900000"
    credits = by_section["credit:refund"]
    assert credits[0]["amount_minor_units"] == "-500000"
    assert "CRN-2026-000003" in credits[0]["detail"]
    assert any(r["section"] == "balance:available" for r in rows)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"month": "2026-13"}, "Give the month as YYYY-MM"),
        ({"month": "March"}, "Give the month as YYYY-MM"),
        ({}, "Give a month, or both a start and an end date."),
        ({"date_from": "2026-03-01"}, "Give a month, or both a start and an end date."),
        ({"month": "2026-03", "date_from": "2026-03-01"}, "Give a month or dates, not both."),
        ({"date_from": "2026-03-10", "date_to": "2026-03-01"}, "The end is before the start."),
        ({"date_from": "2025-01-01", "date_to": "2026-03-01"}, "at most 366 days"),
        ({"date_from": "2026-02-30", "date_to": "2026-03-01"}, "Give the date as YYYY-MM-DD."),
    ],
)
def test_a_bad_period_is_a_clear_message_not_an_error(
    finance: User, reseller: Organisation, query: dict[str, str], message: str
) -> None:
    response = admin_client_with_mfa(finance).get(URL, {"reseller": str(reseller.pk), **query})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["statement"] is None


def test_only_resellers_can_be_chosen(finance: User) -> None:
    customer = OrganisationFactory.create()

    response = admin_client_with_mfa(finance).get(
        URL, {"reseller": str(customer.pk), "month": "2026-03"}
    )

    assert "Choose a reseller from the list." in response.content.decode()
    assert response.context["statement"] is None


def test_finance_and_the_sales_manager_see_statements_sales_and_operations_do_not(
    finance: User, manager: User, sales: User, operations: User
) -> None:
    assert admin_client_with_mfa(finance).get(URL).status_code == 200
    manager_client = admin_client_with_mfa(manager)
    assert manager_client.get(URL).status_code == 200
    assert 'href="/admin/statements/"' in manager_client.get("/admin/").content.decode()
    sales_client = admin_client_with_mfa(sales)
    assert sales_client.get(URL).status_code == 403
    assert sales_client.get(URL, {"export": "csv"}).status_code == 403
    assert 'href="/admin/statements/"' not in sales_client.get("/admin/").content.decode()
    assert admin_client_with_mfa(operations).get(URL).status_code == 403


def test_the_statement_costs_the_same_number_of_queries_at_any_volume(
    finance: User,
    deck: SlotClass,
    reseller: Organisation,
    django_assert_max_num_queries: Any,
) -> None:
    client = admin_client_with_mfa(finance)
    query = {"reseller": str(reseller.pk), "month": timezone.now().strftime("%Y-%m")}

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL, query).status_code == 200
        return len(captured)

    client.get(URL, query)
    bulk_bookings(deck, reseller, 3, status="confirmed", on_account=True)
    small = count()
    bulk_bookings(deck, reseller, 300, status="confirmed", on_account=True)
    bulk_bookings(deck, reseller, 50, status="confirmed", on_account=True, currency="USD")
    large = count()

    assert small == large
    assert len(client.get(URL, query).context["statement"].bookings) == 353
    # Session, user, permissions (2), the reseller list and the chosen reseller, bookings,
    # refunds, unpaid cancellations, credit limits, outstanding per currency (2).
    with django_assert_max_num_queries(12):
        client.get(URL, query)
