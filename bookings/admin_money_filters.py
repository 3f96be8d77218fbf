"""Money filters of the booking change list: overdue, and under- or overpaid instalments.

Each is one EXISTS in the list's own queries (the instalment index on ``due_at`` where
status is due, and the booking's foreign key), so the change list costs the same number of
queries at any volume, and the filters' choices are fixed (no query for them either).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from bookings.models import Booking, BookingStatus, Instalment, InstalmentStatus

OVERDUE = "yes"
UNDERPAID = "underpaid"
OVERPAID = "overpaid"


def overdue_condition(now: Any) -> Q:
    """A confirmed booking sales must chase: an instalment still due past its date, or the
    flag the grace-period sweep sets (``Booking.overdue_since``). A hold's deposit past its
    date is a lapsed hold, not a debt."""
    late = Instalment.objects.filter(
        booking=OuterRef("pk"), status=InstalmentStatus.DUE, due_at__lt=now
    )
    return Q(overdue_since__isnull=False) | Q(Exists(late), status=BookingStatus.CONFIRMED)


class OverdueFilter(admin.SimpleListFilter):
    title = _("overdue")
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return [(OVERDUE, _("Overdue: an instalment past its due date, or flagged"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Booking]) -> QuerySet[Booking]:
        if self.value() != OVERDUE:
            return queryset
        return queryset.filter(overdue_condition(timezone.now()))


class InstalmentPaymentFilter(admin.SimpleListFilter):
    """Money received against an instalment that does not match it: short of an instalment
    still due (a partial transfer), or beyond an instalment's amount."""

    title = _("payment")
    parameter_name = "payment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return [
            (UNDERPAID, _("Underpaid: an instalment part-paid")),
            (OVERPAID, _("Overpaid: an instalment paid beyond its amount")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Booking]) -> QuerySet[Booking]:
        instalments = Instalment.objects.filter(booking=OuterRef("pk"))
        if self.value() == UNDERPAID:
            short = instalments.filter(
                status=InstalmentStatus.DUE, amount_paid__gt=0, amount_paid__lt=F("amount")
            )
            return queryset.filter(Exists(short))
        if self.value() == OVERPAID:
            return queryset.filter(Exists(instalments.filter(amount_paid__gt=F("amount"))))
        return queryset
