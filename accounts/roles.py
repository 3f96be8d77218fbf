"""Staff roles of the back office, as auth groups with exact permission sets.

A role is data: a group name and the permissions it grants. ``roles_sync`` makes the
database match it (creates what is missing, removes what a group should not have), so it is
safe to run again; the data migration runs it once and ``manage.py setup_roles`` re-runs it
after a role changes here.

Booking transitions are custom permissions on the Booking content type, created here rather
than in ``Booking.Meta.permissions``: the admin and services check them with
``user.has_perm("bookings.confirm_booking")`` like any other permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps as global_apps

# (app label, model name, codename) → name shown in the admin's permission picker.
CUSTOM_PERMISSIONS: dict[tuple[str, str, str], str] = {
    ("bookings", "booking", "hold_booking"): "Can place holds for customers",
    ("bookings", "booking", "confirm_booking"): "Can confirm bookings",
    ("bookings", "booking", "cancel_booking"): "Can cancel bookings",
    ("bookings", "booking", "refund_above_threshold"): (
        "Can cancel with a refund above the approval threshold"
    ),
    ("bookings", "booking", "review_payload"): "Can change a payload's review status",
    # Also declared in Mission.Meta.permissions; listed here so a fresh database's migration
    # (which runs before Django creates Meta permissions) can grant it.
    ("marketplace", "mission", "change_mission_status"): "Can change a mission's status",
    ("accounts", "organisation", "view_reseller_statement"): (
        "Can view resellers' statements (commission, credits, balance)"
    ),
}

HOLD_BOOKING = "bookings.hold_booking"
CONFIRM_BOOKING = "bookings.confirm_booking"
CANCEL_BOOKING = "bookings.cancel_booking"
REFUND_ABOVE_THRESHOLD = "bookings.refund_above_threshold"
REVIEW_PAYLOAD = "bookings.review_payload"
VIEW_RESELLER_STATEMENT = "accounts.view_reseller_statement"
CHANGE_MISSION_STATUS = "marketplace.change_mission_status"


def _view(app_label: str, *models: str) -> frozenset[str]:
    return frozenset(f"{app_label}.view_{model}" for model in models)


CATALOGUE_VIEW = _view(
    "marketplace",
    "landermodel",
    "landerposition",
    "mission",
    "schedulechange",
    "slotclass",
    "slotclassprice",
    "cancellationtier",
)
BOOKINGS_VIEW = _view("bookings", "booking", "payloaddeclaration", "bookingevent")
PAYMENTS_VIEW = _view("bookings", "payment", "refund")
# Payment plans, the instalments they make and the documents issued for money: sales see
# them to answer customers; only the sales manager changes plans (prices and terms).
PLANS_VIEW = _view("bookings", "instalment", "billingdocument") | _view(
    "marketplace", "paymentplan", "paymentplanstep"
)
PLANS_CHANGE = {
    f"marketplace.{action}_{model}"
    for action in ("add", "change", "delete")
    for model in ("paymentplan", "paymentplanstep")
}
CUSTOMERS_VIEW = _view("accounts", "organisation", "creditlimit", "membership")
OPERATIONS_VIEW = _view(
    "bookings",
    "manifestversion",
    "manifestdelivery",
    "reaccommodationoffer",
    "waitlistentry",
    "webhookendpoint",
    "webhookdelivery",
) | _view("marketplace", "missioncontact")

SALES_PERMISSIONS = (
    CATALOGUE_VIEW
    | BOOKINGS_VIEW
    | PAYMENTS_VIEW
    | PLANS_VIEW
    | CUSTOMERS_VIEW
    | OPERATIONS_VIEW
    | {HOLD_BOOKING, CONFIRM_BOOKING, CANCEL_BOOKING}
    # Schedule changes are made on the mission's change page (marketplace.services).
    | {"marketplace.change_mission"}
    # Answering offers for customers, serving waitlists, resellers' webhook endpoints.
    | {"bookings.change_reaccommodationoffer", "bookings.change_waitlistentry"}
    | {f"bookings.{action}_webhookendpoint" for action in ("add", "change", "delete")}
    # Recording money received by bank transfer (bookings.admin_payments).
    | {"bookings.add_payment"}
    # The denied-party list sales keep (accounts.screening); entries are deactivated, not
    # deleted, so past screening notes still make sense.
    | {f"accounts.{action}_deniedparty" for action in ("view", "add", "change")}
)

SALES_MANAGER_PERMISSIONS = (
    SALES_PERMISSIONS
    | PLANS_CHANGE
    | {
        # Prices, capacity and cancellation policies live on the slot class page.
        "marketplace.change_slotclass",
        "marketplace.add_slotclassprice",
        "marketplace.change_slotclassprice",
        "marketplace.delete_slotclassprice",
        "marketplace.add_cancellationtier",
        "marketplace.change_cancellationtier",
        "marketplace.delete_cancellationtier",
        REFUND_ABOVE_THRESHOLD,
        # Paying back money received by transfer (bookings.admin_payments).
        "bookings.change_refund",
        # Reseller API keys: issued on add, revoked with the change permission.
        "accounts.view_apikey",
        "accounts.add_apikey",
        "accounts.change_apikey",
        "admin.view_logentry",
        # What each reseller owes after commission and credits (bookings/admin_statements.py).
        VIEW_RESELLER_STATEMENT,
    }
)

OPERATIONS_PERMISSIONS = (
    CATALOGUE_VIEW
    | BOOKINGS_VIEW
    | OPERATIONS_VIEW
    # change_mission: the mission contacts inline is edited on the mission's page.
    | {REVIEW_PAYLOAD, "marketplace.change_mission", CHANGE_MISSION_STATUS}
    | {f"marketplace.{action}_missioncontact" for action in ("add", "change", "delete")}
)

FINANCE_PERMISSIONS = (
    CATALOGUE_VIEW
    | BOOKINGS_VIEW
    | PAYMENTS_VIEW
    | PLANS_VIEW
    | CUSTOMERS_VIEW
    | OPERATIONS_VIEW
    | _view("bookings", "stripeevent")
    | {"accounts.view_apikey", "admin.view_logentry", VIEW_RESELLER_STATEMENT}
)


@dataclass(frozen=True)
class Role:
    group_name: str
    permissions: frozenset[str]


SALES = Role("Sales", frozenset(SALES_PERMISSIONS))
SALES_MANAGER = Role("Sales manager", frozenset(SALES_MANAGER_PERMISSIONS))
OPERATIONS = Role("Operations", frozenset(OPERATIONS_PERMISSIONS))
FINANCE = Role("Finance (read-only)", frozenset(FINANCE_PERMISSIONS))
ROLES: tuple[Role, ...] = (SALES, SALES_MANAGER, OPERATIONS, FINANCE)

DEFAULT_ACTIONS = ("add", "change", "delete", "view")


class UnknownPermission(LookupError):
    pass


def _content_type(apps: Any, app_label: str, model: str) -> Any:
    content_type_model = apps.get_model("contenttypes", "ContentType")
    content_type, _ = content_type_model.objects.get_or_create(app_label=app_label, model=model)
    return content_type


def _model_permission(
    apps: Any, app_label: str, codename: str, *, missing_model_ok: bool = False
) -> Any:
    """A model's default permission, created if ``post_migrate`` has not run yet (a fresh
    database runs this from a migration, before Django creates any permission). None for a
    model the registry does not have yet, when ``missing_model_ok``."""
    permission_model = apps.get_model("auth", "Permission")
    action, _, model_name = codename.partition("_")
    if action not in DEFAULT_ACTIONS:
        raise UnknownPermission(f"{app_label}.{codename} is neither custom nor a model default")
    try:
        model = apps.get_model(app_label, model_name)
    except LookupError as exc:
        if missing_model_ok:
            return None
        raise UnknownPermission(f"{app_label}.{codename}: no model {model_name!r}") from exc
    content_type = _content_type(apps, app_label, model._meta.model_name)
    permission, _ = permission_model.objects.get_or_create(
        content_type=content_type,
        codename=codename,
        defaults={"name": f"Can {action} {model._meta.verbose_name_raw}"},
    )
    return permission


def _custom_permissions(apps: Any) -> dict[str, Any]:
    permission_model = apps.get_model("auth", "Permission")
    found = {}
    for (app_label, model, codename), name in CUSTOM_PERMISSIONS.items():
        permission, _ = permission_model.objects.update_or_create(
            content_type=_content_type(apps, app_label, model),
            codename=codename,
            defaults={"name": name},
        )
        found[f"{app_label}.{codename}"] = permission
    return found


def roles_sync(*, apps: Any = global_apps) -> dict[str, list[str]]:
    """Make each role's group hold exactly its permissions. ``apps`` is a migration's
    historical registry or the global one. Returns, per group, what changed
    (``+perm`` / ``-perm``), empty when everything already matched.

    Raises ``UnknownPermission`` for a permission no installed model or custom definition
    provides, so a typo in a role cannot silently grant nothing."""
    group_model = apps.get_model("auth", "Group")
    custom = _custom_permissions(apps)
    # An early migration's registry lacks the models added since: their permissions wait
    # for the later migration that runs this again (accounts 0003, 0005…). Against the
    # installed apps, a model that does not exist is a typo and raises.
    historical = apps is not global_apps
    changes: dict[str, list[str]] = {}
    for role in ROLES:
        wanted = {}
        for dotted in sorted(role.permissions):
            app_label, _, codename = dotted.partition(".")
            permission = custom.get(dotted) or _model_permission(
                apps, app_label, codename, missing_model_ok=historical
            )
            if permission is not None:
                wanted[dotted] = permission
        group, _ = group_model.objects.get_or_create(name=role.group_name)
        current = {
            f"{p.content_type.app_label}.{p.codename}": p
            for p in group.permissions.select_related("content_type")
        }
        added = sorted(set(wanted) - set(current))
        removed = sorted(set(current) - set(wanted))
        if added:
            group.permissions.add(*(wanted[name] for name in added))
        if removed:
            group.permissions.remove(*(current[name] for name in removed))
        changes[role.group_name] = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
    return changes
