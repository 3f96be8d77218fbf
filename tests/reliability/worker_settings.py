"""Settings of the workers the fault tests start: the test settings, plus the test-only
work in ``tests.reliability.fault_tasks``."""

from config.settings.test import *  # noqa: F403

CELERY_IMPORTS = ["tests.reliability.fault_tasks"]
