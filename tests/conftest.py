"""Shared fixtures. Tests that need PostgreSQL, Redis or chromium skip on a laptop without
them, but fail with CI=true, so CI can never pass by skipping what it should prove."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from django.db import connection
from rest_framework.test import APIClient

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# .ci/run names its tier: "sqlite" is the embedded tier, which runs without PostgreSQL and
# Redis on purpose (their tests run in the "postgresql" tier, where a missing part fails).
CI_TIER_DB = os.environ.get("MOONSLOT_EXPECT_DB", "")


def missing(reason: str) -> None:
    """Skip locally; fail in CI, where every part must be present."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def missing_service(reason: str) -> None:
    """PostgreSQL and Redis: the embedded tier skips them by design; anywhere else their
    absence is ``missing``."""
    if CI_TIER_DB == "sqlite":
        pytest.skip(f"{reason}; it runs in the PostgreSQL + Redis tier")
    missing(reason)


@pytest.fixture
def require_postgres() -> None:
    if connection.vendor != "postgresql":
        missing_service("this test needs PostgreSQL (set DATABASE_URL=postgres://…)")


def redis_url() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 2):
            return url
    except OSError:
        return None


@pytest.fixture
def require_redis() -> str:
    url = redis_url()
    if url is None:
        missing_service("this test needs a reachable Redis (set REDIS_URL=redis://…)")
    assert url is not None
    return url


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    from django.core.cache import cache

    from marketplace.cache import forget_local_copies

    cache.clear()
    forget_local_copies()
    yield
    cache.clear()
    forget_local_copies()


@pytest.fixture(autouse=True)
def _reset_language() -> Iterator[None]:
    # LocaleMiddleware activates the request's language on the thread and leaves it there;
    # a Japanese page in one test must not make the next test's messages Japanese.
    from django.utils import translation

    yield
    translation.activate("en")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()
