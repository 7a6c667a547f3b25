"""The limiter's one-round-trip Redis storage (api/rate_limit_storage.py) against a real Redis: the same
decisions, headers and 429 as limits' RedisStorage, one round trip per limited request, and never a
count remembered from another request."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from flask import Flask
from flask_limiter import Limiter

from api import rate_limit_storage
from shared.config import settings


@pytest.fixture
def redis_url():
    if not settings.redis_url:
        pytest.skip("production mode only (REDIS_URL)")
    return settings.redis_url


def limited_app(storage_uri: str, prefix: str) -> Flask:
    app = Flask(__name__)
    limiter = Limiter(key_func=lambda: "one-client", headers_enabled=True, storage_uri=storage_uri,
                      key_prefix=prefix)
    limiter.init_app(app)
    app.before_request_funcs.setdefault(None, []).insert(0, rate_limit_storage.forget)

    @app.get("/limited")
    @limiter.limit("3/minute")
    def limited():
        return "ok"

    app.extensions["test_limiter"] = limiter
    return app


class RoundTrips:
    """Commands sent from this thread (a pipeline or a script call is one)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        send = redis.connection.AbstractConnection.send_packed_command
        me = threading.get_ident()

        def counting(conn, command, check_health=True):
            if threading.get_ident() == me:
                self.count += 1
            return send(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


def answers(app: Flask, n: int) -> list[tuple[int, dict]]:
    client = app.test_client()
    out = []
    for _ in range(n):
        response = client.get("/limited")
        out.append((response.status_code, {k: v for k, v in response.headers.items() if k.startswith("X-RateLimit")}))
    return out


def test_same_answers_as_limits_redis_storage_in_one_round_trip(redis_url, monkeypatch):
    prefix = f"apath-test-{uuid.uuid4().hex[:8]}"
    ours = limited_app("threadline+" + redis_url, prefix)
    theirs = limited_app(redis_url, prefix + "-theirs")
    answers(ours, 1), answers(theirs, 1)  # the scripts are loaded: count from the second request
    trips = RoundTrips(monkeypatch)
    got = answers(ours, 4)
    ours_trips, trips.count = trips.count, 0
    expected = answers(theirs, 4)
    assert [status for status, _ in got] == [status for status, _ in expected] == [200, 200, 429, 429]
    for (_, mine), (_, reference) in zip(got, expected):
        assert mine.keys() == reference.keys() and mine["X-RateLimit-Limit"] == reference["X-RateLimit-Limit"] == "3"
        assert mine["X-RateLimit-Remaining"] == reference["X-RateLimit-Remaining"]
        assert abs(int(mine["X-RateLimit-Reset"]) - int(reference["X-RateLimit-Reset"])) <= 2
        assert int(mine["X-RateLimit-Reset"]) > time.time()
    assert ours_trips == 4, "one round trip per request (limits' storage: 3)"
    assert trips.count == 12


def test_a_request_never_reads_a_count_another_request_made(redis_url):
    prefix = f"apath-test-{uuid.uuid4().hex[:8]}"
    app = limited_app("threadline+" + redis_url, prefix)
    storage = app.extensions["test_limiter"].storage
    with app.test_request_context("/limited"):
        app.preprocess_request()
        storage.incr("k", 60)
        assert storage.get("k") == 1  # this request's own count, from the script's reply
        redis.Redis.from_url(redis_url).incrby(storage.prefixed_key("k"), 5)  # others count meanwhile
        assert storage.get("k") == 1
    with app.test_request_context("/limited"):
        app.preprocess_request()  # a new request: forgets what the last one counted
        assert storage.get("k") == 6
        assert 0 < storage.get_expiry("k") - time.time() <= 61
    storage.clear("k")
