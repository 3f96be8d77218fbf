"""Settings of the workers the integration tests start (``tests.worker.running_worker``):
the test settings, plus what a test hands its worker through the environment. The names
are the tests' own, so a developer's STRIPE_* variables never reach a test worker."""

from config.settings.base import content_security_policy, env
from config.settings.test import *  # noqa: F403

# The localstripe sandbox the test started (tests.stripe_fake), when the test uses one.
STRIPE_API_BASE = env("MOONSLOT_TEST_STRIPE_API_BASE", default=STRIPE_API_BASE)  # noqa: F405
STRIPE_SECRET_KEY = env("MOONSLOT_TEST_STRIPE_SECRET_KEY", default=STRIPE_SECRET_KEY)  # noqa: F405
STRIPE_WEBHOOK_SECRET = env(
    "MOONSLOT_TEST_STRIPE_WEBHOOK_SECRET",
    default=STRIPE_WEBHOOK_SECRET,  # noqa: F405
)
CONTENT_SECURITY_POLICY = content_security_policy(stripe_api_base=STRIPE_API_BASE)

# The fault tests' switch (bookings.outbox): the protection off, to show what it prevents.
MOONSLOT_DISABLE_OUTBOX_LEASE_RENEWAL = env.bool(
    "MOONSLOT_TEST_DISABLE_OUTBOX_LEASE_RENEWAL", default=False
)
