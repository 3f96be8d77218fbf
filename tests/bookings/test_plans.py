"""Payment plans: the schedule adds up exactly, instalment rows follow the hold, the
confirmation, milestones and cancellation, and the money summary reads them."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from bookings import plans
from bookings.models import REFERENCE_ALPHABET, Instalment, InstalmentKind, InstalmentStatus
from bookings.services import Actor, booking_cancel, booking_confirm
from marketplace.models import DueKind, Milestone, PaymentPlan, PaymentPlanStep
from marketplace.money import Money
from tests.bookings.plan_helpers import deck_class, deck_plan, plan_hold
from tests.factories import SlotClassFactory

SALES = Actor.system("test:sales")


def unsaved_plan(deposit: int, shares: list[int]) -> tuple[PaymentPlan, list[PaymentPlanStep]]:
    plan = PaymentPlan(name="p", deposit_percent=deposit, reminder_days=14)
    steps = [
        PaymentPlanStep(
            plan=plan,
            position=n,
            label=f"Step {n}",
            percent=share,
            due_kind=DueKind.BEFORE_LAUNCH,
            days=10 * n,
        )
        for n, share in enumerate(shares, start=1)
    ]
    return plan, steps


@st.composite
def plans_and_prices(draw: st.DrawFn) -> tuple[int, list[int], int, str]:
    parts = draw(st.integers(min_value=1, max_value=6))
    cuts = sorted(
        draw(st.lists(st.integers(1, 99), min_size=parts - 1, max_size=parts - 1, unique=True))
    )
    bounds = [0, *cuts, 100]
    percents = [b - a for a, b in itertools.pairwise(bounds)]
    currency = draw(st.sampled_from(["JPY", "USD"]))
    price = draw(st.one_of(st.integers(1, 12), st.integers(1, 10**13)))
    return percents[0], percents[1:], price, currency


@given(plans_and_prices())
def test_schedule_adds_up_to_the_price_exactly_in_minor_units(case) -> None:
    deposit, shares, price, currency = case
    plan, steps = unsaved_plan(deposit, shares)
    now = timezone.now()
    schedule = plans.plan_schedule(
        plan=plan,
        steps=steps,
        price=Money(price, currency),
        launch=now + timedelta(days=400),
        deposit_due=now,
    )
    assert sum(line.amount for line in schedule) == price
    assert all(line.amount > 0 for line in schedule)
    assert schedule[0].position == 0  # the deposit always stays, and comes first
    assert all(isinstance(line.amount, int) for line in schedule)
    # No line is further than one minor unit from its exact share (the deposit's rescue of a
    # tiny price aside).
    if price >= 100:
        for line in schedule:
            assert abs(line.amount * 100 - price * line.percent) < 100


def test_yen_split_that_does_not_divide_gives_the_leftover_yen_to_the_largest_remainders() -> None:
    assert plans.split_exactly(100, [20, 30, 30, 20]) == [20, 30, 30, 20]
    assert plans.split_exactly(7, [20, 30, 30, 20]) == [2, 2, 2, 1]
    assert plans.split_exactly(1, [20, 30, 30, 20]) == [0, 1, 0, 0]


def test_one_yen_price_keeps_only_the_deposit() -> None:
    plan, steps = unsaved_plan(20, [30, 30, 20])
    now = timezone.now()
    schedule = plans.plan_schedule(
        plan=plan, steps=steps, price=Money(1, "JPY"), launch=now, deposit_due=now
    )
    assert [(line.position, line.amount) for line in schedule] == [(0, 1)]


def test_shares_not_adding_to_100_are_refused() -> None:
    plan, steps = unsaved_plan(20, [30, 30])
    assert plans.plan_check(plan.deposit_percent, steps) == [
        "The deposit and the instalments must add up to 100% (they add up to 80%)."
    ]
    with pytest.raises(ValueError, match="add up to 100"):
        plans.split_exactly(10, [20, 30, 30])


def test_plan_check_passes_a_sound_plan_and_names_incomplete_steps() -> None:
    _plan, steps = unsaved_plan(20, [30, 30, 20])
    assert plans.plan_check(20, steps) == []
    steps[0].due_kind = DueKind.MILESTONE
    steps[1].days = None
    problems = plans.plan_check(20, steps)
    assert "Instalment “Step 1” falls due at a milestone: name it." in problems
    assert "Instalment “Step 2” needs a number of days." in problems


def test_payment_reference_check_character_catches_any_one_typo_or_swap() -> None:
    original = "K7QF3A"
    check = plans.payment_reference_for(original)
    assert check.startswith("MS-K7QF3A")
    assert len(check) == 10
    for index in range(len(original)):
        for char in REFERENCE_ALPHABET:
            if char != original[index]:
                typo = original[:index] + char + original[index + 1 :]
                assert plans.payment_reference_for(typo)[-1] != check[-1], typo
    for index in range(len(original) - 1):
        swapped = list(original)
        swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
        assert plans.payment_reference_for("".join(swapped))[-1] != check[-1]


# --- instalment rows --------------------------------------------------------------------


@pytest.mark.django_db
def test_deck_hold_in_yen_gets_a_deposit_and_three_instalments_adding_up_exactly() -> None:
    now = timezone.now()
    slot_class = deck_class()
    launch = slot_class.mission.launch_window_start

    booking = plan_hold(slot_class, now=now)

    rows = list(booking.instalments.order_by("position"))
    assert booking.price_amount == 450_000_000
    assert [(i.kind, i.amount, i.currency) for i in rows] == [
        (InstalmentKind.DEPOSIT, 90_000_000, "JPY"),
        (InstalmentKind.INSTALMENT, 135_000_000, "JPY"),
        (InstalmentKind.INSTALMENT, 135_000_000, "JPY"),
        (InstalmentKind.INSTALMENT, 90_000_000, "JPY"),
    ]
    assert sum(i.amount for i in rows) == booking.price_amount
    assert rows[0].due_at == booking.hold_expires_at
    assert rows[1].due_at == launch - timedelta(days=300)
    assert (rows[2].due_at, rows[2].milestone) == (None, Milestone.PAYLOAD_ACCEPTED)
    assert rows[3].due_at is None  # 30 days after a confirmation that has not happened
    booking.refresh_from_db()
    assert booking.payment_reference == plans.payment_reference_for(booking.reference)


@pytest.mark.django_db
def test_class_paid_in_full_gets_no_instalments_and_no_extra_queries(
    django_assert_num_queries,
) -> None:
    plain = SlotClassFactory.create()
    with_plan = deck_class()
    plan_hold(plain)  # warm caches (content types, sites)
    plan_hold(with_plan)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as plain_queries:
        booking = plan_hold(plain)
    with CaptureQueriesContext(connection) as plan_queries:
        plan_hold(with_plan)
    assert not booking.instalments.exists()
    assert booking.payment_reference is None
    instalment_sql = [q["sql"] for q in plain_queries.captured_queries if "instalment" in q["sql"]]
    assert instalment_sql == []
    # A plan costs its steps' query, one insert and the reference's update, no more.
    assert len(plan_queries.captured_queries) - len(plain_queries.captured_queries) <= 3


@pytest.mark.django_db
def test_confirmation_dates_the_after_booking_instalment_and_the_deposit() -> None:
    now = timezone.now()
    booking = plan_hold(now=now)
    later = now + timedelta(minutes=5)

    booking_confirm(booking_id=booking.pk, actor=SALES, now=later)

    rows = list(booking.instalments.order_by("position"))
    assert rows[0].due_at == later
    assert rows[3].due_at == later + timedelta(days=30)
    assert rows[2].due_at is None  # still waiting for its milestone


@pytest.mark.django_db
def test_milestone_reached_dates_its_instalment_once() -> None:
    now = timezone.now()
    booking = plan_hold(now=now)
    booking_confirm(booking_id=booking.pk, actor=SALES, now=now)
    reached = now + timedelta(days=100)

    dated = plans.instalments_milestone_reached(
        booking_id=booking.pk, milestone=Milestone.PAYLOAD_ACCEPTED, now=reached
    )
    again = plans.instalments_milestone_reached(
        booking_id=booking.pk, milestone=Milestone.PAYLOAD_ACCEPTED, now=reached + timedelta(days=9)
    )

    assert [i.position for i in dated] == [2]
    assert again == []
    assert Instalment.objects.get(booking=booking, position=2).due_at == reached + timedelta(
        days=14
    )
    assert (
        plans.instalments_milestone_reached(
            booking_id=booking.pk, milestone=Milestone.PAYLOAD_INTEGRATED, now=reached
        )
        == []
    )
    with pytest.raises(ValueError, match="unknown milestone"):
        plans.instalments_milestone_reached(booking_id=booking.pk, milestone="launched")


@pytest.mark.django_db
def test_cancelling_marks_unpaid_instalments_cancelled_and_caps_the_refund_at_what_was_paid() -> (
    None
):
    now = timezone.now()
    booking = plan_hold(now=now)
    booking_confirm(booking_id=booking.pk, actor=SALES, now=now)
    Instalment.objects.filter(booking=booking, position=0).update(
        amount_paid=90_000_000, status=InstalmentStatus.PAID, paid_at=now
    )

    cancelled = booking_cancel(booking_id=booking.pk, actor=SALES, now=now)

    # The policy gives 90% of the price (more than a year before launch), but only the
    # deposit was ever paid.
    assert cancelled.refund_amount == 90_000_000
    statuses = list(booking.instalments.order_by("position").values_list("status", flat=True))
    assert statuses == ["paid", "cancelled", "cancelled", "cancelled"]


@pytest.mark.django_db
def test_money_summary_shows_due_next_overdue_underpaid_and_overpaid(
    django_assert_max_num_queries,
) -> None:
    now = timezone.now()
    booking = plan_hold(now=now)
    booking = booking_confirm(booking_id=booking.pk, actor=SALES, now=now)
    rows = {i.position: i for i in booking.instalments.all()}
    Instalment.objects.filter(pk=rows[0].pk).update(
        amount_paid=90_000_100, status=InstalmentStatus.PAID, paid_at=now
    )
    Instalment.objects.filter(pk=rows[1].pk).update(
        amount_paid=35_000_000, due_at=now - timedelta(days=1)
    )

    with django_assert_max_num_queries(3):
        summary = plans.booking_money_summary(booking, now=now)

    assert summary.price == Money(450_000_000, "JPY")
    assert summary.outstanding == Money(450_000_000 - 90_000_000 - 35_000_000, "JPY")
    assert summary.due_now == Money(100_000_000, "JPY")
    assert summary.overdue == Money(100_000_000, "JPY")
    assert summary.overpaid == Money(100, "JPY")
    assert summary.next_due is not None
    assert summary.next_due.position == 1
    assert [i.position for i in summary.underpaid] == [1]
    assert [i.position for i in summary.overpaid_instalments] == [0]
    assert summary.as_dict()["next_due_instalment"] == rows[1].pk


@pytest.mark.django_db
def test_money_summary_of_a_booking_paid_in_full_has_no_instalments() -> None:
    booking = plan_hold(SlotClassFactory.create())
    summary = plans.booking_money_summary(booking)
    assert not summary.has_plan
    assert summary.due_now == booking.price
    assert summary.next_due is None
    assert plans.amount_to_pay(booking) == booking.price_amount


@pytest.mark.django_db
def test_deck_plan_helper_is_a_sound_plan() -> None:
    plan = deck_plan()
    assert plans.plan_check(plan.deposit_percent, plan.steps.all()) == []
