"""A worker SIGKILLed while its run is being cancelled (issue 13). The run must end ``cancelled`` with
the text it had streamed, exactly once, and never be handed to another worker to be answered anyway:

- the worker dies as the cancel arrives: the cancel's grace time runs out and the API ends the run
  itself from the event log (runs.end_cancelled);
- the cancel mark is set but nobody ends the run (the API that marked it died too): the sweeper finds
  the lost run with its cancel pending and ends it cancelled (runs.sweep), and enqueues the run
  queued behind it.

These posts are not recorded in the ledger: its exactly-once check expects completed or failed answers.
The file sorts after test_redis_restart.py on purpose: the SIGKILLed workers stay listed in the fault
stack's processes, and that test asserts every listed worker is alive."""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from devtools.stack import wait_until
from tests.faults.helpers import new_thread
from tests.faults.test_worker_crash import kill_workers, runs_of, start_another_worker
from tests.sse import events

pytestmark = pytest.mark.faults


def _slow(fault_stack):
    httpx.post(f"{fault_stack.model_url}/_control", json={"token_rate": 8, "first_token_delay": 0})


def _reset(fault_stack):
    httpx.post(f"{fault_stack.model_url}/_control", json={"token_rate": 0, "first_token_delay": 0})


def _post_and_stream_a_little(client, thread: int, content: str) -> tuple[str, str, str]:
    """Post, then follow the answer's stream until it has sent three deltas; the text seen so far."""
    exchange = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": content}).json()
    request_id, answer_id = exchange["createdMessage"]["id"], exchange["responseMessage"]["id"]
    seen = []
    with client.stream("GET", f"/api/v1/ai/threads/{thread}/messages/{answer_id}/stream",
                       headers={"Accept": "text/event-stream"}, timeout=60) as response:
        for event in events(response):
            seen.append(event)
            if sum(e.type == "message.delta" for e in seen) >= 3:
                break
    return request_id, answer_id, "".join(e.data["text"] for e in seen if e.type == "message.delta")


def test_a_worker_killed_as_its_run_is_cancelled_leaves_it_cancelled_with_its_text(fault_stack, fault_client):
    _slow(fault_stack)
    try:
        thread = new_thread(fault_client)
        request_id, answer_id, streamed = _post_and_stream_a_little(fault_client, thread, "a long story to stop")
        kill_workers(fault_stack)
        response = fault_client.post(f"/api/v1/ai/threads/{thread}/messages/{answer_id}/cancel")
        start_another_worker(fault_stack)
    finally:
        _reset(fault_stack)
    assert response.status_code == 200, response.text
    stopped = response.json()
    assert stopped["status"] == "cancelled" and stopped["content"].startswith(streamed) and streamed
    run = runs_of(fault_stack, [request_id])[request_id]
    assert (run["status"], run["attempts"]) == ("cancelled", 1)


def test_the_sweeper_ends_a_lost_run_with_a_cancel_pending_as_cancelled(fault_stack, fault_client):
    _slow(fault_stack)
    try:
        thread = new_thread(fault_client)
        request_id, answer_id, streamed = _post_and_stream_a_little(fault_client, thread, "another long story")
        behind = fault_client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": "next"}).json()
        kill_workers(fault_stack)
        with fault_stack.db.begin() as conn:  # the cancel's mark, as an API that died right after it left it
            conn.execute(text("UPDATE runs SET cancel_requested_at = now() WHERE request_message_id = :id"),
                         {"id": request_id})
        start_another_worker(fault_stack)
        run = wait_until(lambda: (r := runs_of(fault_stack, [request_id])[request_id])["status"] != "in_progress" and r,
                         timeout=40, what="the sweeper to end the lost run")
    finally:
        _reset(fault_stack)
    assert (run["status"], run["attempts"]) == ("cancelled", 1), "ended by the sweeper, never re-run"
    assert run["content"].startswith(streamed) and streamed, "the text its event log held"
    following = behind["createdMessage"]["id"]
    wait_until(lambda: runs_of(fault_stack, [following])[following]["status"] == "completed", timeout=40,
               what="the run queued behind it")
