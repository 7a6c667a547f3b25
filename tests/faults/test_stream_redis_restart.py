"""Redis (the event log, without persistence) restarts under open answer streams. Each API process
reads its streams' logs through one reader (shared/events.py ``StreamReader``): it loses its
connection, the streams look at their runs' rows meanwhile, and the reader reconnects. No stream
hangs: each ends once, with the stored message, its event ids never repeating; and a stream opened
after the restart is live again (its deltas come through the reconnected reader)."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.faults.helpers import new_thread, post
from tests.faults.ledger import LEDGER
from tests.sse import events, text_of
from devtools.stack import wait_until

pytestmark = pytest.mark.faults

STREAMS = 6
TERMINAL = ("message.completed", "run.failed", "run.cancelled")


def stream(client: httpx.Client, thread: int, answer_id: str, seen: list) -> None:
    with client.stream("GET", f"/api/v1/ai/threads/{thread}/messages/{answer_id}/stream",
                       headers={"Accept": "text/event-stream"}, timeout=90) as response:
        for event in events(response):
            seen.append(event)


def test_open_streams_end_with_the_stored_message_across_a_redis_restart(fault_stack, fault_client):
    control = f"{fault_stack.model_url}/_control"
    httpx.post(control, json={"token_rate": 6, "first_token_delay": 0})  # ~5 s an answer: Redis goes mid-way
    try:
        opened = []
        for n in range(STREAMS):
            thread = new_thread(fault_client)
            answer_id = post(fault_client, thread, f"stream me across a restart {n}").json()["responseMessage"]["id"]
            opened.append((thread, answer_id, []))
        readers = [threading.Thread(target=stream, args=(fault_client, thread, answer_id, seen), daemon=True)
                   for thread, answer_id, seen in opened]
        for reader in readers:
            reader.start()
        wait_until(lambda: all(sum(e.type == "message.delta" for e in seen) >= 2 for _, _, seen in opened),
                   timeout=30, what="every stream live")
        fault_stack.redis.stop()
        LEDGER.fault("redis_restart_under_streams")
        time.sleep(2.0)
        fault_stack.redis.start()
        started = time.monotonic()
        for reader in readers:
            reader.join(timeout=max(1.0, 45 - (time.monotonic() - started)))
        assert not any(reader.is_alive() for reader in readers), "a stream hung after Redis came back"

        for thread, answer_id, seen in opened:
            ends = [e for e in seen if e.type in TERMINAL]
            assert len(ends) == 1 and ends[0] is seen[-1], [e.type for e in seen]
            ids = [e.id for e in seen if e.id is not None]
            assert ids == sorted(set(ids)), "no event twice, none out of order"
            stored = fault_client.get(f"/api/v1/ai/threads/{thread}/messages/{answer_id}").json()
            assert ends[0].data == stored if ends[0].type == "message.completed" else ends[0].data["message"] == stored

        # A stream opened now is live again: its deltas come through the reconnected reader.
        thread = new_thread(fault_client)
        answer_id = post(fault_client, thread, "stream me after the restart").json()["responseMessage"]["id"]
        seen: list = []
        stream(fault_client, thread, answer_id, seen)
        assert sum(e.type == "message.delta" for e in seen) >= 2 and seen[-1].type == "message.completed"
        assert text_of(seen) == seen[-1].data["content"]
    finally:
        httpx.post(control, json={"token_rate": 0, "first_token_delay": 0})
