"""Settings of the workers the fault tests start: those of every test worker, plus the
test-only work in ``tests.reliability.fault_tasks``."""

from tests.worker_settings import *  # noqa: F403

CELERY_IMPORTS = ["tests.reliability.fault_tasks"]
