"""Security properties, tested through HTTP: headers and a content security policy on every
page, login throttling through the real login form, API keys stored as digests and compared
in constant time, no secret in any log line, and a probe of every URL pattern of the project:
what an anonymous visitor gets, and that one customer or reseller never reaches another's
bookings. The probe is data-driven: a new URL pattern without a classification fails it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlparse

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import ApiKey, MemberRole, Organisation, User
from accounts.services import api_key_issue, personal_organisation_create
from bookings import gateways, services
from bookings.models import Booking, BookingEvent, Payment
from bookings.services import Actor
from config.logging import BookingReference, JsonFormatter, RedactSecrets
from config.settings.base import content_security_policy
from marketplace.models import SlotClass
from tests.bookings.api_helpers import bearer_client, hold_body
from tests.factories import MembershipFactory, ResellerFactory, SlotClassFactory, UserFactory
from tests.test_settings import PRODUCTION_ENV, manage

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's


# --- helpers ----------------------------------------------------------------------------


def csp_directives(response: Any) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.status_code} {response}"
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def allowed_by(directives: dict[str, list[str]], directive: str, url: str, page: str) -> bool:
    """Whether ``url`` (as written in a page served from ``page``) may load under the
    policy's ``directive`` (falling back to default-src), as a browser reads it."""
    sources = directives.get(directive, directives.get("default-src", []))
    target = urlparse(url)
    if not target.scheme:  # relative: the page's own origin
        return "'self'" in sources
    if target.scheme == "data":
        return "data:" in sources
    origin = f"{target.scheme}://{target.netloc}"
    if origin == page:
        return "'self'" in sources
    for source in sources:
        pattern = re.escape(source).replace(r"\*", r"[^./]+")
        if re.fullmatch(pattern, origin):
            return True
    return False


_EXECUTABLE = {"text/javascript", "application/javascript", "module"}


class _Assets(HTMLParser):
    """External scripts and frames of a page, and its inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.frames: list[str] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [name for name, _value in attrs if name.startswith("on")]
        if tag == "script":
            if values.get("src"):
                self.scripts.append(values["src"] or "")
            elif (values.get("type") or "text/javascript") in _EXECUTABLE:
                self._in_script = True  # a JSON data block is not a script to a browser
        if tag == "iframe" and values.get("src"):
            self.frames.append(values["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def page_assets(response: Any) -> _Assets:
    parser = _Assets()
    parser.feed(response.content.decode())
    return parser


def verified_user(email: str | None = None) -> User:
    user = UserFactory.create(**({"email": email} if email else {}))
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def web_hold(slot_class: SlotClass, user: User) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=personal_organisation_create(user=user),
        channel="web",
        actor=Actor.for_user(user),
        currency="JPY",
        mass_g=slot_class.min_mass_g,
    )


def api_hold(slot_class: SlotClass, reseller: Organisation) -> Booking:
    return services.booking_hold(
        slot_class_id=slot_class.pk,
        organisation=reseller,
        channel="api",
        actor=Actor.system("test"),
        currency="JPY",
        mass_g=slot_class.min_mass_g,
    )


def add_payment(booking: Booking) -> Payment:
    return Payment.objects.create(
        booking=booking,
        provider="stripe",
        attempt=1,
        amount=booking.price_amount,
        currency=booking.currency,
        status="pending",
        idempotency_key=f"test-{booking.reference}",
    )


# --- headers and the content security policy --------------------------------------------


@dataclass
class World:
    """Two customers and two resellers, each with a booking, on one class."""

    slot_class: SlotClass
    customer_a: User
    customer_b: User
    booking_a: Booking
    booking_b: Booking
    payment_b: Payment
    reseller_a_key: str
    reseller_b_key: str
    api_booking_a: Booking
    api_booking_b: Booking
    staff: User


@pytest.fixture
def world() -> World:
    slot_class = SlotClassFactory.create()
    customer_a, customer_b = verified_user(), verified_user()
    booking_a, booking_b = web_hold(slot_class, customer_a), web_hold(slot_class, customer_b)
    reseller_a, reseller_b = ResellerFactory.create(), ResellerFactory.create()
    return World(
        slot_class=slot_class,
        customer_a=customer_a,
        customer_b=customer_b,
        booking_a=booking_a,
        booking_b=booking_b,
        payment_b=add_payment(booking_b),
        reseller_a_key=api_key_issue(organisation=reseller_a).raw_key,
        reseller_b_key=api_key_issue(organisation=reseller_b).raw_key,
        api_booking_a=api_hold(slot_class, reseller_a),
        api_booking_b=api_hold(slot_class, reseller_b),
        staff=UserFactory.create(is_staff=True, is_superuser=True),
    )


def _pages(world: World) -> list[tuple[str, str | None]]:
    """(path, who): the pages a person sees, anonymous or signed in as the customer."""
    code = world.slot_class.mission.code
    reference = world.booking_a.reference
    return [
        ("/", None),
        (f"/missions/{code}/", None),
        ("/accounts/login/", None),
        ("/accounts/signup/", None),
        ("/accounts/password/reset/", None),
        ("/accounts/email/", "customer"),
        (f"/missions/{code}/book/{world.slot_class.pk}/", "customer"),
        ("/bookings/", "customer"),
        (f"/bookings/{reference}/", "customer"),
        (f"/bookings/{reference}/pay/", "customer"),
        ("/api/v1/missions/", None),
        ("/api/v1/schema/", None),
        ("/api/v1/docs/", None),
        ("/admin/login/", None),
        ("/admin/", None),
        ("/healthz", None),
    ]


def _get(world: World, path: str, who: str | None) -> Any:
    client = Client()
    if who == "customer":
        client.force_login(world.customer_a)
    return client.get(path)


def test_every_page_carries_the_security_headers_and_the_content_security_policy(
    world: World,
) -> None:
    for path, who in _pages(world):
        response = _get(world, path, who)
        assert response.status_code < 500, path
        directives = csp_directives(response)
        assert directives["default-src"] == ["'self'"], path
        assert directives["frame-ancestors"] == ["'none'"], path
        assert directives["object-src"] == ["'none'"], path
        assert directives["script-src-attr"] == ["'none'"], path
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert response["Referrer-Policy"] == "strict-origin-when-cross-origin", path
        assert response["X-Frame-Options"] == "DENY", path


def test_every_script_and_frame_a_page_loads_is_allowed_by_its_policy(
    world: World, settings: Any
) -> None:
    # What local.py and test.py are to do after pointing STRIPE_API_BASE at a sandbox (see
    # the strict xfail below).
    settings.CONTENT_SECURITY_POLICY = content_security_policy(
        stripe_api_base=settings.STRIPE_API_BASE
    )
    checked = 0
    for path, who in _pages(world):
        response = _get(world, path, who)
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        directives = csp_directives(response)
        assets = page_assets(response)
        for src in assets.scripts:
            assert allowed_by(directives, "script-src", src, "http://testserver"), (path, src)
            checked += 1
        for src in assets.frames:
            assert allowed_by(directives, "frame-src", src, "http://testserver"), (path, src)
        # Inline handlers are never allowed, so no page may rely on one.
        assert not assets.handlers, (path, assets.handlers)
    assert checked > 0


def test_no_page_needs_inline_scripts_and_the_policy_allows_none(world: World) -> None:
    """Swagger UI's start-up script comes from the site (SpectacularSwaggerSplitView), so no
    page has an inline script and the policy can refuse them all."""
    pages_with_inline = []
    script_src: list[str] = []
    for path, who in _pages(world):
        response = _get(world, path, who)
        script_src = csp_directives(response)["script-src"]
        html = response.get("Content-Type", "").startswith("text/html")
        if html and page_assets(response).inline_scripts:
            pages_with_inline.append(path)
    assert pages_with_inline == [], pages_with_inline
    assert "'unsafe-inline'" not in script_src


def test_the_docs_page_loads_swagger_ui_from_the_site_itself(world: World) -> None:
    response = Client().get("/api/v1/docs/")
    assets = page_assets(response)
    assert any("swagger-ui-bundle" in src for src in assets.scripts)
    static_url = "/" + settings.STATIC_URL.lstrip("/")
    for src in assets.scripts:
        if src.startswith("/api/v1/docs/"):  # the start-up script, served by the docs view
            script = Client().get(src)
            assert script.status_code == 200
            assert b"/api/v1/schema/" in script.content
            continue
        assert src.startswith(static_url), src  # same origin, from the sidecar package
        assert finders.find(src.removeprefix(static_url)), f"{src} is not a static file"
    directives = csp_directives(response)
    assert "data:" in directives["img-src"]  # Swagger UI's icons are data: URIs
    assert "'self'" in directives["connect-src"]  # it fetches the schema


def test_the_policy_lets_stripe_js_load_frame_and_call_stripe() -> None:
    directives = content_security_policy()["DIRECTIVES"]
    header = {name: list(values) for name, values in directives.items()}
    stripe_js = gateways.STRIPE_JS_URL
    assert allowed_by(header, "script-src", stripe_js, "https://moonslot.example")
    assert allowed_by(header, "frame-src", "https://js.stripe.com/v3/elements", "https://x")
    assert allowed_by(header, "frame-src", "https://hooks.stripe.com/3d_secure", "https://x")
    assert allowed_by(header, "connect-src", "https://api.stripe.com/v1/tokens", "https://x")
    # Stripe, not any origin: another host is refused.
    assert not allowed_by(header, "script-src", "https://evil.example/x.js", "https://x")
    assert not allowed_by(header, "connect-src", "http://127.0.0.1:12111/v1", "https://x")


def test_the_policy_lets_the_local_stripe_sandbox_serve_stripe_js_and_its_api() -> None:
    base = "http://127.0.0.1:12111"
    directives = content_security_policy(stripe_api_base=base)["DIRECTIVES"]
    sandbox_js = f"{base}/js.stripe.com/v3/"
    assert allowed_by(directives, "script-src", sandbox_js, "http://127.0.0.1:8000")
    assert allowed_by(directives, "connect-src", f"{base}/v1/tokens", "http://127.0.0.1:8000")
    assert not allowed_by(directives, "frame-src", sandbox_js, "http://127.0.0.1:8000")


def test_the_pay_page_loads_stripe_js_under_the_policy(world: World, settings: Any) -> None:
    settings.STRIPE_API_BASE = ""
    client = Client()
    client.force_login(world.customer_a)
    response = client.get(f"/bookings/{world.booking_a.reference}/pay/")
    assert response.status_code == 200
    scripts = page_assets(response).scripts
    assert gateways.STRIPE_JS_URL in scripts, scripts
    directives = csp_directives(response)
    assert allowed_by(directives, "script-src", gateways.STRIPE_JS_URL, "http://testserver")


def test_the_policy_in_force_allows_the_stripe_js_the_settings_point_at(world: World) -> None:
    client = Client()
    client.force_login(world.customer_a)
    response = client.get(f"/bookings/{world.booking_a.reference}/pay/")
    stripe_js = gateways.stripe_js_url()
    assert stripe_js in page_assets(response).scripts
    assert allowed_by(csp_directives(response), "script-src", stripe_js, "http://testserver")


def test_production_cookies_are_secure_and_http_only() -> None:
    names = [
        "SESSION_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "CSRF_COOKIE_SECURE",
        "CSRF_COOKIE_HTTPONLY",
        "LANGUAGE_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "X_FRAME_OPTIONS",
    ]
    code = f"from django.conf import settings; print([getattr(settings, n) for n in {names!r}])"
    result = manage("shell", "-c", code, env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str([True] * 6 + ["DENY"])


def test_session_and_csrf_cookies_carry_the_flags_production_sets(settings: Any) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.CSRF_COOKIE_HTTPONLY = True
    user = verified_user()
    client = Client(enforce_csrf_checks=True)
    form = client.get("/accounts/login/")
    csrf = form.cookies["csrftoken"]
    assert csrf["secure"]
    assert csrf["httponly"]
    response = client.post(
        "/accounts/login/",
        {"login": user.email, "password": PASSWORD, "csrfmiddlewaretoken": csrf.value},
    )
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"


# --- login throttling -------------------------------------------------------------------


def _login(client: Client, email: str, password: str) -> Any:
    return client.post("/accounts/login/", {"login": email, "password": password})


def test_the_sixth_failed_login_for_an_account_is_refused_even_with_the_right_password() -> None:
    user = verified_user()
    client = Client()
    for _attempt in range(5):
        response = _login(client, user.email, "wrong-password")
        assert response.status_code == 200
        assert "_auth_user_id" not in client.session
    response = _login(client, user.email, PASSWORD)
    assert response.status_code in (200, 429)
    assert "_auth_user_id" not in client.session
    assert b"Too many failed login attempts" in response.content


def test_the_right_password_after_four_failures_still_signs_in() -> None:
    user = verified_user()
    client = Client()
    for _attempt in range(4):
        _login(client, user.email, "wrong-password")
    response = _login(client, user.email, PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_a_locked_account_stays_locked_from_another_ip_address() -> None:
    user = verified_user()
    for attempt in range(5):
        _login(Client(REMOTE_ADDR=f"198.51.100.{attempt + 1}"), user.email, "wrong-password")
    client = Client(REMOTE_ADDR="203.0.113.9")
    response = _login(client, user.email, PASSWORD)
    assert "_auth_user_id" not in client.session
    assert b"Too many failed login attempts" in response.content


def test_five_failed_logins_from_one_ip_address_lock_that_address_for_every_account() -> None:
    users = [verified_user() for _ in range(6)]
    for user in users[:5]:
        _login(Client(REMOTE_ADDR="198.51.100.7"), user.email, "wrong-password")
    client = Client(REMOTE_ADDR="198.51.100.7")
    response = _login(client, users[5].email, PASSWORD)
    assert "_auth_user_id" not in client.session
    assert b"Too many failed login attempts" in response.content
    elsewhere = Client(REMOTE_ADDR="203.0.113.10")
    _login(elsewhere, users[5].email, PASSWORD)
    assert elsewhere.session["_auth_user_id"] == str(users[5].pk)


# --- API keys at rest -------------------------------------------------------------------


def _every_stored_value() -> Iterator[tuple[str, object]]:
    """(table, value) for every value of every row of every table."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    yield table, value


def test_the_database_never_holds_a_raw_api_key_only_its_sha256_digest() -> None:
    slot_class = SlotClassFactory.create()
    issued = api_key_issue(organisation=ResellerFactory.create())
    client = bearer_client(issued.raw_key)
    held = client.post(
        "/api/v1/bookings/", hold_body(slot_class), format="json", HTTP_IDEMPOTENCY_KEY="one"
    )
    assert held.status_code == 201
    assert client.get("/api/v1/bookings/").status_code == 200
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert stored.digest == hashlib.sha256(issued.raw_key.encode()).hexdigest()
    # msk_<12 hex>_<43 url-safe characters>: the secret may itself contain "_".
    secret = issued.raw_key.split("_", 2)[2]
    assert len(secret) == 43
    for table, value in _every_stored_value():
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        assert secret not in text, f"the key's secret is stored in {table}"


def test_a_key_differing_in_its_last_character_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = api_key_issue(organisation=ResellerFactory.create())
    last = issued.raw_key[-1]
    altered = issued.raw_key[:-1] + ("A" if last != "A" else "B")
    comparisons: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        comparisons.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(account_services.hmac, "compare_digest", spy)
    response = bearer_client(altered).get("/api/v1/bookings/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    # The digests were compared by hmac.compare_digest (constant time), not ==.
    assert comparisons == [(issued.api_key.digest, hashlib.sha256(altered.encode()).hexdigest())]
    assert bearer_client(issued.raw_key).get("/api/v1/bookings/").status_code == 200


# --- no secret in the logs --------------------------------------------------------------


def _rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write of this record: the JSON line, the message and
    every plain value the record carries."""
    parts = [JsonFormatter().format(record), record.getMessage(), str(record.exc_text or "")]
    for value in vars(record).values():
        if isinstance(value, str | int | float | dict | list | tuple):
            parts.append(repr(value))
    return "\n".join(parts)


def test_no_log_record_holds_an_api_key_or_a_password(
    caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    slot_class = SlotClassFactory.create()
    issued = api_key_issue(organisation=ResellerFactory.create())
    user = verified_user()
    wrong = "Tr0ub4dor&3-not-this-one"
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True  # log the SQL too
    try:
        client = bearer_client(issued.raw_key)
        client.post("/api/v1/bookings/", hold_body(slot_class), format="json")
        client.post("/api/v1/bookings/", {"colour": "red"}, format="json")  # a 400
        bearer_client(issued.raw_key[:-1] + "x").get("/api/v1/bookings/")  # a 401
        _login(Client(), user.email, wrong)
        _login(Client(), user.email, PASSWORD)
    finally:
        connection.force_debug_cursor = False
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any(r.name == "django.db.backends" for r in caplog.records)
    # msk_<12 hex>_<43 url-safe characters>: the secret may itself contain "_".
    secret = issued.raw_key.split("_", 2)[2]
    assert len(secret) == 43
    for record in caplog.records:
        text = _rendered(record)
        for value in (issued.raw_key, secret, PASSWORD, wrong):
            assert value not in text, f"{record.name} logged a secret: {record.getMessage()}"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_logged_authorization_headers_and_keys_are_redacted() -> None:
    raw_key = "msk_0123456789ab_" + "s" * 43
    logger = logging.getLogger("tests.security")
    # The console handler's filters, as settings configure them.
    configured: dict[str, Any] = settings.LOGGING
    assert configured["handlers"]["console"]["filters"] == ["booking_reference", "redact_secrets"]
    handler = _Collect()
    handler.addFilter(BookingReference())
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    try:
        logger.warning("headers: %s", {"Authorization": f"Bearer {raw_key}", "Accept": "json"})
        logger.warning("META %s", {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"})
        logger.warning("retrying with key %s", raw_key)
        logger.warning("form password=hunter2&login=a@b.c")
    finally:
        logger.removeHandler(handler)
    records = handler.records
    lines = [JsonFormatter().format(record) for record in records]
    assert len(lines) == 4
    for line in lines:
        assert "s" * 43 not in line, line
        assert "hunter2" not in line, line
    assert "msk_0123456789ab_[redacted]" in lines[2]  # the prefix still names the key
    assert "'Accept': 'json'" in lines[0]  # only credentials go


# --- every URL pattern, probed ----------------------------------------------------------

# What an anonymous GET gets, per URL name; every admin page needs a staff sign-in.
PUBLIC, LOGIN, KEY, HOME, WEBHOOK = "public", "login", "key", "home", "webhook"
# A page whose credential is a token in its URL: a token that matches nothing is a 404.
TOKEN = "token"
ANONYMOUS: dict[str, str] = {
    "healthz": PUBLIC,
    "marketplace:mission-list": PUBLIC,
    "marketplace:mission-detail": PUBLIC,
    "marketplace:mission-status": PUBLIC,
    "account_login": PUBLIC,
    "account_signup": PUBLIC,
    "account_inactive": PUBLIC,
    "account_email_verification_sent": PUBLIC,
    "account_reset_password": PUBLIC,
    "account_reset_password_done": PUBLIC,
    "account_reset_password_from_key_done": PUBLIC,
    # An unknown key shows the "link invalid or expired" page.
    "account_confirm_email": PUBLIC,
    "account_reset_password_from_key": PUBLIC,
    "account_logout": HOME,
    "set_language": HOME,
    "account_reauthenticate": LOGIN,
    "account_email": LOGIN,
    "account_change_password": LOGIN,
    "account_set_password": LOGIN,
    "account_confirm_login_code": LOGIN,
    "mfa_index": LOGIN,
    "mfa_authenticate": LOGIN,
    "mfa_reauthenticate": LOGIN,
    "mfa_activate_totp": LOGIN,
    "mfa_deactivate_totp": LOGIN,
    "mfa_view_recovery_codes": LOGIN,
    "mfa_generate_recovery_codes": LOGIN,
    "mfa_download_recovery_codes": LOGIN,
    "bookings:new": LOGIN,
    "bookings:list": LOGIN,
    "bookings:detail": LOGIN,
    "bookings:cancel": LOGIN,
    "bookings:payload": LOGIN,
    "bookings:document": LOGIN,
    "bookings:offer": LOGIN,
    "bookings:rebook": LOGIN,
    "bookings:waitlist": LOGIN,
    "bookings:waitlist-join": LOGIN,
    "bookings:waitlist-withdraw": LOGIN,
    "payments:pay": LOGIN,
    "payments:card": LOGIN,
    "payments:complete": LOGIN,
    "bookings:complete": TOKEN,
    "bookings:complete-join": LOGIN,
    "payments:stripe-webhook": WEBHOOK,
    "api-mission-list": PUBLIC,
    "api-mission-detail": PUBLIC,
    "api-schema": PUBLIC,
    "api-docs": PUBLIC,
    "api-booking-list": KEY,
    "api-booking-detail": KEY,
    "api-booking-payload": KEY,
    "api-booking-confirm": KEY,
    "api-booking-cancel": KEY,
    "api-event-feed": KEY,
    "api-booking-offers": KEY,
    "api-booking-offer-answer": KEY,
    "api-booking-rebook": KEY,
    "api-waitlist-list": KEY,
    "api-waitlist-detail": KEY,
    "api-waitlist-withdraw": KEY,
    "api-webhooks": KEY,
    "api-webhook-detail": KEY,
    "api-webhook-enable": KEY,
}


@dataclass(frozen=True)
class Route:
    route: str  # as written in the URLconf, prefixes joined
    name: str  # namespaced; "" for an unnamed pattern
    pattern: URLPattern

    @property
    def parameters(self) -> set[str]:
        return set(self.pattern.pattern.regex.groupindex)

    def url(self, values: dict[str, str]) -> str:
        """The route with each parameter replaced by its sample value."""
        path = re.sub(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)", lambda m: values[m[1]], self.route)
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m[1]], path)
        return "/" + path.replace("^", "").replace("$", "")


def every_route() -> list[Route]:
    def walk(patterns: list[Any], prefix: str, namespace: str) -> Iterator[Route]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = namespace
                if entry.namespace:
                    inner = f"{namespace}{entry.namespace}:"
                yield from walk(entry.url_patterns, prefix + str(entry.pattern), inner)
            elif isinstance(entry, URLPattern):
                name = f"{namespace}{entry.name}" if entry.name else ""
                yield Route(prefix + str(entry.pattern), name, entry)

    return list(walk(get_resolver().url_patterns, "", ""))


def expectation(route: Route) -> str | None:
    if route.route.startswith("admin/"):
        return LOGIN  # every admin page, the admin's own and the back office's
    return ANONYMOUS.get(route.name)


def sample_values(world: World) -> dict[str, str]:
    return {
        "reference": world.booking_a.reference,
        "code": world.slot_class.mission.code,
        "slot_class_id": str(world.slot_class.pk),
        "payment_id": str(world.payment_b.pk),
        "object_id": str(world.booking_a.pk),
        "content_type_id": "1",
        "id": str(world.customer_a.pk),
        "app_label": "bookings",
        "url": "bookings/",
        "key": "not-a-real-key",
        "uidb36": "1z",
        "fmt": "csv",
        "offer_id": "1",
        "entry_id": "1",
        "endpoint_id": "1",
        "booking_id": str(world.booking_a.pk),
        "token": "not-a-real-completion-token-000000000000000",
        "number": "INV-2026-000001",
        "pk": "1",
        "refund_id": "1",
    }


def _is_login_redirect(response: Any) -> bool:
    if response.status_code != 302:
        return False
    target = urlparse(response["Location"]).path
    return target in (reverse("account_login"), reverse("admin:login"))


CHECKS: dict[str, Callable[[Any], bool]] = {
    PUBLIC: lambda r: r.status_code == 200,
    LOGIN: _is_login_redirect,
    KEY: lambda r: r.status_code == 401 and r.json()["code"] == "not_authenticated",
    HOME: lambda r: r.status_code == 302 and urlparse(r["Location"]).path == "/",
    WEBHOOK: lambda r: r.status_code == 405,
    TOKEN: lambda r: r.status_code == 404,
}


def test_every_url_pattern_is_classified() -> None:
    unclassified = [
        f"{r.route} ({r.name or 'unnamed'})" for r in every_route() if not expectation(r)
    ]
    assert not unclassified, (
        "URL patterns without a classification in tests/test_security.py ANONYMOUS: "
        + ", ".join(unclassified)
    )


def test_every_url_pattern_answers_an_anonymous_visitor_as_classified(world: World) -> None:
    values = sample_values(world)
    client = Client(raise_request_exception=False)
    wrong = []
    for route in every_route():
        kind = expectation(route)
        if kind is None:
            continue  # test_every_url_pattern_is_classified names it
        url = route.url(values)
        response = client.get(url)
        if not CHECKS[kind](response):
            wrong.append(f"{url} ({route.name}): expected {kind}, got {response.status_code}")
        if "Content-Security-Policy" not in response:
            wrong.append(f"{url} ({route.name}): no Content-Security-Policy")
    assert not wrong, "\n".join(wrong)


def test_the_stripe_webhook_refuses_an_unsigned_post() -> None:
    response = Client().post(reverse("payments:stripe-webhook"), b"{}", "application/json")
    assert response.status_code == 400


def test_a_customer_who_is_not_staff_cannot_open_any_admin_page(world: World) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(world.customer_a)
    values = sample_values(world)
    for route in every_route():
        if route.route.startswith("admin/") and route.name != "admin:logout":
            response = client.get(route.url(values))
            assert response.status_code in (302, 403, 404), (route.route, response.status_code)
            assert response.status_code != 302 or _is_login_redirect(response), route.route


# --- one tenant never reaches another's bookings ----------------------------------------


# Pages about something a booking has only sometimes (a schedule-change offer to answer):
# the owner's own booking without one is a 404 too, so they cannot serve as the control.
# Pages of something the booking may not have (an offer, a rebooking, a document).
NEEDS_MORE_THAN_A_BOOKING = {"bookings:offer", "bookings:rebook", "bookings:document"}


def booking_routes() -> list[Route]:
    return [route for route in every_route() if "reference" in route.parameters]


def _snapshot(booking: Booking) -> tuple[Any, ...]:
    booking.refresh_from_db()
    events = BookingEvent.objects.filter(booking=booking).count()
    payments = list(Payment.objects.filter(booking=booking).values_list("status", flat=True))
    return booking.status, booking.updated_at, events, payments


def test_booking_pages_exist_to_probe() -> None:
    names = {route.name for route in booking_routes()}
    assert {"bookings:detail", "payments:pay", "api-booking-detail"} <= names, names


@pytest.mark.parametrize("method", ["get", "post", "patch"])
def test_another_tenants_booking_is_404_on_every_booking_page_and_endpoint(
    world: World, method: str
) -> None:
    """Customer A's session and reseller A's key, pointed at B's booking by every route
    that takes a reference: 404, as for a missing booking, and B's booking unchanged.
    The same routes with A's own booking are found (a control: the 404 is tenancy, not a
    broken URL)."""
    customer = Client(raise_request_exception=False)
    customer.force_login(world.customer_a)
    reseller: APIClient = bearer_client(world.reseller_a_key)
    reseller.raise_request_exception = False
    probed = 0
    for route in booking_routes():
        api = route.route.startswith("api/")
        client: Any = reseller if api else customer
        own = world.api_booking_a if api else world.booking_a
        foreign = world.api_booking_b if api else world.booking_b
        values = sample_values(world)
        values["payment_id"] = str(world.payment_b.pk)
        before = _snapshot(foreign)
        url = route.url({**values, "reference": foreign.reference})
        response = getattr(client, method)(url, {}, **({"format": "json"} if api else {}))
        if response.status_code == 405:
            continue  # the route does not take this method at all
        assert response.status_code == 404, (method, url, response.status_code)
        assert _snapshot(foreign) == before, (method, url)
        probed += 1
        if method == "get" and "payment_id" not in route.parameters:
            mine = getattr(client, method)(route.url({**values, "reference": own.reference}))
            if route.name not in NEEDS_MORE_THAN_A_BOOKING:
                assert mine.status_code not in (401, 404), (url, mine.status_code)
            assert mine.status_code < 500, (url, mine.status_code)
    assert probed > 0


def test_a_customer_cannot_complete_another_customers_payment_through_own_booking(
    world: World,
) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(world.customer_a)
    url = reverse("payments:complete", args=[world.booking_a.reference, world.payment_b.pk])
    before = _snapshot(world.booking_b)
    assert client.post(url).status_code == 404
    assert _snapshot(world.booking_b) == before


def test_a_member_of_both_organisations_sees_both(world: World) -> None:
    """The control for the tenancy probe: membership, not the URL, decides."""
    MembershipFactory.create(
        user=world.customer_a,
        organisation=world.booking_b.organisation,
        role=MemberRole.VIEWER,
    )
    client = Client()
    client.force_login(world.customer_a)
    assert client.get(f"/bookings/{world.booking_b.reference}/").status_code == 200
