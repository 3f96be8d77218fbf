"""Confirmed bookings on a payment plan with instalment rows, built directly, for the billing
and reminder tests (the plan arithmetic itself is tested with ``bookings.plans``)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import MemberRole, Organisation, User
from bookings.models import (
    Booking,
    BookingStatus,
    Instalment,
    InstalmentKind,
    Payment,
    PaymentProvider,
    PaymentStatus,
)
from marketplace.models import Channel, PaymentPlan, SlotClass, TaxTreatment
from tests.factories import MembershipFactory, OrganisationFactory, SlotClassFactory, UserFactory

_serial = itertools.count(1)


def plan_class(
    *, reminder_days: int = 14, grace_days: int = 14, tax: str = TaxTreatment.STANDARD
) -> SlotClass:
    plan = PaymentPlan.objects.create(
        name=f"Plan {next(_serial)}",
        deposit_percent=20,
        reminder_days=reminder_days,
        grace_days=grace_days,
    )
    return SlotClassFactory.create(payment_plan=plan, tax_treatment=tax)


def confirmed_booking(
    slot_class: SlotClass | None = None,
    *,
    price: int = 5_500_000,
    currency: str = "JPY",
    organisation: Organisation | None = None,
    user: User | None = None,
    now: datetime | None = None,
    **fields: Any,
) -> Booking:
    """A confirmed web booking made by ``user`` (an owner of ``organisation``)."""
    now = now or timezone.now()
    slot_class = slot_class or plan_class()
    organisation = organisation or OrganisationFactory.create()
    user = user or UserFactory.create()
    MembershipFactory.create(user=user, organisation=organisation, role=MemberRole.OWNER)
    serial = next(_serial)
    fields.setdefault("created_by", user)
    return Booking.objects.create(
        reference=f"B{serial:05d}",
        organisation=organisation,
        channel=Channel.WEB,
        slot_class=slot_class,
        mass_g=slot_class.min_mass_g,
        currency=currency,
        price_amount=price,
        status=BookingStatus.CONFIRMED,
        confirmed_at=now,
        payment_reference=f"MS-PAY-{serial:05d}",
        **fields,
    )


def instalment(
    booking: Booking,
    *,
    amount: int,
    due_at: datetime | None,
    position: int | None = None,
    label: str = "Build start",
    kind: str = InstalmentKind.INSTALMENT,
) -> Instalment:
    if position is None:
        position = booking.instalments.count() + 1
    return Instalment.objects.create(
        booking=booking,
        position=position,
        kind=kind,
        label=label,
        amount=amount,
        currency=booking.currency,
        due_at=due_at,
    )


def bank_payment(booking: Booking, *, amount: int, instalment: Instalment | None = None) -> Payment:
    """A bank transfer as sales record it: succeeded at once."""
    return Payment.objects.create(
        booking=booking,
        provider=PaymentProvider.BANK_TRANSFER,
        attempt=booking.payments.count() + 1,
        amount=amount,
        currency=booking.currency,
        status=PaymentStatus.SUCCEEDED,
        idempotency_key=f"bank:{booking.pk}:{next(_serial)}",
        succeeded_at=timezone.now(),
        instalment=instalment,
        bank_reference=booking.payment_reference or "",
    )


def days(n: float) -> timedelta:
    return timedelta(days=n)


@pytest.fixture
def cjk_font() -> None:
    """Billing PDFs print Japanese names with the manifests' font."""
    from bookings.manifest_pdf import font_available
    from tests.conftest import missing

    if not font_available():
        missing("billing PDFs need fonts-ipafont-gothic (apt-get install fonts-ipafont-gothic)")
