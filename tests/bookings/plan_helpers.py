"""Payment plans for tests: the must-show deck plan (20% deposit and three instalments) and
holds on a class that sells on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from accounts.models import MemberRole, User
from bookings.models import Booking
from bookings.services import Actor, booking_hold
from marketplace.models import DueKind, Milestone, PaymentPlan, PaymentPlanStep, SlotClass
from tests.factories import MembershipFactory, OrganisationFactory, SlotClassFactory, UserFactory

# 2.5 kg on the deck at ¥180,000,000 per kg: ¥450,000,000, a ¥90,000,000 deposit.
DECK_PRICE_PER_KG_JPY = 180_000_000
DECK_MASS_G = 2_500


def deck_plan(*, deposit_percent: int = 20, name: str = "Deck: 20% and three") -> PaymentPlan:
    """20% deposit; 30% 300 days before launch; 30% when the payload is accepted; 20% 30 days
    after confirmation."""
    plan = PaymentPlan.objects.create(name=name, deposit_percent=deposit_percent, reminder_days=14)
    rest = 100 - deposit_percent
    shares = [rest * 3 // 8, rest * 3 // 8]
    shares.append(rest - sum(shares))
    PaymentPlanStep.objects.create(
        plan=plan,
        position=1,
        label="Build start",
        percent=shares[0],
        due_kind=DueKind.BEFORE_LAUNCH,
        days=300,
    )
    PaymentPlanStep.objects.create(
        plan=plan,
        position=2,
        label="Payload accepted",
        percent=shares[1],
        due_kind=DueKind.MILESTONE,
        milestone=Milestone.PAYLOAD_ACCEPTED,
    )
    PaymentPlanStep.objects.create(
        plan=plan,
        position=3,
        label="Balance",
        percent=shares[2],
        due_kind=DueKind.AFTER_BOOKING,
        days=30,
    )
    return plan


def deck_class(
    *, plan: PaymentPlan | None = None, price_per_kg: int = DECK_PRICE_PER_KG_JPY, **kwargs: Any
) -> SlotClass:
    return SlotClassFactory.create(
        payment_plan=plan if plan is not None else deck_plan(),
        prices={"JPY": price_per_kg, "USD": 1_200_000_00},
        **kwargs,
    )


def owner() -> tuple[User, Any]:
    user = UserFactory.create()
    organisation = OrganisationFactory.create()
    MembershipFactory.create(user=user, organisation=organisation, role=MemberRole.OWNER)
    return user, organisation


def plan_hold(
    slot_class: SlotClass | None = None,
    *,
    user: User | None = None,
    mass_g: int = DECK_MASS_G,
    currency: str = "JPY",
    hold_minutes: int = 60,
    now: datetime | None = None,
) -> Booking:
    """A web hold of ``mass_g`` on ``slot_class`` (the deck class by default) by an owner."""
    slot_class = slot_class or deck_class()
    if user is None:
        user, organisation = owner()
    else:
        organisation = user.memberships.get().organisation
    return booking_hold(
        slot_class_id=slot_class.pk,
        currency=currency,
        organisation=organisation,
        channel="web",
        actor=Actor.for_user(user),
        mass_g=mass_g,
        hold_minutes=hold_minutes,
        now=now,
    )
