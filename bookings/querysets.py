from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Case, Q, Value, When

if TYPE_CHECKING:
    from accounts.models import Organisation
    from bookings.models import Booking, BookingEvent  # noqa: F401 (generic arguments)


class BookingQuerySet(models.QuerySet["Booking"]):
    def held(self) -> BookingQuerySet:
        return self.filter(status="held")

    def expired_as_of(self, now: datetime) -> BookingQuerySet:
        return self.filter(hold_expires_at__lte=now)

    def live_holds(self, now: datetime) -> BookingQuerySet:
        return self.filter(status="held", hold_expires_at__gt=now)

    def for_organisation(self, organisation: Organisation) -> BookingQuerySet:
        return self.filter(organisation=organisation)

    def with_live_status(self, now: datetime) -> BookingQuerySet:
        """Annotate ``live_status``: what a reader sees, a lapsed hold already ``expired``."""
        return self.annotate(
            live_status=Case(
                When(status="held", hold_expires_at__lte=now, then=Value("expired")),
                default="status",
                output_field=models.CharField(),
            )
        )

    def with_live_status_in(self, statuses: list[str], now: datetime) -> BookingQuerySet:
        condition = Q()
        for status in statuses:
            if status == "held":
                condition |= Q(status="held", hold_expires_at__gt=now)
            elif status == "expired":
                condition |= Q(status="expired") | Q(status="held", hold_expires_at__lte=now)
            else:
                condition |= Q(status=status)
        return self.filter(condition)


class BookingEventQuerySet(models.QuerySet["BookingEvent"]):
    def sequenced(self) -> BookingEventQuerySet:
        return self.filter(seq__isnull=False)

    def for_organisation(self, organisation: Organisation) -> BookingEventQuerySet:
        return self.filter(organisation=organisation)
