"""Payment plans edited by the sales manager only, with the 100% and due-date rules said in
words; the slot class page's plan and tax fields; and the mission status, which only
operations may move (sales keep editing missions' details and schedules)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from marketplace.models import Mission, MissionStatus, PaymentPlan, SlotClass
from tests.admin.helpers import admin_client_with_mfa, may
from tests.bookings.plan_helpers import deck_plan
from tests.factories import MissionFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

PLANS = "/admin/marketplace/paymentplan/"
MISSIONS = "/admin/marketplace/mission/"


def plan_data(deposit: int, *steps: dict[str, Any], name: str = "Deck 30/70") -> dict[str, str]:
    data = {
        "name": name,
        "deposit_percent": str(deposit),
        "reminder_days": "14",
        "grace_days": "14",
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for index, step in enumerate(steps):
        for key, value in {"position": str(index + 1), "milestone": "", "days": ""}.items():
            data[f"steps-{index}-{key}"] = value
        for key, value in step.items():
            data[f"steps-{index}-{key}"] = str(value)
    return data


def step(percent: int, **fields: Any) -> dict[str, Any]:
    return {"label": f"{percent}% step", "percent": percent, "due_kind": "before_launch", **fields}


def test_the_sales_manager_adds_a_plan_whose_shares_make_100_percent(manager: User) -> None:
    client = admin_client_with_mfa(manager)

    response = client.post(
        f"{PLANS}add/",
        plan_data(
            30,
            step(40, days=300),
            step(30, due_kind="milestone", milestone="payload_accepted"),
        ),
    )

    assert response.status_code == 302
    plan = PaymentPlan.objects.get()
    assert plan.deposit_percent == 30
    assert [(s.percent, s.due_kind, s.days, s.milestone) for s in plan.steps.all()] == [
        (40, "before_launch", 300, ""),
        (30, "milestone", None, "payload_accepted"),
    ]


def test_shares_that_do_not_make_100_percent_are_refused_in_words(manager: User) -> None:
    client = admin_client_with_mfa(manager)

    response = client.post(f"{PLANS}add/", plan_data(20, step(40, days=300), step(30, days=30)))

    assert response.status_code == 200
    assert "must add up to 100% (they add up to 90%)" in response.content.decode()
    assert not PaymentPlan.objects.exists()


def test_a_steps_due_rule_is_explained_on_its_field(manager: User) -> None:
    client = admin_client_with_mfa(manager)

    response = client.post(
        f"{PLANS}add/",
        plan_data(
            20,
            step(40),  # before launch, but no number of days
            step(40, due_kind="milestone", days=10),  # a milestone step with days, no milestone
        ),
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "Give the number of days." in page
    assert "Choose the milestone this instalment waits for." in page
    assert "A milestone instalment has no number of days." in page
    assert not PaymentPlan.objects.exists()


def test_only_the_sales_manager_changes_plans(
    sales: User, finance: User, operations: User, manager: User
) -> None:
    plan = deck_plan()
    change = f"{PLANS}{plan.pk}/change/"
    sales_client = admin_client_with_mfa(sales)

    assert sales_client.get(PLANS).status_code == 200  # sales see the plans
    assert sales_client.get(f"{PLANS}add/").status_code == 403
    assert sales_client.post(change, plan_data(100, name="Renamed")).status_code == 403
    assert admin_client_with_mfa(finance).get(change).status_code == 200
    assert admin_client_with_mfa(finance).get(f"{PLANS}add/").status_code == 403
    assert admin_client_with_mfa(operations).get(PLANS).status_code == 403
    plan.refresh_from_db()
    assert plan.name != "Renamed"
    assert admin_client_with_mfa(manager).get(f"{PLANS}add/").status_code == 200


def test_the_slot_class_page_sets_the_payment_plan_and_tax_treatment(manager: User) -> None:
    from tests.marketplace.test_admin import form_data

    client = admin_client_with_mfa(manager)
    plan = deck_plan()
    deck = SlotClassFactory.create()
    url = f"/admin/marketplace/slotclass/{deck.pk}/change/"
    data = form_data(client, url, "slotclass_form")

    data.update(payment_plan=str(plan.pk), tax_treatment="zero_rated")
    response = client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:2000]
    deck = SlotClass.objects.get(pk=deck.pk)
    assert (deck.payment_plan, deck.tax_treatment) == (plan, "zero_rated")


# --- mission status -----------------------------------------------------------------------
def status_post(client: Client, mission: Mission, status: str, **extra: str) -> Any:
    return client.post(
        MISSIONS,
        {
            "action": "mission_change_status",
            "_selected_action": [str(mission.pk)],
            "apply": "1",
            "status": status,
            "reason": "test",
            **extra,
        },
        follow=True,
    )


def test_sales_may_not_move_a_missions_status_but_operations_may(
    sales: User, operations: User, manager: User
) -> None:
    mission = MissionFactory.create(status=MissionStatus.INTEGRATION)
    sales_client = admin_client_with_mfa(sales)

    listing = sales_client.get(MISSIONS).content.decode()
    status_post(sales_client, mission, "launched")
    mission.refresh_from_db()
    assert "mission_change_status" not in listing
    assert mission.status == MissionStatus.INTEGRATION
    assert (
        "mission_change_status" not in admin_client_with_mfa(manager).get(MISSIONS).content.decode()
    )

    ops_client = admin_client_with_mfa(operations)
    assert "mission_change_status" in ops_client.get(MISSIONS).content.decode()
    done = status_post(ops_client, mission, "launched")
    mission.refresh_from_db()
    assert "is now Launched" in done.content.decode()
    assert mission.status == MissionStatus.LAUNCHED


def test_the_status_action_itself_refuses_a_user_without_the_permission(sales: User) -> None:
    from django.contrib.admin.sites import site
    from django.core.exceptions import PermissionDenied
    from django.test import RequestFactory

    from bookings.admin_operations import mission_change_status

    mission = MissionFactory.create(status=MissionStatus.INTEGRATION)
    request = RequestFactory().post(MISSIONS, {"apply": "1", "status": "launched"})
    request.user = sales

    with pytest.raises(PermissionDenied):
        mission_change_status(site._registry[Mission], request, Mission.objects.all())
    mission.refresh_from_db()
    assert mission.status == MissionStatus.INTEGRATION


def test_money_and_plan_permissions_per_role(
    sales: User, manager: User, operations: User, finance: User
) -> None:
    money = (
        "bookings.view_instalment",
        "bookings.view_billingdocument",
        "marketplace.view_paymentplan",
        "marketplace.view_paymentplanstep",
        "bookings.view_payment",
    )
    plan_changes = (
        "marketplace.add_paymentplan",
        "marketplace.change_paymentplan",
        "marketplace.delete_paymentplan",
        "marketplace.change_paymentplanstep",
    )
    assert may(sales, *money) == [True] * 5
    assert may(sales, *plan_changes) == [False] * 4
    assert may(manager, *plan_changes) == [True] * 4
    assert may(finance, *money) == [True] * 5
    assert may(finance, *plan_changes) == [False] * 4
    assert may(operations, *money) == [False] * 5
    status = "marketplace.change_mission_status"
    assert may(operations, status) == [True]
    assert may(sales, status) + may(manager, status) + may(finance, status) == [False] * 3
    statements = "accounts.view_reseller_statement"
    assert may(manager, statements) + may(finance, statements) == [True, True]
    assert may(sales, statements) + may(operations, statements) == [False, False]
