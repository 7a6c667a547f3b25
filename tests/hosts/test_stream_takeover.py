"""A client streams an answer through one API host while the run moves to the other worker host.

The model answers slowly (a few tokens a second, set on both worker hosts' scripted models), so the
answer is still being streamed when the worker host running it is partitioned (its link down).
Attempt 1 can then write nothing more: its next append to the event log times out and it stops
writing (worker/agent/streaming.py), its lease renewals fail. After the lease expires the sweeper
queues the run again and the other worker host runs attempt 2, whose ``run.started`` is the client's
cue to drop the partial text. The link comes back while attempt 2 is streaming: whatever the
partitioned worker still writes (a delta its socket held through the partition, its final store) is
refused or dropped, since it no longer holds the lease and its events carry attempt 1.

Two clients watch. One stays attached through API host ``api1`` from before the partition to the
end: it sees attempt 1's deltas, ``run.started`` with attempt 2, attempt 2's deltas, and exactly one
``message.completed``, last, whose text is the stored answer. The other disconnects as the partition
begins, stays away through it and resumes with ``Last-Event-ID`` through ``api2`` while attempt 2
streams: it gets exactly the events it missed (less any of attempt 1, which the reset makes obsolete:
``streams.target`` fixes the attempt when a client attaches) and ends the same way.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from devtools.stack import wait_until
from shared.events import TERMINAL, RedisLog
from tests.hosts.helpers import assert_exactly_once, new_thread, post, runs_of, task_results, wait_answered
from tests.hosts.ledger import LEDGER
from tests.sse import SseEvent, collect, events, text_of

pytestmark = pytest.mark.hosts

TOKEN_RATE = 4  # tokens a second: the answer below is ~40 tokens, ~10 s per attempt
QUESTION = ("Tell me a long story about a stream that crosses a partition between two worker hosts, "
            "through two API hosts")
PARTIAL_DELTAS = 3  # attempt 1's deltas the clients see before the partition


class StreamReader(threading.Thread):
    """Reads one SSE stream in the background; ``until(seen)`` true disconnects it."""

    def __init__(self, client: httpx.Client, url: str, last_event_id: int | None = None, until=None):
        super().__init__(daemon=True)
        self.client, self.url, self.until = client, url, until
        self.headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = str(last_event_id)
        self.seen: list[SseEvent] = []
        self.status: int | None = None
        self.error: BaseException | None = None
        self.disconnected = False  # by ``until``, not by the server

    def run(self) -> None:
        try:
            with self.client.stream("GET", self.url, headers=self.headers,
                                    timeout=httpx.Timeout(10, read=60)) as response:
                self.status = response.status_code
                for event in events(response):
                    self.seen.append(event)
                    if self.until is not None and self.until(self.seen):
                        self.disconnected = True
                        return
        except BaseException as exc:  # noqa: BLE001 - the test asserts there was none
            self.error = exc

    def finish(self, timeout: float) -> list[SseEvent]:
        self.join(timeout)
        assert not self.is_alive(), f"the stream {self.url} did not end within {timeout} s"
        assert self.error is None, f"the stream {self.url} broke: {self.error!r}"
        assert self.status == 200, self.status
        return self.seen


def deltas(seen: list[SseEvent]) -> int:
    return sum(e.type == "message.delta" for e in seen)


def started(seen: list[SseEvent], attempt: int) -> SseEvent | None:
    return next((e for e in seen if e.type == "run.started" and e.data["attempt"] == attempt), None)


def test_a_stream_follows_its_run_to_the_other_worker_host_after_a_partition(hosts, clients):
    event_log = RedisLog(hosts.stack.env["REDIS_URL"], f"threadline:{hosts.stack.queue}:events:")
    for host in ("wrk1", "wrk2"):
        hosts.control_model(host, token_rate=TOKEN_RATE, first_token_delay=0)
    try:
        thread = new_thread(clients["api1"])
        exchange = post(clients["api1"], thread, QUESTION).json()
        request_id, answer_id = exchange["createdMessage"]["id"], exchange["responseMessage"]["id"]
        url = f"/api/v1/ai/threads/{thread}/messages/{answer_id}/stream"

        attached = StreamReader(clients["api1"], url)
        leaving = StreamReader(clients["api1"], url, until=lambda seen: deltas(seen) >= PARTIAL_DELTAS)
        attached.start(), leaving.start()
        wait_until(lambda: deltas(attached.seen) >= PARTIAL_DELTAS and leaving.disconnected,
                   timeout=60, interval=0.05, what="attempt 1 streaming to both clients")
        run = runs_of(hosts, [request_id])[request_id]
        assert run["attempts"] == 1 and run["status"] == "in_progress" and run["host"], run
        victim = run["host"]
        survivor = {"wrk1": "wrk2", "wrk2": "wrk1"}[victim]
        victim_worker = hosts.stack.processes[f"worker-{victim}"]
        before = task_results(victim_worker)

        hosts.topology[victim].partition()
        LEDGER.fault("worker_host_partition_while_streaming")
        cut_at = time.monotonic()
        try:
            reset = wait_until(lambda: started(attached.seen, 2), timeout=60, interval=0.05,
                               what=f"run.started (attempt 2) on the stream, from {survivor}")
        finally:
            hosts.topology[victim].heal()
        healed_at = time.monotonic()
        partition_to_reset = reset.at - cut_at

        # The client that left resumes through the other API host while attempt 2 streams.
        wait_until(lambda: deltas(attached.seen[attached.seen.index(reset):]) >= 2, timeout=30, interval=0.05,
                   what="attempt 2's first deltas")
        resumed_after = leaving.seen[-1].id
        resumed = StreamReader(clients["api2"], url, last_event_id=resumed_after)
        resumed.start()

        seen = attached.finish(timeout=90)
        completed_at = seen[-1].at
        again = resumed.finish(timeout=30)
        leaving.finish(timeout=5)

        # The partitioned worker's late writes, now that it reaches the servers again: refused.
        def refused():
            results = task_results(victim_worker) - before
            return sum(results[r] for r in ("lease-lost", "skipped", "rejected")) >= 1 and results
        results = wait_until(refused, timeout=90, interval=0.5, what="the partitioned worker's late writes")
        late_writes_refused = time.monotonic() - healed_at
        assert results["completed"] == 0, f"the partitioned worker stored an answer: {results}"
    finally:
        for host in ("wrk1", "wrk2"):
            hosts.control_model(host, token_rate=0, first_token_delay=0)

    # The attached stream: partial text, the reset, then the whole answer once, and its end last.
    assert [e.data["attempt"] for e in seen if e.type == "run.started"] == [1, 2]
    partial = "".join(e.data["text"] for e in seen[:seen.index(reset)] if e.type == "message.delta")
    assert partial, "attempt 1 had streamed some text before the partition"
    ends = [e for e in seen if e.type in TERMINAL]
    assert len(ends) == 1 and ends[0] is seen[-1] and ends[0].type == "message.completed", [e.type for e in ends]
    ids = [e.id for e in seen if e.id is not None]
    assert ids == sorted(set(ids)), "every event once, in order"

    assert_exactly_once(wait_answered(hosts, [request_id]))
    stored = runs_of(hosts, [request_id])[request_id]
    assert stored["attempts"] == 2 and stored["host"] == survivor, stored
    assert stored["step_attempts"] == [2], "the partitioned attempt must not store steps"
    assert text_of(seen) == ends[0].data["content"] == stored["content"], \
        "after the reset, the deltas add up to the stored answer"

    # The log as written (the partitioned worker's last act on the run, its refused store, is behind
    # us): what attempt 1 wrote after the reset (late writes), and what came after the end.
    written = event_log.read(reset.data["run_id"], 0)  # (a few dozen: one batch)
    attempt_of = {e.id: e.attempt for e in written}
    late = [e for e in written if e.id > reset.id and 0 < e.attempt < 2]
    after_end = [e for e in written if e.id > ends[0].id]
    assert all(e.attempt < 2 for e in after_end), f"attempt 2 wrote after its end: {after_end}"
    assert sum(e.type in TERMINAL for e in written) == 1, [e.type for e in written if e.type in TERMINAL]
    assert not any(attempt_of.get(e.id, 2) < 2 for e in seen[seen.index(reset):]), \
        "an event of attempt 1 reached the client after the reset"

    # The resumed stream: exactly the events the client missed, less attempt 1's (obsolete after the reset).
    missed = [e for e in seen if (e.id is None or e.id > resumed_after) and attempt_of.get(e.id, 2) != 1]
    assert [(e.type, e.id, e.data) for e in again] == [(e.type, e.id, e.data) for e in missed]
    assert text_of(leaving.seen + again) == stored["content"]

    # A client that attaches now, through the other API host, sees the answer once.
    _, replay = collect(clients["api2"], "GET", url, timeout=30)
    assert [e.data["attempt"] for e in replay if e.type == "run.started"] == [2]
    assert [e.type for e in replay if e.type in TERMINAL] == ["message.completed"] and replay[-1].type == "message.completed"
    assert text_of(replay) == stored["content"]

    LEDGER.measure("stream_takeover", lease_seconds=int(hosts.stack.env["LEASE_SECONDS"]), token_rate=TOKEN_RATE,
                   partition_to_reset_on_stream_s=partition_to_reset, reset_to_completed_s=completed_at - reset.at,
                   heal_to_late_writes_refused_s=late_writes_refused,
                   events_on_attached_stream=len(seen), deltas_before_reset=deltas(seen[:seen.index(reset)]),
                   deltas_after_reset=deltas(seen[seen.index(reset):]), attached_stream_disconnects=0,
                   resumed_after_event_id=resumed_after, events_on_resumed_stream=len(again),
                   attempt1_events_in_log_after_resume_point=sum(1 for e in written if e.id > resumed_after
                                                                 and e.attempt == 1),
                   late_attempt1_events_in_log=len(late), events_in_log_after_completion=len(after_end),
                   partitioned_worker_task_results=dict(results))

