"""Two-factor sign-in for staff: no admin page opens unless this session's sign-in included a
second factor (allauth.mfa TOTP, or one of its recovery codes).

The admin is reached only through allauth's login (its own login page redirects there), and
``StaffMfaMiddleware`` checks allauth's record of how the session authenticated:

- not signed in → allauth's login page, back to the admin page afterwards;
- signed in, not staff → 403 (the admin would send them to a login page that sends them back);
- staff with an authenticator but no second factor in this session (signed in before
  enabling it, or through any path that skipped the MFA stage) → allauth's reauthentication
  page, which records the second factor;
- staff without an authenticator → allauth's TOTP activation page.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from allauth.account.authentication import get_authentication_records
from allauth.mfa.adapter import get_adapter
from allauth.mfa.models import Authenticator
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.models import User

# allauth records a second factor under this method (TOTP, recovery code or WebAuthn).
MFA_METHOD = "mfa"
SECOND_FACTOR_TYPES = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)

# A fixed, public secret for the demo staff account only (base32, 20 bytes): anyone reading
# this file can sign in as the demo admin, which is the point of a demo and why production
# never loads demo data.
DEMO_TOTP_SECRET = "MOONSLOTDEMOSTAFFTOTPSECRETKEY23"  # noqa: S105 (public by design)


def session_has_second_factor(request: HttpRequest) -> bool:
    """Whether this session's sign-in (or a later reauthentication) included a second
    factor, for the user signed in now. allauth keeps the records per user, so a record
    left by someone else in the same session does not count."""
    user = request.user
    if not user.is_authenticated:
        return False
    return any(
        record.get("method") == MFA_METHOD for record in get_authentication_records(request, user)
    )


def has_second_factor(user: User) -> bool:
    return Authenticator.objects.filter(user=user, type__in=SECOND_FACTOR_TYPES).exists()


def _redirect_with_next(url_name: str, next_url: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"{reverse(url_name)}?{urlencode({REDIRECT_FIELD_NAME: next_url})}")


class StaffMfaMiddleware:
    """Guards every URL under the admin's prefix (see the module docstring). Place it after
    the authentication and allauth middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self._gate(request) or self.get_response(request)

    def _gate(self, request: HttpRequest) -> HttpResponse | None:
        try:
            admin_root = reverse("admin:index")
        except NoReverseMatch:  # a URLconf without the admin (some tests use one)
            return None
        if not request.path.startswith(admin_root):
            return None
        if request.path == reverse("admin:login"):
            # The admin's own password form would sign in without the MFA stage.
            next_url = request.GET.get(REDIRECT_FIELD_NAME, "")
            if not url_has_allowed_host_and_scheme(
                next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
            ):
                next_url = admin_root
            return _redirect_with_next("account_login", next_url)
        user = request.user
        if not user.is_authenticated:
            return _redirect_with_next("account_login", request.get_full_path())
        if request.path == reverse("admin:logout"):
            return None
        if not (user.is_active and user.is_staff):
            raise PermissionDenied
        if session_has_second_factor(request):
            return None
        if has_second_factor(user):
            return _redirect_with_next("mfa_reauthenticate", request.get_full_path())
        return _redirect_with_next("mfa_activate_totp", request.get_full_path())


def demo_staff_totp_setup(user: User) -> str:
    """Give a demo staff account a TOTP authenticator with ``DEMO_TOTP_SECRET`` (once: an
    existing authenticator is left as it is) and return what to print for whoever signs in
    with it: the secret and an ``otpauth://`` URI for an authenticator app.

    For ``load_demo_data`` only: the secret is public."""
    existing = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    adapter = get_adapter()
    if existing is not None and adapter.decrypt(existing.data["secret"]) != DEMO_TOTP_SECRET:
        return (
            f"  Two-factor for {user.email}: this account has its own authenticator "
            "(left as it was)."
        )
    if existing is None:
        Authenticator.objects.create(
            user=user,
            type=Authenticator.Type.TOTP,
            data={"secret": adapter.encrypt(DEMO_TOTP_SECRET)},
        )
    uri = adapter.build_totp_url(user, DEMO_TOTP_SECRET)
    return "\n".join(
        [
            f"  Two-factor for {user.email} (the admin asks for a code after the password):",
            f"    TOTP secret: {DEMO_TOTP_SECRET}",
            f"    Authenticator app URI: {uri}",
            f"    Or in a shell: oathtool --totp -b {DEMO_TOTP_SECRET}",
        ]
    )
