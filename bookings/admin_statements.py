"""Reseller statements: what a reseller owes for a period, on a page and as CSV.

For one reseller and one period (a calendar month, or from one date to another, both
inclusive, in the site's time zone):

- **bookings**: every booking confirmed on account in the period (whatever became of it
  since: a later cancellation shows as a credit in the period it happened);
- **credits**: refunds requested in the period on the reseller's bookings (not failed), each
  with its credit note's number once issued; and the refund due on each on-account booking
  cancelled in the period that has no refund row (nothing was paid, so it is a credit
  against the invoice rather than money sent back);
- **totals per currency**: gross (the bookings' prices), credits, net sales (gross − credits),
  commission at the reseller's rate, and net owed by the reseller (net sales − commission);
- **balance against the credit limit**, as of now: the limit per currency, what is
  outstanding on account (the same figure ``booking_confirm`` checks the limit against) and
  what remains available.

Commission is integer arithmetic on each currency's net sales: ``net × rate_bp // 10,000``,
rounded toward zero to the currency's minor unit (yen, or cents); so it is rounded down on
a normal period and a clawback (net sales below zero after refunds) is rounded toward zero
too. It is computed once per currency total, never per line, so the total does not depend
on how many bookings there were.

The page costs the same number of queries at any number of bookings: one per section, one
for the credit limits and one per currency for the outstanding amount.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from accounts.models import CreditLimit, Organisation, OrganisationKind
from accounts.roles import VIEW_RESELLER_STATEMENT
from bookings.admin_views import commission_amount, csv_datetime, csv_response, day_start
from bookings.models import (
    BillingDocument,
    Booking,
    BookingStatus,
    DocumentKind,
    Refund,
    RefundStatus,
)
from bookings.services import _outstanding_on_account
from marketplace.money import Currency, Money

MAX_PERIOD_DAYS = 366


class StatementForm(forms.Form):
    reseller = forms.ModelChoiceField(
        label=_("reseller"),
        queryset=Organisation.objects.filter(kind=OrganisationKind.RESELLER).order_by("name"),
        error_messages={"invalid_choice": _("Choose a reseller from the list.")},
    )
    month = forms.DateField(
        label=_("month"),
        required=False,
        input_formats=["%Y-%m"],
        widget=forms.DateInput(attrs={"type": "month"}, format="%Y-%m"),
        help_text=_("A calendar month (YYYY-MM), or give the dates instead."),
        error_messages={"invalid": _("Give the month as YYYY-MM, for example 2026-03.")},
    )
    date_from = forms.DateField(
        label=_("from"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": _("Give the date as YYYY-MM-DD.")},
    )
    date_to = forms.DateField(
        label=_("to (inclusive)"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": _("Give the date as YYYY-MM-DD.")},
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        month, start, end = (cleaned.get(k) for k in ("month", "date_from", "date_to"))
        if any(name in self.errors for name in ("month", "date_from", "date_to")):
            return cleaned
        if month and (start or end):
            raise forms.ValidationError(_("Give a month or dates, not both."))
        if month:
            cleaned["period"] = _month_bounds(month)
            return cleaned
        if not start or not end:
            raise forms.ValidationError(
                _("Give a month, or both a start and an end date."), code="no_period"
            )
        if start > end:
            self.add_error("date_to", _("The end is before the start."))
        elif (end - start).days >= MAX_PERIOD_DAYS:
            self.add_error(
                "date_to",
                _("A statement covers at most %(days)d days.") % {"days": MAX_PERIOD_DAYS},
            )
        else:
            cleaned["period"] = (start, end)
        return cleaned


def _month_bounds(month: date) -> tuple[date, date]:
    first = month.replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    return first, next_month - timedelta(days=1)


@dataclass
class CurrencyTotals:
    currency: str
    commission_bp: int
    gross: int = 0
    credits: int = 0
    bookings: int = 0

    @property
    def net_sales(self) -> Money:
        return Money(self.gross - self.credits, self.currency)

    @property
    def commission(self) -> Money:
        return Money(commission_amount(self.net_sales.amount, self.commission_bp), self.currency)

    @property
    def net_owed(self) -> Money:
        return Money(self.net_sales.amount - self.commission.amount, self.currency)

    @property
    def gross_money(self) -> Money:
        return Money(self.gross, self.currency)

    @property
    def credits_money(self) -> Money:
        return Money(self.credits, self.currency)


@dataclass
class CreditLine:
    at: datetime
    reference: str
    money: Money
    kind: str
    detail: str
    credit_note: str = ""


@dataclass
class BalanceLine:
    currency: str
    limit: Money | None
    outstanding: Money

    @property
    def available(self) -> Money | None:
        if self.limit is None:
            return None
        return Money(self.limit.amount - self.outstanding.amount, self.currency)


@dataclass
class Statement:
    reseller: Organisation
    start: date
    end: date
    bookings: list[Booking]
    credits: list[CreditLine]
    balance: list[BalanceLine]
    totals: list[CurrencyTotals] = field(default_factory=list)

    @property
    def commission_percent(self) -> str:
        whole, rest = divmod(self.reseller.commission_bp, 100)
        return f"{whole}.{rest:02d}%"


def _credits(reseller: Organisation, since: datetime, until: datetime) -> list[CreditLine]:
    credit_note = BillingDocument.objects.filter(
        refund=OuterRef("pk"), kind=DocumentKind.CREDIT_NOTE
    ).values("number")[:1]
    refunds = (
        Refund.objects.filter(
            payment__booking__organisation=reseller,
            created_at__gte=since,
            created_at__lt=until,
        )
        .exclude(status=RefundStatus.FAILED)
        .annotate(credit_note=Subquery(credit_note))
        .select_related("payment__booking")
        .order_by("created_at", "pk")
    )
    lines = [
        CreditLine(
            at=refund.created_at,
            reference=refund.payment.booking.reference,
            money=refund.money,
            kind="refund",
            detail=str(refund.get_reason_display()),
            credit_note=refund.credit_note or "",
        )
        for refund in refunds
    ]
    unpaid_cancellations: QuerySet[Booking] = (
        Booking.objects.filter(
            organisation=reseller,
            on_account=True,
            status=BookingStatus.CANCELLED,
            cancelled_at__gte=since,
            cancelled_at__lt=until,
            refund_amount__gt=0,
        )
        .exclude(Exists(Refund.objects.filter(payment__booking=OuterRef("pk"))))
        .order_by("cancelled_at", "pk")
    )
    for booking in unpaid_cancellations:
        lines.append(
            CreditLine(
                at=booking.cancelled_at or since,  # set on every cancelled booking
                reference=booking.reference,
                money=Money(booking.refund_amount or 0, booking.currency),
                kind="cancellation",
                detail=str(_("Cancelled on account: refund due credited")),
            )
        )
    lines.sort(key=lambda line: (line.at, line.reference))
    return lines


def reseller_statement(*, reseller: Organisation, start: date, end: date) -> Statement:
    """The statement of ``reseller`` from ``start`` to ``end`` (both days included)."""
    since, until = day_start(start), day_start(end + timedelta(days=1))
    bookings = list(
        Booking.objects.filter(
            organisation=reseller,
            on_account=True,
            confirmed_at__gte=since,
            confirmed_at__lt=until,
        )
        .select_related("slot_class__mission")
        .order_by("confirmed_at", "pk")
    )
    credits = _credits(reseller, since, until)
    totals: dict[str, CurrencyTotals] = {}

    def of(currency: str) -> CurrencyTotals:
        return totals.setdefault(currency, CurrencyTotals(currency, reseller.commission_bp))

    for booking in bookings:
        of(booking.currency).gross += booking.price_amount
        of(booking.currency).bookings += 1
    for credit in credits:
        of(credit.money.currency).credits += credit.money.amount
    limits = {
        limit.currency: Money(limit.amount, limit.currency)
        for limit in CreditLimit.objects.filter(organisation=reseller)
    }
    balance = [
        BalanceLine(
            currency=currency,
            limit=limits.get(currency),
            outstanding=Money(_outstanding_on_account(reseller, currency), currency),
        )
        for currency in Currency.values
    ]
    return Statement(
        reseller=reseller,
        start=start,
        end=end,
        bookings=bookings,
        credits=credits,
        balance=[line for line in balance if line.limit is not None or line.outstanding.amount],
        totals=[totals[currency] for currency in sorted(totals)],
    )


STATEMENT_CSV_HEADER = [
    "section",
    "date",
    "reference",
    "mission",
    "slot_class",
    "status",
    "currency",
    "amount_minor_units",
    "detail",
]


def _csv_rows(statement: Statement) -> Iterator[list[object]]:
    for booking in statement.bookings:
        yield [
            "booking",
            csv_datetime(booking.confirmed_at),
            booking.reference,
            booking.slot_class.mission.code,
            booking.slot_class.name,
            booking.status,
            booking.currency,
            booking.price_amount,
            "",
        ]
    for credit in statement.credits:
        detail = f"{credit.detail}; credit note {credit.credit_note}" if credit.credit_note else ""
        yield [
            f"credit:{credit.kind}",
            csv_datetime(credit.at),
            credit.reference,
            "",
            "",
            "",
            credit.money.currency,
            -credit.money.amount,
            detail or credit.detail,
        ]
    for totals in statement.totals:
        for name, money in (
            ("gross", totals.gross_money),
            ("credits", totals.credits_money),
            ("net_sales", totals.net_sales),
            ("commission", totals.commission),
            ("net_owed", totals.net_owed),
        ):
            detail = f"rate {statement.commission_percent}" if name == "commission" else ""
            yield ["total:" + name, "", "", "", "", "", money.currency, money.amount, detail]
    for line in statement.balance:
        balance: tuple[tuple[str, Money | None], ...] = (
            ("credit_limit", line.limit),
            ("outstanding_on_account", line.outstanding),
            ("available", line.available),
        )
        for name, figure in balance:
            amount = "" if figure is None else figure.amount
            yield ["balance:" + name, "", "", "", "", "", line.currency, amount, ""]


def statements_view(request: HttpRequest) -> HttpResponseBase:
    if not request.user.has_perm(VIEW_RESELLER_STATEMENT):
        raise PermissionDenied
    form = StatementForm(request.GET or None)
    statement = None
    if form.is_bound and form.is_valid():
        start, end = form.cleaned_data["period"]
        statement = reseller_statement(reseller=form.cleaned_data["reseller"], start=start, end=end)
        if request.GET.get("export") == "csv":
            return csv_response(
                filename=f"statement-{statement.reseller.pk}-{start:%Y%m%d}-{end:%Y%m%d}.csv",
                header=STATEMENT_CSV_HEADER,
                rows=_csv_rows(statement),
            )
    query = request.GET.copy()
    query.pop("export", None)
    context = {
        **admin.site.each_context(request),
        "title": _("Reseller statements"),
        "form": form,
        "statement": statement,
        "query": query.urlencode(),
    }
    return TemplateResponse(request, "admin/backoffice/statement.html", context)
