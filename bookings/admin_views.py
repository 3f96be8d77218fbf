"""Back-office pages beside the model admins: the sales dashboard and the audit log.

Both are mounted under the admin (config/urls.py) through ``admin.site.admin_view``, so they
sit behind the same staff and two-factor checks as every admin page, and each checks its
own permission. Every figure is one aggregate query (GROUP BY), never a loop over bookings:
the pages cost the same number of queries at any volume.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import (
    Case,
    Count,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce, Concat, Greatest
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import OrganisationKind
from bookings.admin_money_filters import OVERDUE
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    Instalment,
    InstalmentStatus,
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundReason,
    RefundStatus,
    ReviewStatus,
    WaitlistEntry,
    WaitlistStatus,
)
from marketplace.models import FINISHED_MISSION_STATUSES, Mission, SlotClass
from marketplace.money import Money

# --- CSV --------------------------------------------------------------------------------
# A spreadsheet runs a cell that starts with one of these as a formula; customer-typed text
# (names, payload names, reasons) must not.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(
    *, filename: str, header: list[str], rows: Iterable[Iterable[object]]
) -> StreamingHttpResponse:
    """Stream rows as CSV, one line at a time, so an export of every booking never sits in
    memory. Starts with a byte-order mark: spreadsheets then read UTF-8 (Japanese names)."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield "\ufeff"
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([csv_safe(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_datetime(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


# --- dashboard --------------------------------------------------------------------------
LIST_LIMIT = 50
AWAITING_REVIEW = (ReviewStatus.SAFETY_REVIEW, ReviewStatus.EXPORT_REVIEW)
# In the queue: waiting, or offered a hold not taken yet.
WAITLIST_ACTIVE = (WaitlistStatus.WAITING, WaitlistStatus.OFFERED)


def _sum_for_booking(rows: QuerySet[Any], booking_path: str) -> Subquery:
    return Subquery(
        rows.filter(**{booking_path: OuterRef("pk")})
        .order_by()
        .values(booking_path)
        .annotate(total=Sum("amount"))
        .values("total")
    )


def still_owed() -> Combinable:
    """What one booking still owes, as an expression on Booking (for a SUM per currency):
    its price, less the money kept on it, never below zero.

    Money kept = payments received (succeeded; an "account" row is a promise, not money)
    less refunds sent or on their way, except goodwill refunds: those are a concession off
    the price, not money owed again. So a booking paid twice and refunded once owes nothing,
    a part-paid instalment booking owes the rest, and one confirmed on account owes its
    price until a transfer is recorded against it."""
    received = _sum_for_booking(
        Payment.objects.filter(status=PaymentStatus.SUCCEEDED).exclude(
            provider=PaymentProvider.ACCOUNT
        ),
        "booking",
    )
    returned = _sum_for_booking(
        Refund.objects.filter(
            status__in=(RefundStatus.PENDING, RefundStatus.SUCCEEDED),
            payment__status=PaymentStatus.SUCCEEDED,
        )
        .exclude(reason=RefundReason.GOODWILL)
        .exclude(payment__provider=PaymentProvider.ACCOUNT),
        "payment__booking",
    )
    return Greatest(F("price_amount") - Coalesce(received, 0) + Coalesce(returned, 0), Value(0))


@dataclass
class ClassLine:
    slot_class: SlotClass
    sold_g: int
    held_g: int
    sold_units: int
    held_units: int
    waitlist: int = 0

    @property
    def free_g(self) -> int:
        return max(self.slot_class.capacity_g - self.sold_g - self.held_g, 0)

    def _percent(self, part: int) -> int:
        return part * 100 // self.slot_class.capacity_g

    @property
    def sold_percent(self) -> int:
        return self._percent(self.sold_g)

    @property
    def held_percent(self) -> int:
        return self._percent(self.held_g)

    @property
    def free_percent(self) -> int:
        return 100 - self.sold_percent - self.held_percent


@dataclass
class MissionLine:
    mission: Mission
    classes: list[ClassLine] = field(default_factory=list)
    revenue: list[Money] = field(default_factory=list)


def commission_amount(amount: int, rate_bp: int) -> int:
    """Commission on ``amount`` (minor units) at ``rate_bp`` basis points: integer arithmetic
    on the total, rounded toward zero to the minor unit (down for a positive amount; a
    negative amount, a clawback, is rounded toward zero too)."""
    commission = abs(amount) * rate_bp // 10_000
    return commission if amount >= 0 else -commission


@dataclass
class ResellerLine:
    name: str
    commission_bp: int
    currency: str
    bookings: int
    confirmed: int
    revenue: Money

    @property
    def commission(self) -> Money:
        return Money(commission_amount(self.revenue.amount, self.commission_bp), self.currency)

    @property
    def commission_percent(self) -> str:
        whole, rest = divmod(self.commission_bp, 100)
        return f"{whole}.{rest:02d}%"


def _capacity_by_class(now: datetime) -> list[MissionLine]:
    confirmed = Q(bookings__status=BookingStatus.CONFIRMED)
    # A hold past its expiry is free at once, before the sweep writes it.
    live_hold = Q(bookings__status=BookingStatus.HELD, bookings__hold_expires_at__gt=now)
    # A subquery, not a join: joining the queue too would multiply the booking sums.
    waiting = (
        WaitlistEntry.objects.filter(slot_class=OuterRef("pk"), status__in=WAITLIST_ACTIVE)
        .order_by()
        .values("slot_class")
        .annotate(n=Count("pk"))
        .values("n")
    )
    classes = (
        SlotClass.objects.exclude(mission__status__in=FINISHED_MISSION_STATUSES)
        .select_related("mission")
        .annotate(
            sold_g=Coalesce(Sum("bookings__mass_g", filter=confirmed), 0),
            held_g=Coalesce(Sum("bookings__mass_g", filter=live_hold), 0),
            sold_units=Coalesce(Sum("bookings__quantity", filter=confirmed), 0),
            held_units=Coalesce(Sum("bookings__quantity", filter=live_hold), 0),
            waitlist_length=Coalesce(Subquery(waiting), 0),
        )
        .order_by("mission__launch_window_start", "mission__code", "sort_order", "pk")
    )
    missions: dict[int, MissionLine] = {}
    for slot_class in classes:
        line = missions.setdefault(slot_class.mission_id, MissionLine(slot_class.mission))
        line.classes.append(
            ClassLine(
                slot_class=slot_class,
                sold_g=slot_class.sold_g,
                held_g=slot_class.held_g,
                sold_units=slot_class.sold_units,
                held_units=slot_class.held_units,
                waitlist=slot_class.waitlist_length,
            )
        )
    return list(missions.values())


def _money_totals(rows: Iterable[tuple[str, int]]) -> list[Money]:
    totals: dict[str, int] = {}
    for currency, amount in rows:
        totals[currency] = totals.get(currency, 0) + amount
    return [Money(amount, currency) for currency, amount in sorted(totals.items())]


def dashboard(request: HttpRequest) -> TemplateResponse:
    _require(request, "bookings.view_booking")
    now = timezone.now()
    missions = _capacity_by_class(now)

    owed = still_owed()
    confirmed_sums = list(
        Booking.objects.filter(status=BookingStatus.CONFIRMED)
        .values("slot_class__mission_id", "currency")
        .annotate(
            revenue=Sum("price_amount"),
            outstanding=Coalesce(Sum(owed), 0),
            on_account=Coalesce(Sum(owed, filter=Q(on_account=True)), 0),
        )
        .order_by()
    )
    by_mission = {line.mission.pk: line for line in missions}
    for row in confirmed_sums:
        line = by_mission.get(row["slot_class__mission_id"])
        if line is not None:
            line.revenue.append(Money(row["revenue"], row["currency"]))
    revenue = _money_totals((r["currency"], r["revenue"]) for r in confirmed_sums)
    outstanding = _money_totals(
        (r["currency"], r["outstanding"]) for r in confirmed_sums if r["outstanding"]
    )
    outstanding_on_account = _money_totals(
        (r["currency"], r["on_account"]) for r in confirmed_sums if r["on_account"]
    )
    overdue_instalments = list(
        Instalment.objects.filter(
            status=InstalmentStatus.DUE, due_at__lt=now, booking__status=BookingStatus.CONFIRMED
        )
        .values("currency")
        .annotate(count=Count("pk"), amount=Sum(F("amount") - F("amount_paid")))
        .order_by("currency")
    )

    display = ("organisation", "slot_class__mission", "payload")
    expiring = Booking.objects.live_holds(now).filter(
        hold_expires_at__lte=now + timedelta(hours=24)
    )
    # What is in operations' queue (bookings.admin_review): in safety or export review, or
    # complete on a confirmed booking and waiting for an accept.
    awaiting = Booking.objects.filter(
        Q(payload__review_status__in=AWAITING_REVIEW)
        | Q(payload__review_status=ReviewStatus.DATA_COMPLETE, status=BookingStatus.CONFIRMED)
    ).with_live_status_in([BookingStatus.HELD, BookingStatus.CONFIRMED], now)
    resellers = [
        ResellerLine(
            name=row["organisation__name"],
            commission_bp=row["organisation__commission_bp"],
            currency=row["currency"],
            bookings=row["bookings"],
            confirmed=row["confirmed"],
            revenue=Money(row["revenue"], row["currency"]),
        )
        for row in Booking.objects.filter(organisation__kind=OrganisationKind.RESELLER)
        .values("organisation_id", "organisation__name", "organisation__commission_bp", "currency")
        .annotate(
            bookings=Count("pk"),
            confirmed=Count("pk", filter=Q(status=BookingStatus.CONFIRMED)),
            revenue=Coalesce(Sum("price_amount", filter=Q(status=BookingStatus.CONFIRMED)), 0),
        )
        .order_by("organisation__name", "currency")
    ]
    context = {
        **admin.site.each_context(request),
        "title": _("Sales dashboard"),
        "now": now,
        "missions": missions,
        "revenue": revenue,
        "outstanding": outstanding,
        "outstanding_on_account": outstanding_on_account,
        "overdue_instalments": [
            (row["count"], Money(row["amount"], row["currency"])) for row in overdue_instalments
        ],
        "overdue_instalment_count": sum(row["count"] for row in overdue_instalments),
        "flagged_overdue_count": Booking.objects.filter(overdue_since__isnull=False).count(),
        "overdue_url": reverse("admin:bookings_booking_changelist") + f"?overdue={OVERDUE}",
        "expiring_count": expiring.count(),
        "expiring": expiring.select_related(*display).order_by("hold_expires_at")[:LIST_LIMIT],
        "awaiting_count": awaiting.count(),
        "awaiting": awaiting.select_related(*display).order_by("created_at")[:LIST_LIMIT],
        "resellers": resellers,
        "list_limit": LIST_LIMIT,
    }
    return TemplateResponse(request, "admin/backoffice/dashboard.html", context)


# --- audit log --------------------------------------------------------------------------
AUDIT_PAGE_SIZE = 50
ADMIN_TYPES = {
    "admin.addition": ADDITION,
    "admin.change": CHANGE,
    "admin.deletion": DELETION,
}
KNOWN_TYPES = sorted(
    {*EventType.values, "booking.hold_extended", "payment.refund_requested", *ADMIN_TYPES}
)
AUDIT_COLUMNS = ("at", "source", "kind", "who", "ref", "obj", "from_s", "to_s", "detail", "row_id")


class AuditFilterForm(forms.Form):
    date_from = forms.DateField(label=_("from"), required=False)
    date_to = forms.DateField(label=_("to (inclusive)"), required=False)
    actor = forms.CharField(label=_("actor"), required=False, max_length=200)
    reference = forms.CharField(label=_("booking reference"), required=False, max_length=20)
    type = forms.CharField(label=_("type"), required=False, max_length=40)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end is before the start."))
        return cleaned


def day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _within_dates(field: str, filters: dict[str, Any]) -> Q:
    """``field`` on or after the first day's start and before the day after the last."""
    condition = Q()
    if filters.get("date_from"):
        condition &= Q(**{f"{field}__gte": day_start(filters["date_from"])})
    if filters.get("date_to"):
        condition &= Q(**{f"{field}__lt": day_start(filters["date_to"] + timedelta(days=1))})
    return condition


def _booking_events(filters: dict[str, Any]) -> QuerySet[Any] | None:
    kind = filters.get("type")
    if kind and kind in ADMIN_TYPES:
        return None
    events = BookingEvent.objects.order_by().filter(_within_dates("created_at", filters))
    if filters.get("actor"):
        events = events.filter(actor__icontains=filters["actor"])
    if filters.get("reference"):
        events = events.filter(booking__reference=filters["reference"].upper())
    if kind:
        events = events.filter(type=kind)
    return events.annotate(
        at=F("created_at"),
        source=Value("booking"),
        kind=F("type"),
        who=F("actor"),
        ref=F("booking__reference"),
        obj=Value(""),
        from_s=F("from_status"),
        to_s=F("to_status"),
        detail=F("reason"),
        row_id=F("pk"),
    ).values(*AUDIT_COLUMNS)


def _admin_changes(filters: dict[str, Any]) -> QuerySet[Any] | None:
    kind = filters.get("type")
    if kind and kind not in ADMIN_TYPES:
        return None
    is_booking = Q(content_type__app_label="bookings", content_type__model="booking")
    changes = LogEntry.objects.order_by().filter(_within_dates("action_time", filters))
    if filters.get("actor"):
        changes = changes.filter(user__email__icontains=filters["actor"])
    if filters.get("reference"):
        changes = changes.filter(is_booking, object_repr=filters["reference"].upper())
    if kind:
        changes = changes.filter(action_flag=ADMIN_TYPES[kind])
    return changes.annotate(
        at=F("action_time"),
        source=Value("admin"),
        kind=Case(
            *(When(action_flag=flag, then=Value(name)) for name, flag in ADMIN_TYPES.items()),
            default=Value("admin.other"),
        ),
        who=F("user__email"),
        ref=Case(When(is_booking, then=F("object_repr")), default=Value("")),
        obj=Concat(
            F("content_type__app_label"),
            Value("."),
            F("content_type__model"),
            Value(": "),
            F("object_repr"),
        ),
        from_s=Value(""),
        to_s=Value(""),
        detail=F("change_message"),
        row_id=F("pk"),
    ).values(*AUDIT_COLUMNS)


def audit_entries(filters: dict[str, Any], *, with_admin_changes: bool) -> QuerySet[Any]:
    """Booking events and admin changes as one list, newest first: a UNION ALL, so a page is
    a LIMIT of one query and the count another, at any volume."""
    parts = [_booking_events(filters)]
    if with_admin_changes:
        parts.append(_admin_changes(filters))
    present = [part for part in parts if part is not None]
    if not present:
        return BookingEvent.objects.none().values(*AUDIT_COLUMNS)
    first, *rest = present
    combined = first.union(*rest, all=True) if rest else first
    return combined.order_by("-at", "-row_id")


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    if row["source"] == "admin":
        row["detail"] = LogEntry(change_message=row["detail"] or "").get_change_message()
    return row


AUDIT_CSV_HEADER = ["at", "source", "type", "actor", "booking", "object", "from", "to", "detail"]


def audit_log(request: HttpRequest) -> HttpResponseBase:
    _require(request, "bookings.view_bookingevent")
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    entries = audit_entries(
        filters, with_admin_changes=request.user.has_perm("admin.view_logentry")
    )
    if request.GET.get("export") == "csv":
        rows = (
            [
                csv_datetime(row["at"]),
                row["source"],
                row["kind"],
                row["who"],
                row["ref"],
                row["obj"],
                row["from_s"],
                row["to_s"],
                row["detail"],
            ]
            for row in map(_readable, entries.iterator(chunk_size=2000))
        )
        return csv_response(
            filename=f"audit-log-{timezone.now():%Y%m%d-%H%M}.csv",
            header=AUDIT_CSV_HEADER,
            rows=rows,
        )
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        **admin.site.each_context(request),
        "title": _("Audit log"),
        "form": form,
        "page": page,
        "rows": [_readable(dict(row)) for row in page.object_list],
        "query": query.urlencode(),
        "known_types": KNOWN_TYPES,
        "with_admin_changes": request.user.has_perm("admin.view_logentry"),
    }
    return TemplateResponse(request, "admin/backoffice/audit_log.html", context)
