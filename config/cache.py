"""Django's Redis cache with two costs of its client taken out (``CACHES`` backend
``config.cache.RedisCache`` wherever ``REDIS_URL`` is set).

- Django builds a new ``redis.Redis`` object around its connection pool for every cache call,
  and redis-py 5+ fills a table of ~170 response callbacks in each one: about 0.2 ms of CPU per
  call, more than the round trip itself. A throttle check and a cached catalogue read made
  four such calls per request. Here each pool gets one client, made once per process and
  shared by every call (a ``redis.Redis`` takes a connection from its pool per command, so
  sharing it across threads is what redis-py intends).
- ``incr`` checked that the key exists and then incremented it: two round trips, and racy (a
  key expiring in between came back as a counter of 1 with no expiry, which never expires).
  Here it is one Lua script, atomic in Redis, with the same contract: ``ValueError`` when the
  key is missing.

Everything else (serialisation, key prefixes, several servers) is Django's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

# Returns false (None to redis-py) when the key does not exist, so nothing is created.
_INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""


class SharedClientRedisCacheClient(RedisCacheClient):
    # Django's private helpers, which the stubs leave out.
    _client: Callable[..., Any]
    _get_connection_pool_index: Callable[[bool], int]
    _get_connection_pool: Callable[[bool], Any]

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._clients: dict[int, Any] = {}
        self._incr_script: Any = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            # Two threads racing here each make one; either is fine to keep.
            client = self._client(connection_pool=self._get_connection_pool(write))
            self._clients[index] = client
        return client

    def incr(self, key: Any, delta: int) -> int:
        client = self.get_client(key, write=True)
        if self._incr_script is None:
            # EVALSHA, falling back to EVAL once if the server does not know the script yet.
            self._incr_script = client.register_script(_INCR_EXISTING)
        value = self._incr_script(keys=[key], args=[delta], client=client)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return int(value)


# A sliding-window throttle's check and count in one step (config.api): the current and
# previous windows' counters (plain integers, as Django stores ints), refused if the estimate
# plus this request exceeds the limit, otherwise the current window counts one more (created
# with its expiry). Returns {allowed, current before this request, previous}.
_WINDOW_HIT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if current + previous * tonumber(ARGV[2]) + 1 > tonumber(ARGV[1]) then
    return {0, current, previous}
end
if redis.call('INCR', KEYS[1]) == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return {1, current, previous}
"""


class RedisCache(DjangoRedisCache):
    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
        self._window_script: Any = None

    def window_hit(
        self, current_key: str, previous_key: str, *, limit: int, weight: float, timeout: int
    ) -> tuple[bool, int, int]:
        """One round trip, atomic, for ``config.api``'s sliding-window throttle: whether one
        more request fits (``current + previous × weight + 1 <= limit``), counting it in
        ``current_key`` if so, and the two counts as they were before it."""
        keys = [self.make_and_validate_key(current_key), self.make_and_validate_key(previous_key)]
        client = self._cache.get_client(keys[0], write=True)
        if self._window_script is None:
            self._window_script = client.register_script(_WINDOW_HIT)
        allowed, current, previous = self._window_script(
            keys=keys, args=[limit, repr(weight), timeout], client=client
        )
        return bool(allowed), int(current), int(previous)
