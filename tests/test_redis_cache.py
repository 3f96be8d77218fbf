"""The Redis cache backend (config/cache.py) keeps Django's contract with one client per pool
and a one-round-trip ``incr``; production and REDIS_URL setups use it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from config.cache import RedisCache
from tests.test_settings import PRODUCTION_ENV, manage


@pytest.fixture
def redis_cache(require_redis: str) -> Iterator[RedisCache]:
    backend = RedisCache(require_redis, {"KEY_PREFIX": f"test-cache-{uuid.uuid4().hex}"})
    yield backend
    client = backend._cache.get_client(write=True)
    keys = client.keys(f"{backend.key_prefix}:*")
    if keys:
        client.delete(*keys)


def test_every_call_shares_one_client_per_pool(redis_cache: RedisCache) -> None:
    client = redis_cache._cache.get_client(write=True)

    assert redis_cache._cache.get_client("k") is client
    assert redis_cache._cache.get_client(write=True) is client


def test_values_round_trip_as_with_djangos_backend(redis_cache: RedisCache) -> None:
    redis_cache.set("object", {"a": [1, 2]}, 30)
    redis_cache.set("number", 7, 30)

    assert redis_cache.get("object") == {"a": [1, 2]}
    assert redis_cache.get_many(["object", "number", "absent"]) == {
        "object": {"a": [1, 2]},
        "number": 7,
    }
    assert redis_cache.add("number", 1, 30) is False
    assert redis_cache.get("absent", "default") == "default"


def test_incr_adds_to_an_existing_counter_and_keeps_its_expiry(redis_cache: RedisCache) -> None:
    redis_cache.set("counter", 1, 30)

    assert redis_cache.incr("counter") == 2
    assert redis_cache.incr("counter", 5) == 7
    assert redis_cache.get("counter") == 7
    client = redis_cache._cache.get_client(write=True)
    assert 0 < client.ttl(redis_cache.make_key("counter")) <= 30


def test_incr_of_a_missing_key_raises_and_creates_nothing(redis_cache: RedisCache) -> None:
    with pytest.raises(ValueError, match="not found"):
        redis_cache.incr("missing")

    assert redis_cache.get("missing") is None


def test_production_settings_use_this_backend() -> None:
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])",
        env=PRODUCTION_ENV,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "config.cache.RedisCache"
