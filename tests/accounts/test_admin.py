"""Accounts admin: users with e-mail logins, organisations, and API keys that are issued and
revoked through the services, shown once and never edited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from accounts.models import ApiKey, CreditLimit, Organisation, OrganisationKind, User
from accounts.services import InvalidApiKey, api_key_authenticate, api_key_issue
from tests.admin.helpers import admin_client_with_mfa
from tests.factories import (
    MembershipFactory,
    OrganisationFactory,
    ResellerFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> User:
    return UserFactory.create(email="sales@moonslot.example", is_staff=True, is_superuser=True)


@pytest.fixture
def client(staff: User) -> Client:
    # The admin opens only after a second factor (accounts/mfa.py).
    return admin_client_with_mfa(staff)


def management_form(prefix: str, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(initial),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def organisation_data(organisation: Organisation | None = None, **fields: Any) -> dict[str, str]:
    data = {
        "name": organisation.name if organisation else "Acme Space",
        "kind": organisation.kind if organisation else OrganisationKind.CUSTOMER,
        "country": "JP",
        "notification_email": "ops@acme.example",
        "commission_bp": "0",
        "held_mass_cap_g": "",
        **management_form("memberships"),
        **management_form("credit_limits"),
        **management_form("api_keys", organisation.api_keys.count() if organisation else 0),
    }
    if organisation is not None:
        for index, key in enumerate(organisation.api_keys.all()):
            data[f"api_keys-{index}-id"] = str(key.pk)
            data[f"api_keys-{index}-organisation"] = str(organisation.pk)
    return data | {name: str(value) for name, value in fields.items()}


def form_errors(response: Any) -> str:
    texts = [str(response.context["adminform"].form.errors)]
    for inline in response.context.get("inline_admin_formsets", []):
        texts.append(str(inline.formset.errors) + str(inline.formset.non_form_errors()))
    return " ".join(texts)


# --- users ------------------------------------------------------------------------------
def test_adding_a_user_sets_a_password_and_a_lower_case_login(client: Client) -> None:
    response = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "Booker@Example.COM",
            "name": "Hana Booker",
            "password1": "lunar-regolith-42",
            "password2": "lunar-regolith-42",
        },
    )

    assert response.status_code == 302
    user = User.objects.get(email="booker@example.com")
    assert user.check_password("lunar-regolith-42")
    assert not user.is_staff


def test_adding_a_user_whose_address_exists_in_another_case_is_refused(client: Client) -> None:
    UserFactory.create(email="booker@example.com")

    response = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "BOOKER@example.com",
            "password1": "lunar-regolith-42",
            "password2": "lunar-regolith-42",
        },
    )

    assert response.status_code == 200
    assert "A user with this e-mail address already exists." in form_errors(response)
    assert User.objects.filter(email__iexact="booker@example.com").count() == 1


def test_adding_a_user_with_mismatched_passwords_is_refused(client: Client) -> None:
    response = client.post(
        "/admin/accounts/user/add/",
        {"email": "a@example.com", "password1": "lunar-regolith-42", "password2": "other-42x"},
    )

    assert response.status_code == 200
    assert "didn’t match" in form_errors(response)
    assert not User.objects.filter(email="a@example.com").exists()


def test_user_pages_show_memberships_and_search_by_email(client: Client) -> None:
    membership = MembershipFactory.create(user=UserFactory.create(email="member@example.com"))

    change = client.get(f"/admin/accounts/user/{membership.user.pk}/change/")
    search = client.get("/admin/accounts/user/?q=member@")

    assert change.status_code == 200
    assert membership.organisation.name in change.content.decode()
    assert [u.email for u in search.context["cl"].result_list] == ["member@example.com"]


# --- organisations ----------------------------------------------------------------------
def test_an_organisation_is_added_with_its_credit_limit(client: Client) -> None:
    data = organisation_data(kind=OrganisationKind.RESELLER, commission_bp=800)
    data.update(
        {
            "credit_limits-TOTAL_FORMS": "1",
            "credit_limits-0-currency": "JPY",
            "credit_limits-0-amount": "500000000",
        }
    )

    response = client.post("/admin/accounts/organisation/add/", data)

    assert response.status_code == 302, form_errors(response)
    organisation = Organisation.objects.get(name="Acme Space")
    assert (organisation.kind, organisation.commission_bp) == ("reseller", 800)
    assert list(organisation.credit_limits.values_list("currency", "amount")) == [
        ("JPY", 500_000_000)
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"commission_bp": "10001"}, "The commission is in basis points: 0 to 10,000 (100%)."),
        ({"commission_bp": "-1"}, "greater than or equal to 0"),
        ({"credit_limits-0-amount": "-1"}, "A credit limit cannot be negative."),
        (
            {"credit_limits-1-currency": "JPY", "credit_limits-1-amount": "5"},
            "Please correct the duplicate data for currency",
        ),
    ],
)
def test_invalid_organisation_data_is_a_form_error(
    client: Client, changes: dict[str, str], message: str
) -> None:
    data = organisation_data()
    data.update(
        {
            "credit_limits-TOTAL_FORMS": "2",
            "credit_limits-0-currency": "JPY",
            "credit_limits-0-amount": "1000",
            "credit_limits-1-currency": "USD",
            "credit_limits-1-amount": "1000",
        }
    )
    data.update(changes)

    response = client.post("/admin/accounts/organisation/add/", data)

    assert response.status_code == 200
    assert message in form_errors(response)
    assert not Organisation.objects.filter(name="Acme Space").exists()
    assert not CreditLimit.objects.exists()


def test_a_reseller_with_active_keys_cannot_change_its_kind(client: Client) -> None:
    reseller = ResellerFactory.create()
    api_key_issue(organisation=reseller)

    response = client.post(
        f"/admin/accounts/organisation/{reseller.pk}/change/",
        organisation_data(reseller, kind=OrganisationKind.CUSTOMER),
    )

    assert response.status_code == 200
    assert "still has active API keys" in form_errors(response)
    reseller.refresh_from_db()
    assert reseller.kind == OrganisationKind.RESELLER


# --- API keys ---------------------------------------------------------------------------
def test_adding_a_key_shows_the_raw_key_once_and_it_authenticates(
    client: Client, staff: User
) -> None:
    reseller = ResellerFactory.create(name="Orbit Travel")

    response = client.post(
        "/admin/accounts/apikey/add/",
        {"organisation": str(reseller.pk), "name": "production"},
        follow=True,
    )

    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "msk_" in str(m)]
    assert len(shown) == 1
    raw_key = next(word for word in shown[0].split() if word.startswith("msk_"))
    api_key = api_key_authenticate(raw_key)
    assert (api_key.organisation, api_key.name, api_key.created_by) == (
        reseller,
        "production",
        staff,
    )
    assert ApiKey.objects.count() == 1
    # Shown once: not on the next page, not in the admin's log, and the digest nowhere.
    again = client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    assert raw_key not in again
    assert api_key.digest not in again
    assert api_key.prefix in again
    assert not any(raw_key in str(entry.change_message) for entry in LogEntry.objects.all())


def test_keys_are_issued_to_resellers_only(client: Client) -> None:
    customer = OrganisationFactory.create(kind=OrganisationKind.CUSTOMER)

    response = client.post(
        "/admin/accounts/apikey/add/", {"organisation": str(customer.pk), "name": "x"}
    )

    assert response.status_code == 200
    assert "Select a valid choice" in form_errors(response)
    assert not ApiKey.objects.exists()


def test_revoke_action_revokes_the_selected_keys_through_the_service(client: Client) -> None:
    reseller = ResellerFactory.create()
    revoked = api_key_issue(organisation=reseller, name="old")
    kept = api_key_issue(organisation=reseller, name="new")

    response = client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [str(revoked.api_key.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Revoked 1 key." in [str(m) for m in response.context["messages"]]
    with pytest.raises(InvalidApiKey):
        api_key_authenticate(revoked.raw_key)
    assert api_key_authenticate(kept.raw_key).pk == kept.api_key.pk


def test_revoking_a_revoked_key_keeps_its_revocation_time(client: Client) -> None:
    issued = api_key_issue(organisation=ResellerFactory.create())
    client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [str(issued.api_key.pk)]},
    )
    first = ApiKey.objects.get(pk=issued.api_key.pk).revoked_at

    client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [str(issued.api_key.pk)]},
    )

    assert first is not None
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at == first


def test_a_key_cannot_be_edited_or_deleted_in_the_admin(client: Client) -> None:
    issued = api_key_issue(organisation=ResellerFactory.create(), name="production")
    url = f"/admin/accounts/apikey/{issued.api_key.pk}/"

    edit = client.post(f"{url}change/", {"name": "renamed", "revoked_at_0": ""})
    delete = client.post(f"{url}delete/", {"post": "yes"})

    assert (edit.status_code, delete.status_code) == (403, 403)
    api_key = ApiKey.objects.get(pk=issued.api_key.pk)
    assert (api_key.name, api_key.revoked_at) == ("production", None)


def test_the_key_list_shows_prefixes_in_a_fixed_number_of_queries(
    client: Client, django_assert_max_num_queries: Any
) -> None:
    keys = [api_key_issue(organisation=ResellerFactory.create()).api_key for _ in range(6)]

    with django_assert_max_num_queries(8):
        response = client.get("/admin/accounts/apikey/")

    content = response.content.decode()
    assert all(key.prefix in content and key.digest not in content for key in keys)


def test_every_accounts_admin_page_renders(client: Client, staff: User) -> None:
    issued = api_key_issue(organisation=ResellerFactory.create())
    membership = MembershipFactory.create(organisation=issued.api_key.organisation)
    objects: list[Any] = [staff, membership.organisation, issued.api_key]
    urls = ["/admin/accounts/", f"/admin/accounts/user/{staff.pk}/password/"]
    for obj in objects:
        base = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/"
        urls += [base, f"{base}add/", f"{base}{obj.pk}/change/"]

    statuses = {url: client.get(url).status_code for url in urls}

    assert set(statuses.values()) == {200}, statuses
