"""Settings shared by every environment.

Everything that varies between machines comes from the environment (django-environ);
``local`` and ``test`` run with no environment at all, ``production`` refuses to start
without its secrets.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A .env file is read only when present; nothing is required of it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-local-only-key-do-not-use-in-production")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
SITE_URL = env("MOONSLOT_SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.sites",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "accounts",
    "marketplace",
    "bookings",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- Database -------------------------------------------------------------------------
def database_settings(**url_options: Any) -> dict[str, Any]:
    """``DATABASE_URL`` with what every environment adds to it (production passes no default,
    so a missing URL is an error there)."""
    database: dict[str, Any] = env.db("DATABASE_URL", **url_options)
    database["ATOMIC_REQUESTS"] = False  # services own their transactions
    database["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    database["CONN_HEALTH_CHECKS"] = True
    options = database.setdefault("OPTIONS", {})
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # SQLite ignores SELECT … FOR UPDATE; taking the write lock when a transaction starts
        # (and waiting for it) serialises concurrent bookings instead of failing them with
        # "database is locked" half-way through.
        options.update({"transaction_mode": "IMMEDIATE", "timeout": 20})
    elif database["ENGINE"] == "django.db.backends.postgresql" and env.bool(
        "DATABASE_PREPARED_STATEMENTS", default=True
    ):
        # Parameters bound by the server, and a statement run five times on a connection is
        # prepared: PostgreSQL stops re-planning the same hold, idempotency and lookup
        # queries on every request (the sale-opening benchmark: README, Benchmarks). Needs a
        # session per connection: switch it off behind a transaction-pooling PgBouncer.
        options.update({"server_side_binding": True, "prepare_threshold": 5})
    return database


DATABASES = {"default": database_settings(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.RedisCache",  # Django's, with one client per pool
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "moonslot",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -----------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
SITE_ID = 1

ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Moonslot] "
# Clicking the link in the same browser signs the new customer in and takes them back to the
# page they were on (a booking form, say); the link still needs a POST, so a mail scanner
# that follows it verifies nothing.
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True

# --- Internationalisation -------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ja", _("Japanese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MEDIA_ROOT = env.path("MOONSLOT_MEDIA_ROOT", default=BASE_DIR / "media")
MEDIA_URL = "media/"

# --- E-mail ---------------------------------------------------------------------------
EMAIL_BACKEND = env(
    "DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Moonslot <bookings@moonslot.example>")

# --- Celery ---------------------------------------------------------------------------
# Without REDIS_URL tasks run in-process (eagerly), so the site works with no services.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Redis redelivers an unacknowledged task after this long; it must exceed the longest task.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "config.api.AnonymousIpThrottle",
        "config.api.ApiKeyThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("MOONSLOT_THROTTLE_ANON", default="120/min"),
        "api_key": env("MOONSLOT_THROTTLE_API_KEY", default="1200/min"),
    },
    "NUM_PROXIES": env.int("MOONSLOT_NUM_PROXIES", default=0),
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Moonslot reseller API",
    "DESCRIPTION": "Book payload capacity on lunar lander missions (v1).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_ADD_EXPLICIT_BLANK_NULL_CHOICE": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # config/schema.py: the Error component, shared 401/429 responses, the bearer scheme.
    "PREPROCESSING_HOOKS": ["config.schema.preprocess_api_endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.postprocess_api_conventions",
    ],
    # One stable component name per choice set, whichever serializer uses it first.
    "ENUM_NAME_OVERRIDES": {
        "MissionStatusEnum": "marketplace.models.MissionStatus",
        "DestinationEnum": "marketplace.models.Destination",
        "PricingEnum": "marketplace.models.Pricing",
        "ChannelEnum": "marketplace.models.Channel",
        "CurrencyEnum": "marketplace.money.Currency",
    },
    # /api/v1/docs/ loads Swagger UI from a CDN unless drf-spectacular-sidecar is installed
    # and listed in INSTALLED_APPS; then the site serves the assets itself (works offline).
    **(
        {
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
        }
        if "drf_spectacular_sidecar" in INSTALLED_APPS
        else {}
    ),
}

# --- Moonslot -------------------------------------------------------------------------
# How long an idempotency record answers replays.
MOONSLOT_IDEMPOTENCY_TTL = timedelta(hours=24)
# The outbox sweep re-dispatches rows still pending after this long.
MOONSLOT_OUTBOX_RETRY_AFTER = timedelta(
    seconds=env.int("MOONSLOT_OUTBOX_RETRY_SECONDS", default=60)
)
# A worker's claim on an outbox row lasts this long unless renewed; a running handler renews
# it every third of this, so a worker that died mid-handler has its row handed out again by
# the sweep within about this long.
MOONSLOT_OUTBOX_LEASE = timedelta(seconds=env.int("MOONSLOT_OUTBOX_LEASE_SECONDS", default=30))
# Test-only: stop renewing outbox leases, to show the double run it prevents. Never in production.
MOONSLOT_DISABLE_OUTBOX_LEASE_RENEWAL = False
# Reseller webhook URLs must be public https; local development may allow http and
# private addresses.
MOONSLOT_WEBHOOKS_ALLOW_LOCAL = False
# Test-only: turn the capacity row lock off to show the race it prevents. Never in production.
MOONSLOT_DISABLE_CAPACITY_LOCK = False
# The catalogue (API mission endpoints, mission pages) is cached per catalogue version, which
# every change bumps at commit; entries live at most this long, because a lapsed hold frees
# capacity without a write (marketplace/cache.py). 0 turns the cache off.
MOONSLOT_CATALOGUE_CACHE_SECONDS = env.int("MOONSLOT_CATALOGUE_CACHE_SECONDS", default=5)
# The contract terms an enterprise hold's customer accepts (bookings.enterprise), unless sales
# pick another version; its text is templates/bookings/contract_<version>.html if present.
MOONSLOT_CONTRACT_VERSION = env("MOONSLOT_CONTRACT_VERSION", default="2026-1")

# --- Stripe ---------------------------------------------------------------------------
# Card payments. Empty keys disable card payments (the pay page says so); local.py and
# test.py point at the localstripe sandbox, production.py requires real keys.
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
# Another API host (the sandbox, ``manage.py run_stripe_sandbox``); empty means Stripe itself.
STRIPE_API_BASE = env("STRIPE_API_BASE", default="")
# Starting a card payment extends the hold by this much, at most STRIPE_PAYMENT_GRACE_MAX past
# the hold's own expiry, so a customer in the middle of 3-D Secure does not lose the capacity.
STRIPE_PAYMENT_GRACE = timedelta(minutes=env.int("STRIPE_PAYMENT_GRACE_MINUTES", default=10))
STRIPE_PAYMENT_GRACE_MAX = timedelta(
    minutes=env.int("STRIPE_PAYMENT_GRACE_MAX_MINUTES", default=30)
)
# Card attempts per booking before the pay page asks the customer to contact sales.
STRIPE_MAX_ATTEMPTS = env.int("STRIPE_MAX_ATTEMPTS", default=8)
# Attempts still open this long after their last change are asked about (webhook lost).
STRIPE_RECONCILE_AFTER = timedelta(minutes=env.int("STRIPE_RECONCILE_MINUTES", default=10))
# Where customers send bank transfers (amounts above the card limit, or by choice), shown on
# the pay and booking pages with the booking's payment reference. Several lines; the default
# is an obvious demo account that production must replace.
MOONSLOT_BANK_DETAILS = env(
    "MOONSLOT_BANK_DETAILS",
    default=(
        "Demo Bank, Tokyo Branch (SWIFT DEMOJPJT)\n"
        "Ordinary account 0000000\n"
        "Account holder: Moonslot K.K. (demo)"
    ),
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}

# --- Security and operations ------------------------------------------------------------
# Headers on every response (SecurityMiddleware, XFrameOptionsMiddleware, django-csp);
# production.py adds HSTS, secure cookies and the HTTPS redirect.
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

from csp.constants import NONE, SELF, UNSAFE_INLINE  # noqa: E402

from config.logging import logging_config  # noqa: E402 (standard library only)

SECURE_CONTENT_TYPE_NOSNIFF = True
# Same-origin requests keep the full URL; other origins (Stripe) see the origin only, so a
# booking reference in a path never leaves the site.
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
X_FRAME_OPTIONS = "DENY"  # the admin too: no page of ours is ever framed
SESSION_COOKIE_HTTPONLY = True

STRIPE_JS_ORIGINS = ["https://js.stripe.com", "https://*.js.stripe.com"]
STRIPE_FRAME_ORIGINS = [*STRIPE_JS_ORIGINS, "https://hooks.stripe.com"]
STRIPE_API_ORIGINS = ["https://api.stripe.com"]


def content_security_policy(*, stripe_api_base: str | None = None) -> dict[str, Any]:
    """The ``CONTENT_SECURITY_POLICY`` setting (django-csp 4): same-origin, plus what pages
    need and nothing else:

    - the pay page's Stripe.js: its script, card and 3-D Secure frames and API; with
      ``stripe_api_base`` (a local sandbox) that origin's Stripe.js and API too;
    - inline styles: the capacity bars size themselves with ``style`` attributes and Swagger
      UI ships a ``<style>`` block; ``data:`` images are Swagger UI's icons;
    - no inline scripts: the API docs use ``SpectacularSwaggerSplitView``, whose start-up
      script comes from 'self'; inline event handlers (``onclick=``) are forbidden too.
    """
    sandbox = []
    if stripe_api_base:
        parsed = urlparse(stripe_api_base)
        sandbox = [f"{parsed.scheme}://{parsed.netloc}"]
    return {
        "DIRECTIVES": {
            "default-src": [SELF],
            "script-src": [SELF, *STRIPE_JS_ORIGINS, *sandbox],
            "script-src-attr": [NONE],
            "style-src": [SELF, UNSAFE_INLINE],
            "img-src": [SELF, "data:"],
            "font-src": [SELF],
            "connect-src": [SELF, *STRIPE_API_ORIGINS, *sandbox],
            "frame-src": STRIPE_FRAME_ORIGINS,
            "frame-ancestors": [NONE],
            "form-action": [SELF],
            "base-uri": [SELF],
            "object-src": [NONE],
        }
    }


# Settings that point STRIPE_API_BASE at a sandbox after this line (local.py, test.py)
# recompute the policy: content_security_policy(stripe_api_base=STRIPE_API_BASE).
CONTENT_SECURITY_POLICY = content_security_policy(
    stripe_api_base=globals().get("STRIPE_API_BASE") or None
)
# Outermost but for SecurityMiddleware: a middleware that answers early (a redirect to a
# second factor, a static file) skips the ones after it, and every answer needs the header.
MIDDLEWARE = [MIDDLEWARE[0], "csp.middleware.CSPMiddleware", *MIDDLEWARE[1:]]

# Login throttling (allauth, counted in the cache): five failed logins for one e-mail
# address, or from one IP address, within five minutes, and that address (or IP) cannot
# sign in, right password or not, until the window has passed.
ACCOUNT_RATE_LIMITS = {"login_failed": "5/5m/ip,5/5m/key"}

# Logs: MOONSLOT_LOG_FORMAT=json writes one JSON object per line (config/logging.py); every
# handler adds the booking reference and redacts credentials.
LOGGING = logging_config(
    fmt=env("MOONSLOT_LOG_FORMAT", default="plain"),
    level=env("DJANGO_LOG_LEVEL", default="INFO"),
)

# --- Admin back office ------------------------------------------------------------------
# Staff open the admin only after a second factor (accounts/mfa.py); it runs after the
# authentication and allauth middleware, which it reads.
MIDDLEWARE = [*MIDDLEWARE, "accounts.mfa.StaffMfaMiddleware"]
# The issuer shown in authenticator apps (otherwise allauth asks the request for a site name).
MFA_TOTP_ISSUER = "Moonslot"
# Cancelling with a refund above this (minor units, per currency) needs a sales manager
# (``bookings.refund_above_threshold``). A currency missing here always needs one.
MOONSLOT_REFUND_APPROVAL_THRESHOLD = {"JPY": 5_000_000, "USD": 50_000_00}

# --- Billing documents (bookings.billing) ------------------------------------------------
# The seller named on invoices, receipts and credit notes. The registration number is the
# qualified-invoice issuer number (T and 13 digits); the default is an obvious demo value
# that production must replace (checked by ``manage.py check``, bookings.billing).
MOONSLOT_SELLER_NAME = env("MOONSLOT_SELLER_NAME", default="Moonslot K.K. (demo)")
MOONSLOT_SELLER_ADDRESS = env(
    "MOONSLOT_SELLER_ADDRESS", default="1-1 Demo-cho, Chuo-ku, Tokyo 000-0000, Japan"
)
MOONSLOT_SELLER_REGISTRATION_NUMBER = env(
    "MOONSLOT_SELLER_REGISTRATION_NUMBER", default="T0000000000000"
)
# Sales hear here about bookings whose instalment is still unpaid after the grace period.
MOONSLOT_SALES_EMAIL = env("MOONSLOT_SALES_EMAIL", default="sales@moonslot.example")
