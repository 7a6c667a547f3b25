"""A worker SIGKILLed while it streams an answer. A client that stays attached sees the partial text of
attempt 1, then ``run.started`` with attempt 2 (its cue to drop that text), then the whole answer once;
the database holds exactly one answer, written by attempt 2."""
from __future__ import annotations

import httpx
import pytest

from tests.faults.helpers import assert_exactly_once, new_thread, post, wait_answered
from tests.faults.test_worker_crash import kill_workers, runs_of, start_another_worker
from tests.sse import events, text_of

pytestmark = pytest.mark.faults


def test_a_worker_killed_mid_stream_restarts_the_stream_with_attempt_2(fault_stack, fault_client):
    control = f"{fault_stack.model_url}/_control"
    httpx.post(control, json={"token_rate": 8, "first_token_delay": 0})  # ~4 s per answer: time to kill it
    try:
        thread = new_thread(fault_client)
        exchange = post(fault_client, thread, "stream me through a crash").json()
        request_id, answer_id = exchange["createdMessage"]["id"], exchange["responseMessage"]["id"]
        seen = []
        with fault_client.stream("GET", f"/api/v1/ai/threads/{thread}/messages/{answer_id}/stream",
                                 headers={"Accept": "text/event-stream"}, timeout=60) as response:
            assert response.status_code == 200
            incoming = events(response)
            for event in incoming:
                seen.append(event)
                if sum(e.type == "message.delta" for e in seen) >= 3:
                    break
            kill_workers(fault_stack)  # mid-answer: attempt 1 never finishes
            start_another_worker(fault_stack)
            seen.extend(incoming)  # the same connection: the API never noticed the worker die
    finally:
        httpx.post(control, json={"token_rate": 0, "first_token_delay": 0})

    starts = [(i, e.data["attempt"]) for i, e in enumerate(seen) if e.type == "run.started"]
    assert [attempt for _, attempt in starts] == [1, 2]
    partial = "".join(e.data["text"] for e in seen[starts[0][0]:starts[1][0]] if e.type == "message.delta")
    assert partial, "attempt 1 had streamed some text before it died"
    ends = [e for e in seen if e.type in ("message.completed", "run.failed")]
    assert len(ends) == 1 and ends[0] is seen[-1] and ends[0].type == "message.completed"
    assert text_of(seen) == ends[0].data["content"], "after the reset, the deltas add up to the answer"
    ids = [e.id for e in seen if e.id is not None]
    assert ids == sorted(set(ids))

    assert_exactly_once(wait_answered(fault_stack, [request_id]))
    run = runs_of(fault_stack, [request_id])[request_id]
    assert run["attempts"] == 2 and run["content"] == ends[0].data["content"]
