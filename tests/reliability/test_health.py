"""``GET /healthz``: 200 when the database and the broker answer, 503 naming the part that
does not; public, uncached, one query."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
from django.db import OperationalError
from django.test import Client, override_settings

from config import health

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_healthy_with_tasks_in_process(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "in-process"}
    assert "no-cache" in response["Cache-Control"]


def test_an_unreachable_broker_is_a_503_naming_the_broker() -> None:
    broker = f"redis://127.0.0.1:{closed_port()}/0"
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False, CELERY_BROKER_URL=broker):
        response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "broker": "unavailable"}


@pytest.mark.redis
def test_a_reachable_broker_answers_ok(require_redis: str) -> None:
    broker = urlunparse(urlparse(require_redis)._replace(path="/13"))
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False, CELERY_BROKER_URL=broker):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


class _BrokenConnection:
    """A database connection that refuses every query (the server went away)."""

    def cursor(self) -> Any:
        raise OperationalError("server closed the connection unexpectedly")


def test_an_unreachable_database_is_a_503_naming_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "connection", _BrokenConnection())
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "unavailable",
        "broker": "in-process",
    }


def test_needs_no_sign_in_and_only_reads() -> None:
    client = Client()
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405
