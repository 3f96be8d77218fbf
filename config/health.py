"""``GET /healthz``: is this process able to serve? For load balancers and uptime checks.

Checks what a request needs and nothing more, each with a short timeout so the check itself
cannot hang: the database (one trivial query) and the Celery broker (a Redis PING), unless
tasks run in-process, when there is no broker to reach. No authentication, no cache, no
details of a failure beyond which part failed (the endpoint is public).
"""

from __future__ import annotations

import functools
import logging
from urllib.parse import urlparse

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 1.0
OK = "ok"
IN_PROCESS = "in-process"
FAILED = "unavailable"


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        logger.warning("healthz: the database check failed", exc_info=True)
        return FAILED
    return OK


@functools.lru_cache(maxsize=4)
def _redis_client(url: str) -> redis.Redis:
    # One connection pool per broker URL, reused by every check.
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
        socket_timeout=BROKER_TIMEOUT_SECONDS,
        retry_on_timeout=False,
    )


def check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return IN_PROCESS
    url: str = settings.CELERY_BROKER_URL
    if urlparse(url).scheme not in ("redis", "rediss"):
        logger.warning("healthz: cannot check a broker of scheme %r", urlparse(url).scheme)
        return FAILED
    try:
        _redis_client(url).ping()
    except redis.RedisError:
        logger.warning("healthz: the broker did not answer a PING", exc_info=True)
        return FAILED
    return OK


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok", "database": "ok", "broker": "ok" | "in-process"}``, or 503
    with ``"status": "unavailable"`` and the failed part marked ``"unavailable"``."""
    parts = {"database": check_database(), "broker": check_broker()}
    healthy = all(state in (OK, IN_PROCESS) for state in parts.values())
    return JsonResponse(
        {"status": OK if healthy else FAILED, **parts}, status=200 if healthy else 503
    )
