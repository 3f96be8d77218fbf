"""Payment plans: a booking's deposit and instalments, what it owes and when.

A slot class with a ``payment_plan`` sells on a deposit (a share of the price) and instalments
(the plan's steps); a class without one is paid in full and its bookings get no instalment
rows at all (``bookings.payments`` handles them as before). The schedule is computed once, when
the hold is placed (``instalments_create``, inside ``booking_hold``'s transaction), and kept as
``Instalment`` rows whose amounts add up to the price exactly, in integer minor units.

When an instalment falls due:

- the deposit: when the hold lapses, i.e. it confirms the booking (``hold_expires_at``);
- ``BEFORE_LAUNCH``: ``days`` before the launch window opens (as known at the hold; a schedule
  change does not move it: the contract's dates stand);
- ``AFTER_BOOKING``: ``days`` after the booking is confirmed, set by ``instalments_confirmed``
  when it is (empty until then);
- ``MILESTONE``: empty until ``instalments_milestone_reached`` is told the milestone happened;
  then it falls due ``plan.reminder_days`` after that moment (at least one day), so the first
  reminder goes out at once and the customer has the reminder period to pay.

Money received is counted on the instalment it was paid for (``amount_paid``): less than the
amount leaves it due (underpaid), more is kept on it and shown as overpaid — never moved to
another instalment without sales deciding so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from bookings.models import (
    REFERENCE_ALPHABET,
    Booking,
    Instalment,
    InstalmentKind,
    InstalmentStatus,
    Payment,
    PaymentProvider,
    PaymentStatus,
    RefundStatus,
)
from marketplace.models import DueKind, Milestone, PaymentPlan, PaymentPlanStep, SlotClass
from marketplace.money import Money

# Booking statuses whose instalments are still owed.
LIVE_STATUSES = ("held", "confirmed")


# --- the schedule (pure) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledInstalment:
    """One line of a computed schedule. ``position`` 0 is the deposit, then the plan's steps
    in order; a share that comes to nothing (a tiny price) is left out, so positions may
    skip."""

    position: int
    kind: str
    label: str
    percent: int
    amount: int
    currency: str
    due_at: datetime | None
    milestone: str = ""
    due_kind: str = ""
    days: int | None = None

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)


def plan_check(deposit_percent: int, steps: Iterable[PaymentPlanStep]) -> list[str]:
    """What is wrong with a plan, in words for the admin form (empty when it is sound): the
    deposit and the steps' shares make exactly 100%, each share is at least 1%, and each step
    says when it falls due."""
    problems: list[str] = []
    steps = list(steps)
    total = deposit_percent + sum(step.percent or 0 for step in steps)
    if total != 100:
        problems.append(
            _("The deposit and the instalments must add up to 100%% (they add up to %(total)s%%).")
            % {"total": total}
        )
    if not 1 <= deposit_percent <= 100:
        problems.append(_("The deposit must be between 1% and 100%."))
    positions = [step.position for step in steps]
    if len(set(positions)) != len(positions):
        problems.append(_("Two instalments have the same position."))
    for step in steps:
        if not step.percent or step.percent < 1:
            # xgettext:no-python-format
            problems.append(_("Each instalment is at least 1% of the price."))
        if step.due_kind == DueKind.MILESTONE and not step.milestone:
            problems.append(
                _("Instalment “%(label)s” falls due at a milestone: name it.")
                % {"label": step.label}
            )
        if step.due_kind != DueKind.MILESTONE and step.days is None:
            problems.append(
                _("Instalment “%(label)s” needs a number of days.") % {"label": step.label}
            )
    return problems


def split_exactly(total: int, percents: Sequence[int]) -> list[int]:
    """``total`` (minor units, ≥ 0) shared out by ``percents`` (summing to 100) so that the
    parts add up to ``total`` exactly: each part is its share rounded down, and the minor
    units left over go one each to the parts with the largest remainders (the earliest on a
    tie). Nothing is lost or invented, whatever the currency's minor unit."""
    if sum(percents) != 100 or any(p < 0 for p in percents):
        raise ValueError(f"shares must be non-negative and add up to 100, got {list(percents)}")
    if total < 0:
        raise ValueError("a price cannot be negative")
    floors = [total * p // 100 for p in percents]
    remainders = [total * p % 100 for p in percents]
    left = total - sum(floors)
    for index in sorted(range(len(percents)), key=lambda i: (-remainders[i], i))[:left]:
        floors[index] += 1
    return floors


def plan_schedule(
    *,
    plan: PaymentPlan,
    steps: Sequence[PaymentPlanStep],
    price: Money,
    launch: datetime,
    deposit_due: datetime,
    confirmed_at: datetime | None = None,
) -> list[ScheduledInstalment]:
    """The deposit and instalments of ``price`` under ``plan`` (``steps`` in their order):
    amounts add up to ``price.amount`` exactly (``split_exactly``). A price of a few minor
    units may leave some shares at zero: they are dropped, except that the deposit (the line
    that confirms the booking) always takes at least one minor unit of a non-zero price.
    A price of zero has no schedule. Raises ``ValueError`` for a plan whose shares are not
    100% in total."""
    ordered = sorted(steps, key=lambda s: s.position)
    percents = [plan.deposit_percent, *(step.percent for step in ordered)]
    amounts = split_exactly(price.amount, percents)
    if price.amount > 0 and amounts[0] == 0:
        # Take the unit from the largest later share (there is one: the total is positive).
        donor = max(range(1, len(amounts)), key=lambda i: (amounts[i], -i))
        amounts[donor] -= 1
        amounts[0] = 1
    lines = [
        ScheduledInstalment(
            position=0,
            kind=InstalmentKind.DEPOSIT if ordered else InstalmentKind.FULL,
            label=str(_("Deposit")) if ordered else str(_("Payment in full")),
            percent=plan.deposit_percent,
            amount=amounts[0],
            currency=price.currency,
            due_at=deposit_due,
        )
    ]
    for index, (step, amount) in enumerate(zip(ordered, amounts[1:], strict=True), start=1):
        lines.append(
            ScheduledInstalment(
                position=index,
                kind=InstalmentKind.INSTALMENT,
                label=step.label,
                percent=step.percent,
                amount=amount,
                currency=price.currency,
                due_at=step_due_at(step, launch=launch, confirmed_at=confirmed_at),
                milestone=step.milestone if step.due_kind == DueKind.MILESTONE else "",
                due_kind=step.due_kind,
                days=step.days,
            )
        )
    return [line for line in lines if line.amount > 0]


def step_due_at(
    step: PaymentPlanStep, *, launch: datetime, confirmed_at: datetime | None
) -> datetime | None:
    """When ``step`` falls due, or None while that is not known yet (a milestone not reached,
    a booking not confirmed yet)."""
    if step.due_kind == DueKind.BEFORE_LAUNCH:
        return launch - timedelta(days=step.days or 0)
    if step.due_kind == DueKind.AFTER_BOOKING and confirmed_at is not None:
        return confirmed_at + timedelta(days=step.days or 0)
    return None


def milestone_due_at(plan: PaymentPlan, *, reached_at: datetime) -> datetime:
    """A milestone instalment falls due ``plan.reminder_days`` (at least one day) after the
    milestone is reached."""
    return reached_at + timedelta(days=max(plan.reminder_days, 1))


# --- payment references ------------------------------------------------------------------


def payment_reference_for(booking_reference: str) -> str:
    """What a bank transfer quotes: ``MS-`` + the booking reference + a check character (a
    weighted sum over the reference alphabet, which catches one wrong or two swapped
    characters), e.g. ``MS-K7QF3AR``. Unique because the booking reference is."""
    size = len(REFERENCE_ALPHABET)
    total = sum(
        (index + 2) * REFERENCE_ALPHABET.index(char)
        for index, char in enumerate(booking_reference.upper())
        if char in REFERENCE_ALPHABET
    )
    return f"MS-{booking_reference}{REFERENCE_ALPHABET[total % size]}"


def payment_reference_ensure(booking: Booking) -> str:
    """The booking's payment reference, stored on first use (a conditional UPDATE: two
    concurrent callers write the same value)."""
    if booking.payment_reference:
        return booking.payment_reference
    reference = payment_reference_for(booking.reference)
    Booking.objects.filter(pk=booking.pk, payment_reference__isnull=True).update(
        payment_reference=reference
    )
    booking.payment_reference = reference
    return reference


# --- instalment rows ------------------------------------------------------------------------


def instalments_create(booking: Booking, slot_class: SlotClass, *, now: datetime) -> None:
    """Write the instalments of a new hold on a class with a payment plan (nothing, and no
    query, for a class paid in full), and give the booking its payment reference. Called by
    ``booking_hold`` inside its transaction; ``slot_class.payment_plan`` should come with the
    class (``select_related``)."""
    if slot_class.payment_plan_id is None or booking.price_amount <= 0:
        return
    plan = slot_class.payment_plan
    assert plan is not None  # noqa: S101 (the id says so)
    schedule = plan_schedule(
        plan=plan,
        steps=list(PaymentPlanStep.objects.filter(plan_id=plan.pk)),
        price=booking.price,
        launch=slot_class.mission.launch_window_start,
        deposit_due=booking.hold_expires_at or now,
    )
    Instalment.objects.bulk_create(
        Instalment(
            booking=booking,
            position=line.position,
            kind=line.kind,
            label=line.label,
            amount=line.amount,
            currency=line.currency,
            due_at=line.due_at,
            milestone=line.milestone,
            created_at=now,
        )
        for line in schedule
    )
    booking.payment_reference = payment_reference_for(booking.reference)
    Booking.objects.filter(pk=booking.pk).update(payment_reference=booking.payment_reference)


def instalments_confirmed(booking: Booking, *, now: datetime) -> int:
    """The booking was just confirmed: its deposit is due now at the latest, and its
    ``AFTER_BOOKING`` instalments get their dates. No query for a booking without a payment
    reference (plan bookings get theirs at the hold). Returns how many instalments changed."""
    if not booking.payment_reference:
        return 0
    pending = list(
        Instalment.objects.filter(booking_id=booking.pk, status=InstalmentStatus.DUE).filter(
            Q(due_at__isnull=True, milestone="") | Q(kind=InstalmentKind.DEPOSIT, due_at__gt=now)
        )
    )
    if not pending:
        return 0
    steps = dict(
        enumerate(
            PaymentPlanStep.objects.filter(plan__slot_classes__pk=booking.slot_class_id).order_by(
                "position"
            ),
            start=1,
        )
    )
    changed = []
    for instalment in pending:
        if instalment.kind == InstalmentKind.DEPOSIT:
            instalment.due_at = now
        else:
            step = steps.get(instalment.position)
            days = step.days if step is not None and step.days is not None else 0
            instalment.due_at = now + timedelta(days=days)
        changed.append(instalment)
    Instalment.objects.bulk_update(changed, ["due_at"])
    return len(changed)


def instalments_cancel(booking: Booking) -> int:
    """The booking ended (cancelled, offloaded): what was not paid is no longer owed. No
    query for a booking without a payment reference. Returns how many were cancelled."""
    if not booking.payment_reference:
        return 0
    return Instalment.objects.filter(booking_id=booking.pk, status=InstalmentStatus.DUE).update(
        status=InstalmentStatus.CANCELLED
    )


def refund_cap(booking: Booking) -> int | None:
    """The most a cancellation of a plan booking can give back: what its instalments
    received (the policy's share of the price may be more than a deposit paid). None for a
    booking without instalments (no query without a payment reference)."""
    if not booking.payment_reference:
        return None
    totals = Instalment.objects.filter(booking_id=booking.pk).aggregate(
        count=Count("pk"), paid=Sum("amount_paid")
    )
    return (totals["paid"] or 0) if totals["count"] else None


def instalments_milestone_reached(
    *, booking_id: int, milestone: str, now: datetime | None = None
) -> list[Instalment]:
    """Milestone ``milestone`` (``marketplace.models.Milestone``: payload accepted, payload
    integrated) was reached for this booking: its instalments waiting for it fall due
    (``milestone_due_at``: ``plan.reminder_days`` from now, at least a day). Call it in the
    transaction that records the milestone. Idempotent: an instalment already dated keeps
    its date. Returns the instalments that got a date (none for a booking without a plan or
    that milestone). Raises ``ValueError`` for an unknown milestone."""
    if milestone not in Milestone.values:
        raise ValueError(f"unknown milestone {milestone!r}")
    now = now or timezone.now()
    waiting = list(
        Instalment.objects.filter(
            booking_id=booking_id,
            milestone=milestone,
            due_at__isnull=True,
            status=InstalmentStatus.DUE,
        )
    )
    if not waiting:
        return []
    plan = PaymentPlan.objects.filter(slot_classes__bookings__pk=booking_id).first()
    due = milestone_due_at(plan, reached_at=now) if plan else now + timedelta(days=1)
    for instalment in waiting:
        instalment.due_at = due
    Instalment.objects.bulk_update(waiting, ["due_at"])
    return waiting


def instalment_apply(instalment: Instalment, payment: Payment, *, now: datetime) -> Instalment:
    """Count a succeeded ``payment`` on ``instalment`` (both locked by the caller): paid once
    what it received covers its amount; anything beyond stays on it as overpaid (shown, not
    moved to the next instalment). The caller records the event."""
    instalment.amount_paid += payment.amount
    fields = ["amount_paid"]
    if instalment.status == InstalmentStatus.DUE and instalment.amount_paid >= instalment.amount:
        instalment.status = InstalmentStatus.PAID
        instalment.paid_at = now
        fields += ["status", "paid_at"]
    instalment.save(update_fields=fields)
    if instalment.status == InstalmentStatus.PAID:
        # A booking flagged overdue is cleared as soon as nothing past its grace is left,
        # not at the next hourly sweep. (Imported here: the reminders import the billing
        # module, which reads the plans.)
        from bookings.instalment_reminders import booking_overdue_refresh

        booking_overdue_refresh(booking_id=instalment.booking_id, now=now)
    return instalment


def next_due_instalment(instalments: Iterable[Instalment]) -> Instalment | None:
    """The instalment to pay next: the first still due, in the plan's order (the deposit
    first), whether or not its date has come."""
    due = [i for i in instalments if i.status == InstalmentStatus.DUE]
    return min(due, key=lambda i: i.position) if due else None


# --- what a booking owes ------------------------------------------------------------------


@dataclass(frozen=True)
class MoneySummary:
    """A booking's money at a glance, for its page, the admin and the API.

    ``paid`` is what was received (card payments captured, transfers recorded), before
    refunds; ``refunded`` what went back or is on its way. ``due_now`` is what is owed by
    ``now`` (the deposit of a hold, instalments past their date); ``overdue`` the part of it
    whose date has passed (a hold's deposit is never overdue: the hold lapses instead).
    ``outstanding`` is everything still owed. ``overpaid`` is money received beyond what was
    owed (on an instalment, or beyond the price of a booking paid in full): shown, and left
    for sales to refund or apply. ``instalments`` is empty for a booking paid in full."""

    price: Money
    paid: Money
    refunded: Money
    outstanding: Money
    due_now: Money
    overdue: Money
    overpaid: Money
    next_due: Instalment | None
    instalments: list[Instalment] = field(default_factory=list)

    @property
    def has_plan(self) -> bool:
        return bool(self.instalments)

    @property
    def underpaid(self) -> list[Instalment]:
        """Instalments that received something, but not all they owe."""
        return [
            i
            for i in self.instalments
            if i.status == InstalmentStatus.DUE and 0 < i.amount_paid < i.amount
        ]

    @property
    def overpaid_instalments(self) -> list[Instalment]:
        return [i for i in self.instalments if i.amount_paid > i.amount]

    def as_dict(self) -> dict[str, object]:
        """Plain data for the API: amounts as ``{"amount", "currency"}``."""
        return {
            "price": self.price.as_dict(),
            "paid": self.paid.as_dict(),
            "refunded": self.refunded.as_dict(),
            "outstanding": self.outstanding.as_dict(),
            "due_now": self.due_now.as_dict(),
            "overdue": self.overdue.as_dict(),
            "overpaid": self.overpaid.as_dict(),
            "next_due_instalment": self.next_due.pk if self.next_due else None,
            "instalments": [
                {
                    "id": i.pk,
                    "position": i.position,
                    "kind": i.kind,
                    "label": i.label,
                    "amount": i.money.as_dict(),
                    "paid": Money(i.amount_paid, i.currency).as_dict(),
                    "due_at": i.due_at.isoformat() if i.due_at else None,
                    "milestone": i.milestone,
                    "status": i.status,
                }
                for i in self.instalments
            ],
        }


def booking_money_summary(booking: Booking, *, now: datetime | None = None) -> MoneySummary:
    """What ``booking`` owes and has paid (``MoneySummary``). Reads ``booking.instalments``
    and ``booking.payments`` (with their refunds) through ``.all()``: prefetch
    ``"instalments"`` and ``"payments__refunds"`` for lists; otherwise three queries,
    whatever the number of instalments. Money on account (``on_account``) is owed but never
    due here: the invoice settles it."""
    now = now or timezone.now()
    currency = booking.currency
    instalments = sorted(booking.instalments.all(), key=lambda i: i.position)
    payments = [
        p
        for p in booking.payments.all()
        if p.status == PaymentStatus.SUCCEEDED and p.provider != PaymentProvider.ACCOUNT
    ]
    paid = sum(p.amount for p in payments)
    refunded = sum(
        r.amount
        for p in payments
        for r in p.refunds.all()
        if r.status in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)
    )
    live = booking.status_at(now) in LIVE_STATUSES
    held = booking.status_at(now) == "held"
    if instalments:
        owing = [i for i in instalments if i.status == InstalmentStatus.DUE] if live else []
        outstanding = sum(i.outstanding for i in owing)
        due_now = sum(
            i.outstanding
            for i in owing
            if (i.kind == InstalmentKind.DEPOSIT and held) or (i.due_at and i.due_at <= now)
        )
        overdue = sum(i.outstanding for i in owing if not held and i.is_overdue(now))
        # Beyond each instalment's amount, and money recorded when nothing was left to pay.
        overpaid = sum(i.overpaid for i in instalments) + sum(
            p.amount for p in payments if p.instalment_id is None
        )
        next_due = next_due_instalment(owing)
    else:
        owing_total = booking.price_amount if live and not booking.on_account else 0
        outstanding = max(owing_total - paid, 0)
        due_now = outstanding if held else 0
        overdue = 0
        overpaid = max(paid - booking.price_amount, 0)
        next_due = None
    return MoneySummary(
        price=booking.price,
        paid=Money(paid, currency),
        refunded=Money(refunded, currency),
        outstanding=Money(outstanding, currency),
        due_now=Money(due_now, currency),
        overdue=Money(overdue, currency),
        overpaid=Money(overpaid, currency),
        next_due=next_due,
        instalments=instalments,
    )


def amount_to_pay(booking: Booking, instalments: Sequence[Instalment] | None = None) -> int:
    """What the next payment of ``booking`` is for, in minor units: the next instalment's
    outstanding amount on a plan, the price otherwise."""
    rows = list(booking.instalments.all()) if instalments is None else list(instalments)
    if not rows:
        return booking.price_amount
    upcoming = next_due_instalment(rows)
    return upcoming.outstanding if upcoming is not None else 0


__all__ = [
    "MoneySummary",
    "ScheduledInstalment",
    "amount_to_pay",
    "booking_money_summary",
    "instalment_apply",
    "instalments_cancel",
    "instalments_confirmed",
    "instalments_create",
    "instalments_milestone_reached",
    "next_due_instalment",
    "payment_reference_ensure",
    "payment_reference_for",
    "plan_check",
    "plan_schedule",
    "refund_cap",
    "split_exactly",
]
