"""The broker (our private Redis, without persistence) restarts while users keep posting.

Posts during the outage still answer 201 quickly with a pending response: the message and its run
are stored, only the enqueue failed. Tasks queued in Redis before the restart vanish with it. The
sweeper enqueues every run that sat queued too long once Redis is back, the worker and beat
reconnect to the new broker, and the API's run-finished listener subscribes again.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from tests.faults.helpers import assert_exactly_once, new_thread, post, wait_answered
from tests.faults.ledger import LEDGER
from devtools.stack import wait_until

pytestmark = pytest.mark.faults

POSTERS = 3
USERS_PER_POSTER = 3  # each poster takes turns among its users: the runs posted during the outage stay
# queued until the sweeper sends them again, and one user posting every PACE would pass the per-user cap
# of active runs (MAX_ACTIVE_RUNS_PER_USER, 20: a 429, rightly) now that a post without its broker
# answers within a few hundredths of a second
PACE = 0.15  # seconds between one poster's messages: a steady stream, not a flood
OUTAGE = 5.0  # seconds the broker stays down


@dataclass
class Sent:
    phase: str
    status: int
    elapsed: float
    message_id: str | None
    answer_status: str | None


def listeners(stack) -> int:
    """API processes subscribed to the run-finished channel (settings.notify_channel)."""
    channel = f"threadline:{stack.env['RUN_QUEUE']}:run-finished"
    return stack.redis.client().pubsub_numsub(channel)[0][1]


def test_every_message_is_answered_once_across_a_redis_restart(fault_stack, make_fault_user, fault_client_for):
    clients = [fault_client_for(make_fault_user()) for _ in range(POSTERS * USERS_PER_POSTER)]
    threads = [new_thread(client) for client in clients]
    for client, thread in zip(clients, threads):  # a waiting request starts each API process's listener
        assert post(client, thread, "warm up", wait=10).json()["responseMessage"]["status"] == "completed"
    turns = [list(zip(clients, threads))[i::POSTERS] for i in range(POSTERS)]
    assert listeners(fault_stack) >= 1

    phase = {"now": "before"}
    sent: list[Sent] = []
    stop = threading.Event()

    def poster(pairs) -> None:
        n = 0
        while not stop.is_set():
            client, thread = pairs[n % len(pairs)]
            started, before = time.monotonic(), phase["now"]
            response = post(client, thread, f"[[latency:0.1]] message {n}")
            after = phase["now"]
            body = response.json() if response.status_code == 201 else {}
            sent.append(Sent(before if before == after else "edge", response.status_code,
                             time.monotonic() - started, body.get("createdMessage", {}).get("id"),
                             body.get("responseMessage", {}).get("status")))
            n += 1
            stop.wait(PACE)

    workers = [threading.Thread(target=poster, args=(pairs,), daemon=True) for pairs in turns]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(sent) >= 10, timeout=20, what="posts before the outage")
        phase["now"] = "outage"
        fault_stack.redis.stop()
        down_at = time.monotonic()
        LEDGER.fault("redis_restart")
        # Down for a while (longer than QUEUED_STALE_SECONDS) with a stream of posts meanwhile.
        wait_until(lambda: sum(s.phase == "outage" for s in sent) >= 10 and time.monotonic() - down_at > OUTAGE,
                   timeout=30, what="posts during the outage")
        fault_stack.redis.start()
        phase["now"] = "after"
        wait_until(lambda: sum(s.phase == "after" for s in sent) >= 10, timeout=20, what="posts after the outage")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)

    assert [s for s in sent if s.status != 201] == [], "every post must be accepted"
    during = [s for s in sent if s.phase == "outage"]
    LEDGER.pending_during_outage += len(during)
    assert all(s.answer_status == "queued" for s in during), "answered during the outage?"
    assert max(s.elapsed for s in during) < 3.0, "a post must not hang on the missing broker"

    workers = [p for name, p in fault_stack.processes.items() if name.startswith("worker")]
    assert workers and all(p.alive() for p in workers), "a worker died instead of reconnecting"
    rows = wait_answered(fault_stack, [s.message_id for s in sent], timeout=90)
    assert len(rows) == len(sent)
    assert_exactly_once(rows)

    # The API processes' run-finished listeners subscribe to the new Redis again ...
    wait_until(lambda: listeners(fault_stack) >= 1, timeout=20, what="run-finished listener back")
    # ... and a new message is picked up by the reconnected worker straight from the broker.
    fresh = post(clients[0], threads[0], "after the restart", wait=15)
    assert fresh.json()["responseMessage"]["status"] == "completed"
