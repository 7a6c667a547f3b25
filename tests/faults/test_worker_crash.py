"""A worker SIGKILLed in the middle of a model call: the run is not lost and not answered twice.

The killed worker's task stays unacknowledged in the broker and its lease stops being renewed; once
the lease expires the sweeper queues the run again and another worker answers it (attempt 2).
"""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.faults.helpers import assert_exactly_once, new_thread, post, wait_answered
from tests.faults.ledger import LEDGER
from devtools.stack import wait_until

pytestmark = pytest.mark.faults


def runs_of(stack, ids: list[str]) -> dict[str, dict]:
    with stack.db.connect() as conn:
        rows = conn.execute(text("""
            SELECT r.request_message_id::text AS id, r.status, r.attempts, r.lease_owner, a.content,
                   (SELECT array_agg(DISTINCT s.attempt) FROM run_steps s WHERE s.run_id = r.id) AS step_attempts
            FROM runs r JOIN messages a ON a.id = r.response_message_id
            WHERE r.request_message_id::text = ANY(:ids)
        """), {"ids": ids})
        return {row.id: dict(row._mapping) for row in rows}


def kill_workers(stack) -> None:
    for name, process in stack.processes.items():
        if name.startswith("worker") and process.alive():
            process.kill()
            LEDGER.fault("worker_sigkill")


def start_another_worker(stack) -> None:
    stack.start_worker(f"worker-{sum(name.startswith('worker') for name in stack.processes) + 1}")


def test_sigkilled_worker_run_is_finished_by_another_worker(fault_stack, fault_client):
    threads = [new_thread(fault_client) for _ in range(3)]
    ids = [post(fault_client, t, f"[[latency:3]] survive the crash {i}").json()["createdMessage"]["id"]
           for i, t in enumerate(threads)]
    wait_until(lambda: all(r["status"] == "in_progress" for r in runs_of(fault_stack, ids).values())
               and len(ids), timeout=20, what="runs in the middle of their model call")
    first_owners = {i: r["lease_owner"] for i, r in runs_of(fault_stack, ids).items()}

    kill_workers(fault_stack)
    assert all(r["status"] == "in_progress" for r in runs_of(fault_stack, ids).values())

    start_another_worker(fault_stack)
    rows = wait_answered(fault_stack, ids, timeout=60)
    assert_exactly_once(rows)
    for message_id, run in runs_of(fault_stack, ids).items():
        assert run["status"] == "completed" and run["attempts"] == 2, run
        assert run["lease_owner"] != first_owners[message_id]
        assert "survive the crash" in run["content"]
        assert run["step_attempts"] == [2], "steps of the killed attempt must not be stored"


def test_a_duplicate_delivery_never_disturbs_a_live_run(fault_stack, fault_client, monkeypatch):
    """The same task delivered again (visibility timeout, a sweep racing a slow worker) while a worker
    holds the lease — even on the run's last allowed attempt — is skipped; the run completes once."""
    from celery import Celery

    thread = new_thread(fault_client)
    message_id = post(fault_client, thread, "[[latency:3]] deliver me twice").json()["createdMessage"]["id"]
    wait_until(lambda: runs_of(fault_stack, [message_id])[message_id]["status"] == "in_progress", timeout=20,
               what="the run in progress")
    with fault_stack.db.begin() as conn:  # pretend this is the last attempt the run is allowed
        conn.execute(text("UPDATE runs SET attempts = :n WHERE request_message_id::text = :id"),
                     {"n": int(fault_stack.env["RUN_MAX_ATTEMPTS"]), "id": message_id})
        run_id = conn.execute(text("SELECT id::text FROM runs WHERE request_message_id::text = :id"),
                              {"id": message_id}).scalar_one()
    monkeypatch.setenv("CELERY_BROKER_URL", fault_stack.redis.url)  # Celery prefers the variable to broker=
    sender = Celery("duplicate", broker=fault_stack.redis.url)
    sender.conf.task_default_queue = fault_stack.queue  # the same exchange and routing as the stack's
    try:
        sender.send_task("threadline.execute_run", args=[run_id], queue=fault_stack.queue)
    finally:
        sender.close()
    LEDGER.fault("duplicate_delivery")
    rows = wait_answered(fault_stack, [message_id], timeout=30)
    assert_exactly_once(rows)  # completed: the duplicate neither failed it nor answered it again
    assert "deliver me twice" in runs_of(fault_stack, [message_id])[message_id]["content"]


def test_a_run_whose_last_attempt_dies_ends_failed_not_hanging(fault_stack, fault_client):
    """Out of attempts (RUN_MAX_ATTEMPTS): the sweeper ends the run with an is_error answer."""
    thread = new_thread(fault_client)
    message_id = post(fault_client, thread, "[[latency:4]] doomed").json()["createdMessage"]["id"]
    wait_until(lambda: runs_of(fault_stack, [message_id])[message_id]["status"] == "in_progress", timeout=20,
               what="the run in progress")
    kill_workers(fault_stack)
    with fault_stack.db.begin() as conn:  # as if this had been its last allowed attempt
        conn.execute(text("UPDATE runs SET attempts = :n WHERE request_message_id::text = :id"),
                     {"n": int(fault_stack.env["RUN_MAX_ATTEMPTS"]), "id": message_id})
    start_another_worker(fault_stack)  # runs the sweeper's task; the lease expires meanwhile
    rows = wait_answered(fault_stack, [message_id], timeout=30)
    assert_exactly_once(rows, status="failed")
    answer = fault_client.get(f"/api/v1/ai/threads/{thread}/messages").json()["data"][1]
    assert answer["is_error"] is True and answer["status"] == "failed"
    assert answer["content"] == "Sorry, I could not produce an answer this time. Please try again."
