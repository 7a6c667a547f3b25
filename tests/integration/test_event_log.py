"""The Redis Streams event log on its own (the table is exercised by the embedded run of
test_streaming.py): ids 1, 2, 3 … per run whoever appends, reads after an id, a blocking read that
wakes on the next append, the length bound, and expiry after the end."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from shared.config import settings
from shared.events import EventType, RedisLog


@pytest.fixture
def log():
    event_log = RedisLog(settings.redis_url, f"threadline:test-events-{uuid.uuid4().hex[:8]}:")
    yield event_log
    for key in event_log._writer.scan_iter(match=f"{event_log.prefix}*"):
        event_log._writer.delete(key)


def test_ids_count_up_per_run_across_writers_and_reads_start_after_an_id(log):
    run, other = uuid.uuid4(), uuid.uuid4()
    writers = [RedisLog(settings.redis_url, log.prefix) for _ in range(4)]  # separate connections, like processes
    threads = [threading.Thread(target=lambda w=w: [w.append(run, EventType.MESSAGE_DELTA, {"text": "x"}, 1)
                                                   for _ in range(25)]) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.append(other, EventType.RUN_QUEUED, {}, 0) == 1  # another run counts on its own
    events = log.read(run, 0)
    assert [e.id for e in events] == list(range(1, 101))
    assert [e.id for e in log.read(run, 97)] == [98, 99, 100]
    assert log.read(run, 100) == []
    assert events[0].type == "message.delta" and events[0].attempt == 1 and events[0].data == {"text": "x"}


def test_a_blocking_read_wakes_on_the_next_append(log):
    run = uuid.uuid4()
    log.append(run, EventType.RUN_QUEUED, {"n": 1}, 0)
    threading.Timer(0.3, lambda: log.append(run, EventType.RUN_STARTED, {"attempt": 1}, 1)).start()
    started = time.monotonic()
    events = log.read(run, 1, timeout=5)
    assert [(e.id, e.type) for e in events] == [(2, "run.started")]
    assert 0.2 < time.monotonic() - started < 3


def test_a_log_is_bounded_and_expires_after_the_run_ends(log):
    run = uuid.uuid4()
    key = log.key(run)
    log.append(run, EventType.RUN_STARTED, {}, 1)
    assert log._writer.ttl(key) > settings.stream_retention  # while running: the longer expiry
    log.append(run, EventType.MESSAGE_COMPLETED, {}, 1)
    assert 0 < log._writer.ttl(key) <= settings.stream_retention
    many = uuid.uuid4()
    for _ in range(settings.stream_max_events + 500):
        last = log.append(many, EventType.MESSAGE_DELTA, {}, 1)
    assert last == settings.stream_max_events + 500  # ids keep counting…
    assert log._writer.xlen(log.key(many)) < settings.stream_max_events + 500  # …while the oldest go
