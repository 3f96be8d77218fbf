"""``manage.py issue_api_key``: the key is alone on the last line and authenticates."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, CreditLimit, Organisation, OrganisationKind
from accounts.services import api_key_authenticate
from tests.factories import OrganisationFactory, ResellerFactory

pytestmark = pytest.mark.django_db


def issue(*args: str) -> list[str]:
    out = StringIO()
    call_command("issue_api_key", *args, stdout=out)
    return out.getvalue().splitlines()


def test_the_last_line_is_a_key_that_authenticates_for_a_new_reseller() -> None:
    lines = issue("--reseller", "Orbit Travel", "--name", "production")

    api_key = api_key_authenticate(lines[-1])
    reseller = Organisation.objects.get(name="Orbit Travel")
    assert api_key.organisation == reseller
    assert api_key.name == "production"
    assert lines[-1].strip() == lines[-1]
    assert reseller.kind == OrganisationKind.RESELLER
    # Sales set limits later: none means no credit limit, no hold cap.
    assert reseller.held_mass_cap_g is None
    assert not CreditLimit.objects.filter(organisation=reseller).exists()


def test_a_second_key_goes_to_the_same_reseller() -> None:
    first = issue("--reseller", "Orbit Travel")[-1]
    second = issue("--reseller", "  Orbit Travel ")[-1]

    assert first != second
    assert Organisation.objects.filter(name="Orbit Travel").count() == 1
    assert api_key_authenticate(first).organisation == api_key_authenticate(second).organisation
    assert ApiKey.objects.count() == 2


def test_an_existing_resellers_settings_are_left_alone() -> None:
    reseller = ResellerFactory.create(name="Moon Tours", commission_bp=1200, held_mass_cap_g=5000)

    lines = issue("--reseller", "Moon Tours")

    assert api_key_authenticate(lines[-1]).organisation == reseller
    reseller.refresh_from_db()
    assert (reseller.commission_bp, reseller.held_mass_cap_g) == (1200, 5000)


def test_a_non_reseller_name_is_a_clear_error_and_issues_nothing() -> None:
    OrganisationFactory.create(name="Acme Space", kind=OrganisationKind.CUSTOMER)

    with pytest.raises(CommandError, match="'Acme Space' exists but is not a reseller"):
        issue("--reseller", "Acme Space")

    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reseller", "   "], "--reseller needs the reseller's name"),
        (["--reseller", "x" * 201], "--reseller is too long: at most 200 characters"),
        (["--reseller", "Orbit Travel", "--name", "k" * 101], "--name is too long"),
    ],
)
def test_bad_arguments_are_clear_errors_and_create_nothing(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        issue(*args)

    assert not Organisation.objects.exists()
    assert not ApiKey.objects.exists()


def test_the_reseller_option_is_required() -> None:
    with pytest.raises(CommandError, match="--reseller"):
        issue()
