"""The demo staff's printed code is one the admin's second-factor check accepts."""

import pytest
from allauth.mfa.totp.internal.auth import validate_totp_code
from django.core.management import call_command

from accounts.management.commands.demo_totp_code import totp_code
from accounts.mfa import DEMO_TOTP_SECRET

pytestmark = pytest.mark.django_db


def test_rfc6238_reference_vector() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits) → 287082 with 6 digits.
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of "12345678901234567890"
    assert totp_code(secret, at=59) == "287082"


def test_printed_demo_code_is_accepted_by_allauth(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("demo_totp_code")
    code = capsys.readouterr().out.split()[0]
    assert validate_totp_code(DEMO_TOTP_SECRET, code)


def test_demo_data_gives_the_admin_a_second_factor(capsys: pytest.CaptureFixture[str]) -> None:
    from allauth.mfa.models import Authenticator

    call_command("load_demo_data")
    out = capsys.readouterr().out
    assert DEMO_TOTP_SECRET in out
    assert Authenticator.objects.filter(
        user__email="admin@moonslot.example", type=Authenticator.Type.TOTP
    ).exists()
