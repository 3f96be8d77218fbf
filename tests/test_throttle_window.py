"""The API's throttles count requests in a sliding window of two integer counters (one cache
increment per allowed request, whatever the rate), on a clock the tests set; with any cache
and with Redis's one-round-trip script (config/cache.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.throttling import SimpleRateThrottle

from tests.conftest import redis_url
from tests.factories import MissionFactory

pytestmark = pytest.mark.django_db

MISSIONS = "/api/v1/missions/"
IP = "198.51.100.9"


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture(autouse=True, params=["any cache", "redis"])
def throttle_cache(request: pytest.FixtureRequest, settings: Any) -> None:
    if request.param == "redis":
        url = redis_url()
        if url is None:
            pytest.skip("needs a reachable Redis (REDIS_URL)")
        settings.CACHES = {
            "default": {
                "BACKEND": "config.cache.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": f"test-throttle-{uuid.uuid4().hex}",
            }
        }


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(600_000.0)  # the start of a minute
    monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(clock))
    return clock


def rates(anon: str) -> Any:
    from django.conf import settings

    return override_settings(
        REST_FRAMEWORK={
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"anon": anon, "api_key": "1000/min"},
        }
    )


def statuses(api_client: Any, count: int) -> list[int]:
    return [api_client.get(MISSIONS, REMOTE_ADDR=IP).status_code for _ in range(count)]


def test_the_rate_is_kept_as_a_counter_and_refusals_say_when_to_retry(
    api_client: Any, clock: Clock
) -> None:
    MissionFactory.create()
    with rates("4/min"):
        assert statuses(api_client, 6) == [200, 200, 200, 200, 429, 429]
        refused = api_client.get(MISSIONS, REMOTE_ADDR=IP)

    assert cache.get(f"throttle_anon_{IP}:{int(clock.at // 60)}") == 4, "refusals are not counted"
    # Four in this minute: the next one fits once the next minute has let 1/4 of them fade.
    assert int(refused["Retry-After"]) == 60 + 15


def test_the_previous_window_counts_by_how_much_it_still_overlaps(
    api_client: Any, clock: Clock
) -> None:
    MissionFactory.create()
    with rates("4/min"):
        assert statuses(api_client, 4) == [200] * 4
        clock.at += 60 + 1  # a second into the next minute: the four still weigh ~3.9
        assert statuses(api_client, 1) == [429]
        clock.at += 29  # half-way: they weigh 2, so two more fit
        assert statuses(api_client, 3) == [200, 200, 429]
        clock.at += 60  # the whole next minute later, only those two weigh (by half)
        assert statuses(api_client, 4) == [200, 200, 200, 429]


def test_a_burst_across_a_window_boundary_stays_within_the_rate(
    api_client: Any, clock: Clock
) -> None:
    MissionFactory.create()
    with rates("4/min"):
        clock.at += 59  # the last second of a minute
        assert statuses(api_client, 4) == [200] * 4
        clock.at += 1  # the first instant of the next: a fixed window would allow four more
        assert statuses(api_client, 1) == [429]
