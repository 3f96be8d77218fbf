"""Settings of the servers (and the harness process) that ``python -m bench`` starts.

Everything that matters for speed comes from ``config.settings.local`` and the environment
the harness sets (``DJANGO_DEBUG=false``, ``DATABASE_URL``, ``REDIS_URL``, throttle rates), so
the server runs the product's configuration. This module changes only what keeps a benchmark
apart from everything else on the machine:

- the URLconf adds the baseline endpoint (``config.bench_urls``) beside the product's URLs;
- cache keys and the Celery queue carry the run's own name, because the Redis database may be
  shared with a developer's server or a test worker: a bench throttle history must not throttle
  them, and a bench task must not be consumed by a worker reading another database;
- tasks are queued, never run in the request: production hands them to a worker through
  Redis. Without Redis they go to an in-memory broker instead of running eagerly (the local
  default), which would put e-mail rendering inside every measured hold.
"""

import os

from config.settings.local import *  # noqa: F403
from config.settings.local import CACHES, REDIS_URL

ROOT_URLCONF = "config.bench_urls"

BENCH_RUN = os.environ.get("MOONSLOT_BENCH_RUN", "adhoc")
CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": f"moonslot-bench-{BENCH_RUN}"}}
CELERY_TASK_DEFAULT_QUEUE = f"moonslot-bench-{BENCH_RUN}"
if not REDIS_URL:
    CELERY_TASK_ALWAYS_EAGER = False
    CELERY_BROKER_URL = "memory://localhost/"
    CELERY_RESULT_BACKEND = None
