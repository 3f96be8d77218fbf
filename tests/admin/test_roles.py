"""The staff roles: groups with exact permission sets, created by the migration and kept in
line by ``setup_roles``, and what each role's admin index shows."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client

from accounts.models import User
from accounts.roles import FINANCE, OPERATIONS, ROLES, SALES, SALES_MANAGER
from tests.admin.helpers import admin_client_with_mfa, may

pytestmark = pytest.mark.django_db


def group_permissions(name: str) -> set[str]:
    group = Group.objects.get(name=name)
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }


def test_the_migration_created_every_role_with_exactly_its_permissions() -> None:
    for role in ROLES:
        assert group_permissions(role.group_name) == role.permissions


def test_booking_transitions_are_permissions_on_the_booking_content_type() -> None:
    codenames = {"hold_booking", "confirm_booking", "cancel_booking", "refund_above_threshold"}
    codenames |= {"review_payload"}

    found = Permission.objects.filter(
        content_type__app_label="bookings", content_type__model="booking", codename__in=codenames
    )

    assert {p.codename for p in found} == codenames


def test_what_each_role_may_do_matches_the_brief(
    sales: User, manager: User, operations: User, finance: User
) -> None:
    transitions = ("bookings.hold_booking", "bookings.confirm_booking", "bookings.cancel_booking")
    assert may(sales, *transitions) == [True, True, True]
    assert may(sales, "marketplace.change_mission", "marketplace.view_slotclass") == [True, True]
    assert may(sales, "marketplace.change_slotclass", "marketplace.change_slotclassprice") == [
        False,
        False,
    ]
    assert may(sales, "bookings.refund_above_threshold", "accounts.add_apikey") == [False, False]
    assert may(manager, *transitions) == [True, True, True]
    assert (
        may(
            manager,
            "marketplace.change_slotclass",
            "marketplace.change_slotclassprice",
            "bookings.refund_above_threshold",
            "accounts.add_apikey",
            "accounts.change_apikey",
        )
        == [True] * 5
    )
    assert may(operations, "bookings.review_payload", "marketplace.change_mission") == [True, True]
    assert may(operations, *transitions) == [False, False, False]
    assert may(finance, *transitions, "bookings.review_payload") == [False] * 4
    assert may(
        finance, "bookings.view_booking", "bookings.view_payment", "admin.view_logentry"
    ) == [
        True,
        True,
        True,
    ]
    assert not any(
        p.startswith(("add_", "change_", "delete_")) or p.endswith("_booking")
        for p in (perm.split(".")[1] for perm in FINANCE.permissions)
        if p != "view_booking"
    )


def test_setup_roles_is_idempotent_and_repairs_drift() -> None:
    sales_group = Group.objects.get(name=SALES.group_name)
    stray = Permission.objects.get(content_type__app_label="marketplace", codename="delete_mission")
    sales_group.permissions.add(stray)
    sales_group.permissions.remove(Permission.objects.get(codename="confirm_booking"))
    Group.objects.filter(name=OPERATIONS.group_name).delete()

    out = StringIO()
    call_command("setup_roles", stdout=out)
    again = StringIO()
    call_command("setup_roles", stdout=again)

    assert "Sales: +bookings.confirm_booking, -marketplace.delete_mission" in out.getvalue()
    for role in ROLES:
        assert group_permissions(role.group_name) == role.permissions
        assert f"{role.group_name}: up to date" in again.getvalue()
    assert Group.objects.filter(name__in=[r.group_name for r in ROLES]).count() == len(ROLES)


def app_models(client: Client) -> set[str]:
    response = client.get("/admin/")
    assert response.status_code == 200
    return {
        f"{app['app_label']}.{model['object_name'].lower()}"
        for app in response.context["app_list"]
        for model in app["models"]
    }


def test_the_admin_index_lists_only_what_each_role_may_see(
    sales: User, manager: User, operations: User, finance: User
) -> None:
    sales_models = app_models(admin_client_with_mfa(sales))
    manager_models = app_models(admin_client_with_mfa(manager))
    operations_models = app_models(admin_client_with_mfa(operations))
    finance_models = app_models(admin_client_with_mfa(finance))

    assert {"bookings.booking", "marketplace.mission", "accounts.organisation"} <= sales_models
    assert "accounts.apikey" not in sales_models
    assert "accounts.user" not in sales_models
    assert "accounts.apikey" in manager_models
    assert "bookings.booking" in operations_models
    assert "accounts.organisation" not in operations_models
    assert "accounts.apikey" in finance_models
    assert "accounts.user" not in finance_models | manager_models | operations_models


def test_only_roles_with_add_see_the_add_link_for_bookings(sales: User, finance: User) -> None:
    sales_page = admin_client_with_mfa(sales).get("/admin/bookings/booking/")
    finance_page = admin_client_with_mfa(finance).get("/admin/bookings/booking/")

    assert "/admin/bookings/booking/add/" in sales_page.content.decode()
    assert "/admin/bookings/booking/add/" not in finance_page.content.decode()
    assert admin_client_with_mfa(finance).get("/admin/bookings/booking/add/").status_code == 403


def test_staff_without_a_role_see_no_models(django_user_model: type[User]) -> None:
    from tests.admin.helpers import staff_user

    nobody = staff_user()

    assert app_models(admin_client_with_mfa(nobody)) == set()
    assert SALES_MANAGER.permissions > SALES.permissions
