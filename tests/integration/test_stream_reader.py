"""The process's one reader of the run logs (shared/events.py ``StreamReader``): N clients following N
runs cost one XREAD per batch, not one per client; each client gets its run's events exactly once, in
order; attaching ends the reader's wait at once; a client that does not take its events stalls no
other and loses none; the reader comes back after Redis dropped its connection. The whole streams
through the real stack are in test_streaming.py and tests/faults (Redis restarted under streams)."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from shared import events
from shared.config import settings
from shared.events import EventType, RedisLog


@pytest.fixture
def log():
    event_log = RedisLog(settings.redis_url, f"threadline:test-reader-{uuid.uuid4().hex[:8]}:")
    yield event_log
    for key in event_log._writer.scan_iter(match=f"{event_log.prefix}*"):
        event_log._writer.delete(key)


def write_to_all(log_: RedisLog, runs: list[uuid.UUID], type_: str, data: dict) -> None:
    """One event on each run's log, in one round trip (as many workers writing at the same moment)."""
    pipe = log_.pipeline()
    for run in runs:
        log_._add_xadd(pipe, log_.key(run), type_, data, 1)
    pipe.execute()


def take_all(sub, count: int, timeout: float = 10.0) -> list[events.Event]:
    got: list[events.Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(sub.take(0.5))
    return got


def test_n_clients_on_n_runs_cost_one_xread_per_batch(monkeypatch):
    """Through api.streaming's own loop (what each SSE response runs), counted at redis-py: a blocked
    XREAD per client would be N per batch."""
    from api import streaming
    from shared.services.streams import StreamTarget

    clients, batches = 20, 5
    sent = {"XREAD": 0}
    execute = redis.Redis.execute_command

    def counting(self, *args, **options):
        if args and str(args[0]).upper() == "XREAD":
            sent["XREAD"] += 1
        return execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    log_ = events.event_log()
    runs = [uuid.uuid4() for _ in range(clients)]
    outputs: dict[int, list[str]] = {}

    def follow(i: int) -> None:
        target = StreamTarget(message_id=uuid.uuid4(), run_id=runs[i], attempts=0)
        outputs[i] = list(streaming._follow(target, lambda message_id: {"id": str(message_id)}, 0, just_posted=True))

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every client attached and waiting
    before = sent["XREAD"]
    for n in range(batches):
        write_to_all(log_, runs, EventType.MESSAGE_DELTA, {"text": f"w{n} "})
        time.sleep(0.2)
    write_to_all(log_, runs, EventType.MESSAGE_COMPLETED, {})
    for thread in threads:
        thread.join(timeout=20)
    xreads = sent["XREAD"] - before
    try:
        for i in range(clients):
            ids = [int(line[4:]) for chunk in outputs[i] for line in chunk.splitlines() if line.startswith("id: ")]
            assert ids == list(range(1, batches + 2)), f"client {i}: every event once, in order"
            assert "event: message.completed" in outputs[i][-1]
        # one per batch (plus a wake-up or a block that timed out); a read per client would be 120
        assert xreads <= 2 * (batches + 1) + 2, f"{xreads} XREADs for {clients} clients × {batches + 1} batches"
    finally:
        for run in runs:
            log_._writer.delete(log_.key(run))


def test_attaching_ends_the_readers_wait_and_clients_of_one_run_each_get_theirs(log, monkeypatch):
    monkeypatch.setattr(events.StreamReader, "BLOCK", 30.0)  # without the wake-up, a new log would wait 30 s
    quiet, run = uuid.uuid4(), uuid.uuid4()
    idle = log.follow(quiet, 0)
    time.sleep(0.3)  # the reader is blocked on the quiet log alone
    for n in range(3):
        log.append(run, EventType.MESSAGE_DELTA, {"text": str(n)}, 1)
    started = time.monotonic()
    late = log.follow(run, 0)
    assert [e.id for e in late.take(5)] == [1, 2, 3]
    assert time.monotonic() - started < 2
    ahead = log.follow(run, 2)  # a second client on the same log, further on
    log.append(run, EventType.MESSAGE_DELTA, {"text": "3"}, 1)
    assert [e.id for e in take_all(ahead, 2)] == [3, 4]
    assert [e.id for e in take_all(late, 1)] == [4]
    # A client further back attaching while a read from 4 is in flight: it needs 1-4 before 5.
    time.sleep(0.2)
    reader = log._stream_reader
    with reader.lock:  # the read returns 5 and waits here to hand it out; the client attaches meanwhile
        log.append(run, EventType.MESSAGE_DELTA, {"text": "4"}, 1)
        time.sleep(0.3)
        behind = events.Subscription(reader, log.key(run), 0)
        reader._subs[log.key(run)].append(behind)
    assert [e.id for e in take_all(behind, 5)] == [1, 2, 3, 4, 5]
    for sub in (idle, late, ahead, behind):
        sub.close()


def test_a_client_that_does_not_take_stalls_no_one_and_loses_nothing(log, monkeypatch):
    monkeypatch.setattr(events.StreamReader, "PENDING_LIMIT", 5)
    slow_run, fast_run = uuid.uuid4(), uuid.uuid4()
    slow, fast = log.follow(slow_run, 0), log.follow(fast_run, 0)
    for n in range(40):
        write_to_all(log, [slow_run, fast_run], EventType.MESSAGE_DELTA, {"text": str(n)})
        assert [e.id for e in take_all(fast, 1, timeout=5)] == [n + 1], "the fast client is never held up"
    assert len(slow.pending) <= 5 + events.READ_BATCH  # bounded while it does not take
    assert [e.id for e in take_all(slow, 40)] == list(range(1, 41))
    slow.close(), fast.close()


def test_the_reader_comes_back_after_redis_dropped_its_connection(log):
    run = uuid.uuid4()
    sub = log.follow(run, 0)
    log.append(run, EventType.MESSAGE_DELTA, {"text": "a"}, 1)
    assert [e.id for e in take_all(sub, 1)] == [1]
    reader = log._stream_reader
    admin = redis.Redis.from_url(settings.redis_url)
    [conn] = [c for c in admin.client_list() if c.get("name") == reader.name]
    admin.client_kill_filter(_id=conn["id"])
    log.append(run, EventType.MESSAGE_DELTA, {"text": "b"}, 1)
    log.append(run, EventType.MESSAGE_DELTA, {"text": "c"}, 1)
    got: list[events.Event] = []
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        try:
            got.extend(sub.take(0.5))
        except ConnectionError:
            pass  # the reader lost Redis (when redis-py did not retry on its own): the client looks at its row
    assert [e.id for e in got] == [2, 3], "resumed from the client's position: nothing lost or repeated"
    assert [c for c in admin.client_list() if c.get("name") == reader.name and c["id"] != conn["id"]]
    sub.close()
