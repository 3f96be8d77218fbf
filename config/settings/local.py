"""Local development: runs with no environment at all (SQLite, eager tasks, console mail)."""

from . import base
from .base import *

DEBUG = env.bool("DJANGO_DEBUG", default=True)
MOONSLOT_WEBHOOKS_ALLOW_LOCAL = True

# --- Stripe ---------------------------------------------------------------------------
# With no Stripe keys in the environment, pay against the sandbox
# (``python manage.py run_stripe_sandbox``) with its test keys.
if not base.STRIPE_SECRET_KEY:
    STRIPE_SECRET_KEY = "sk_test_local"  # noqa: S105 (the sandbox accepts any sk_ key)
    STRIPE_PUBLISHABLE_KEY = "pk_test_local"
    STRIPE_WEBHOOK_SECRET = base.STRIPE_WEBHOOK_SECRET or "whsec_local"
    STRIPE_API_BASE = base.STRIPE_API_BASE or "http://127.0.0.1:12111"
    # The policy names the Stripe.js origin, so it is built again for the sandbox.
    CONTENT_SECURITY_POLICY = content_security_policy(stripe_api_base=STRIPE_API_BASE)
