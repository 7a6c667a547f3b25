"""The rate limiter's Redis storage, at one round trip per limited request instead of three.

flask-limiter's fixed window (limits' ``RedisStorage``) counts a request with one script (INCRBY, and
EXPIRE on the window's first hit), then reads the same key back for the response's X-RateLimit-*
headers (and a 429's Retry-After): GET for what is left and TTL for the reset — three round trips per
request, a sixth of the post's Redis work. Here the script also returns the key's TTL, and this
request's own ``get``/``get_expiry`` of a key it has just counted are answered from that reply: the
very count and window the decision was made on (the GET after it could even see later requests'
hits). The limits, keys, windows and headers are unchanged; so is the 429 and its format (the same
strategy decides it, from the same counter).

The remembered replies live in a context variable (per thread, and per greenlet under gevent) that
``forget`` empties at the start of every request (a ``before_request`` hook installed ahead of the
limiter's own), so a request never reads another's count: anything it did not count itself
(``test`` of a conditional limit, a key counted by another request) goes to Redis as before.

Selected by the storage URI scheme ``threadline+redis://`` (``threadline+rediss://``), which
api/__init__.py derives from REDIS_URL."""
from __future__ import annotations

import contextvars
import time

from limits.storage import RedisStorage

# INCRBY, EXPIRE on the window's first hit (as limits' incr_expire.lua), and the TTL, in one script
INCR_EXPIRE_TTL = """
local current = redis.call("incrby", KEYS[1], tonumber(ARGV[2]))
if tonumber(current) == tonumber(ARGV[2]) then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""

_counted: contextvars.ContextVar[dict[str, tuple[int, float]] | None] = contextvars.ContextVar(
    "threadline_rate_limit_counted", default=None)


def forget() -> None:
    """Start of a request: nothing counted yet."""
    _counted.set(None)


class OneTripRedisStorage(RedisStorage):
    STORAGE_SCHEME = ["threadline+redis", "threadline+rediss"]

    def __init__(self, uri: str, **options) -> None:
        super().__init__(uri.removeprefix("threadline+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_ttl = self.get_connection().register_script(INCR_EXPIRE_TTL)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        prefixed = self.prefixed_key(key)
        current, ttl = self.lua_incr_expire_ttl([prefixed], [expiry, amount])
        counted = _counted.get()
        if counted is None:
            counted = {}
            _counted.set(counted)
        counted[prefixed] = (int(current), max(int(ttl), 0) + time.time())
        return int(current)

    def get(self, key: str) -> int:
        if (known := (_counted.get() or {}).get(self.prefixed_key(key))) is not None:
            return known[0]
        return super().get(key)

    def get_expiry(self, key: str) -> float:
        if (known := (_counted.get() or {}).get(self.prefixed_key(key))) is not None:
            return known[1]
        return super().get_expiry(key)

    def clear(self, key: str) -> None:
        (_counted.get() or {}).pop(self.prefixed_key(key), None)
        super().clear(key)
