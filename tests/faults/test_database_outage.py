"""PostgreSQL "stops" (the proxy in front of it refuses and drops every connection) while runs are
in flight. The API answers 503 with Retry-After and a clear JSON body in each dialect's format — no
500, no trace — /readyz names the database, and after the restore service resumes and every message
is answered exactly once, with nothing half-written."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tests.faults.helpers import assert_exactly_once, new_thread, post, wait_answered
from tests.faults.ledger import LEDGER
from devtools.stack import wait_until

pytestmark = pytest.mark.faults
LEASE_SECONDS = 6.5  # the fault stack's LEASE_SECONDS, and a little more


def error_format(dialect: str, status: int, body: dict) -> bool:
    return {
        "ai-threads": lambda: body.get("code") == "unavailable" and "unavailable" in body.get("message", ""),
        "chats": lambda: body.get("statusCode") == status and "unavailable" in body.get("message", ""),
        "v1-threads": lambda: "unavailable" in str(body.get("detail", "")),
    }[dialect]()


def requests_per_dialect(user, ai_thread: int, chat: str, v1_thread: str):
    """(dialect, method, path, body) covering reads and writes of every dialect."""
    return [
        ("ai-threads", "GET", "/api/v1/ai/threads", None),
        ("ai-threads", "GET", f"/api/v1/ai/threads/{ai_thread}/messages", None),
        ("ai-threads", "POST", f"/api/v1/ai/threads/{ai_thread}/messages?wait=0", {"content": "during the outage"}),
        ("ai-threads", "POST", "/api/v1/ai/threads", {"title": "during the outage"}),
        ("chats", "GET", f"/api/chats/{chat}", None),
        ("chats", "POST", f"/api/chats/{chat}/messages?wait=0",
         {"content": "during the outage", "modelId": "gpt-4", "userId": user.id}),
        ("v1-threads", "GET", f"/v1/threads/{v1_thread}/messages", None),
        ("v1-threads", "POST", f"/v1/threads/{v1_thread}/user_message?wait=0", {"content": {"text": "during the outage"}}),
    ]


def thread_integrity(stack, threads: list[int]) -> list[str]:
    """Problems a half-written post or answer would leave behind."""
    with stack.db.connect() as conn:
        return [row.problem for row in conn.execute(text("""
            SELECT 'thread ' || t.id || ': last_seq ' || t.last_seq || ' but max seq ' || coalesce(max(m.seq), 0) AS problem
            FROM threads t LEFT JOIN messages m ON m.thread_id = t.id
            WHERE t.id = ANY(:threads) GROUP BY t.id HAVING t.last_seq <> coalesce(max(m.seq), 0)
            UNION ALL
            SELECT 'user message ' || m.id || ' has no run' FROM messages m
            WHERE m.thread_id = ANY(:threads) AND m.role = 'user'
              AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.request_message_id = m.id)
            UNION ALL
            SELECT 'run ' || r.id || ' finished ' || r.status || ' but its answer is ' || a.status FROM runs r
            JOIN messages a ON a.id = r.response_message_id
            WHERE r.thread_id = ANY(:threads) AND r.status <> a.status
        """), {"threads": threads})]


def test_postgres_outage_is_503_everywhere_and_nothing_is_half_written(fault_stack, make_fault_user, fault_client_for):
    user = make_fault_user()
    client = fault_client_for(user)
    anonymous = fault_client_for()
    ai_threads = [new_thread(client) for _ in range(3)]
    chat = client.post("/api/chats", json={"title": "outage"}).json()["data"]["id"]
    v1_thread = client.post("/v1/threads", json={"title": "outage"}).json()["id"]
    in_flight = [post(client, t, f"[[latency:2]] in flight {i}") for i, t in enumerate(ai_threads)]
    ids = [r.json()["createdMessage"]["id"] for r in in_flight]
    wait_until(lambda: client.get(f"/api/v1/ai/threads/{ai_threads[0]}/messages").json()["data"][1]["status"]
               == "in_progress", timeout=20, what="a run in the middle of its model call")
    counted = {t: client.get(f"/api/v1/ai/threads/{t}/messages").json()["meta"]["total"] for t in ai_threads}

    fault_stack.proxy.cut()
    cut_at = time.monotonic()
    LEDGER.fault("postgres_cut")
    try:
        for dialect, method, path, body in requests_per_dialect(user, ai_threads[0], chat, v1_thread):
            response = client.request(method, path, json=body)
            if method == "POST" and ("/messages" in path or "/user_message" in path):
                LEDGER.posted(response)
            assert response.status_code == 503, f"{dialect} {method} {path}: {response.status_code} {response.text}"
            assert response.headers["content-type"].startswith("application/json")
            assert int(response.headers["Retry-After"]) > 0
            assert error_format(dialect, 503, response.json()), f"{dialect}: {response.text}"
            assert "Traceback" not in response.text and "psycopg2" not in response.text
        ready = anonymous.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        checks = ready.json()["checks"]
        assert checks["database"] == {"status": "down", "error": "OperationalError"}
        assert checks["broker"]["status"] == "up"
        assert anonymous.get("/healthz").status_code == 200, "the process itself is fine"
        # Hold the outage past the lease (a fault's duration, not a wait for a condition): meanwhile
        # the workers can neither renew their leases, store their answers nor sweep.
        time.sleep(max(0.0, LEASE_SECONDS - (time.monotonic() - cut_at)))
    finally:
        fault_stack.proxy.restore()

    wait_until(lambda: anonymous.get("/readyz").status_code == 200, timeout=30, what="ready again")
    rows = wait_answered(fault_stack, ids, timeout=90)
    assert_exactly_once(rows)
    with fault_stack.db.connect() as conn:  # the outage really hit them: their first attempt could not be stored
        attempts = conn.execute(text("SELECT attempts FROM runs WHERE request_message_id::text = ANY(:ids)"),
                                {"ids": ids}).scalars().all()
    assert max(attempts) >= 2, attempts
    for thread, before in counted.items():  # nothing from the outage was stored
        assert client.get(f"/api/v1/ai/threads/{thread}/messages").json()["meta"]["total"] == before
    assert thread_integrity(fault_stack, ai_threads) == []
    after = post(client, ai_threads[0], "after the outage", wait=20)
    assert after.status_code == 201 and after.json()["responseMessage"]["status"] == "completed"
