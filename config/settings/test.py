"""Settings for the test suite. Honours DATABASE_URL/REDIS_URL so CI can run it on both tiers."""

from .base import *

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.locmem.EmailBackend")
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", default="/tmp/moonslot-mail")  # noqa: S108
# Tests run Celery tasks in-process so mail.outbox sees them; the integration tests that
# start a real worker switch this off for themselves (and for the worker they start).
CELERY_TASK_ALWAYS_EAGER = env.bool("MOONSLOT_CELERY_EAGER", default=True)
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Tests move clocks and write inside transactions that never commit (so the catalogue's
# version never moves on): the catalogue cache is off unless a test turns it on
# (tests/marketplace/test_catalogue_cache.py).
MOONSLOT_CATALOGUE_CACHE_SECONDS = 0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "100000/min", "api_key": "100000/min"},
}
LOGGING = {**LOGGING, "root": {"handlers": ["console"], "level": "WARNING"}}
# --- Stripe ---------------------------------------------------------------------------
# Never the real Stripe from a test: the ``stripe_sandbox`` fixture points these at a
# localstripe it starts; without it, a call fails at once on a closed loopback port.
STRIPE_SECRET_KEY = "sk_test_moonslot"  # noqa: S105 (test-only, no real account)
STRIPE_PUBLISHABLE_KEY = "pk_test_moonslot"
STRIPE_WEBHOOK_SECRET = "whsec_test_moonslot"  # noqa: S105
STRIPE_API_BASE = "http://127.0.0.1:9"
# The policy names the Stripe.js origin, so it is built again for this base.
CONTENT_SECURITY_POLICY = content_security_policy(stripe_api_base=STRIPE_API_BASE)
