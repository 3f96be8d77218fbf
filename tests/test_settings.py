"""Production settings: no default secrets, and `check --deploy` is clean."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "x" * 20 + "-production-secret-key-for-the-check-only-0123456789",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "STRIPE_SECRET_KEY": "sk_test_check",
    "STRIPE_WEBHOOK_SECRET": "whsec_check",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_check",
    "DJANGO_ALLOWED_HOSTS": "moonslot.example",
    # Invoices carry the seller's qualified-invoice registration number (T + 13 digits).
    "MOONSLOT_SELLER_REGISTRATION_NUMBER": "T1234567890123",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefixes = ("DJANGO_", "STRIPE_", "MOONSLOT_SELLER_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    base.pop("DATABASE_URL", None)
    base.pop("REDIS_URL", None)
    base.pop("DATABASE_PREPARED_STATEMENTS", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_settings_pass_the_deployment_checklist() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_deployment_checklist_warns_while_invoices_carry_the_demo_registration_number() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "MOONSLOT_SELLER_REGISTRATION_NUMBER"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "bookings.W101" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "missing",
    [
        "DJANGO_SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
    ],
)
def test_production_refuses_to_start_without_a_secret(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def test_production_never_points_at_a_stripe_sandbox() -> None:
    env = {**PRODUCTION_ENV, "STRIPE_API_BASE": "http://127.0.0.1:12111"}
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(repr(settings.STRIPE_API_BASE))",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "''"


def test_local_settings_need_no_environment_at_all() -> None:
    result = manage("check", env={"DJANGO_SETTINGS_MODULE": "config.settings.local"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("flag", "expected"), [(None, True), ("false", False)])
def test_postgresql_prepares_statements_unless_switched_off(flag: str | None, expected: bool):
    env = dict(PRODUCTION_ENV)
    if flag is not None:
        env["DATABASE_PREPARED_STATEMENTS"] = flag
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; o = settings.DATABASES['default']['OPTIONS']; "
        "print(o.get('server_side_binding', False), o.get('prepare_threshold'))",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    binding, threshold = result.stdout.strip().splitlines()[-1].split()
    assert binding == str(expected)
    assert threshold == ("5" if expected else "None")
