"""A mixed batch against a misbehaving model, all at once: persistent 500s and 429s beyond the SDK's
retries, a model hanging past MODEL_TIMEOUT, a transient error the retry absorbs, and healthy
requests next to them. Each message gets exactly one answer: the failures a user-safe ``is_error``
answer, the others a normal one. (The single-fault cases are in tests/integration/test_model_failures.py.)
"""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.helpers import assert_exactly_once, new_thread, post, wait_answered
from tests.faults.ledger import LEDGER

pytestmark = pytest.mark.faults

SAFE_TEXT = "Sorry, the AI model is not available right now. Please try again in a moment."
# directive → (fault kind for the figures, expected answer status). The fault stack runs with
# MODEL_MAX_RETRIES=1 (two tries per model call) and MODEL_TIMEOUT=4.
BATCH = [
    ("[[fail:500x9]]", "model_500_persistent", "failed"),
    ("[[fail:429x9]]", "model_429_persistent", "failed"),
    ("[[hang]]", "model_hang", "failed"),
    ("[[fail:503x1]]", "model_503_transient", "completed"),
    ("[[fail:429x1]]", "model_429_transient", "completed"),
    ("", None, "completed"),
    ("[[latency:1]]", None, "completed"),
]


def test_a_mixed_batch_of_model_failures(fault_stack, fault_client):
    threads = [new_thread(fault_client) for _ in BATCH]
    with ThreadPoolExecutor(max_workers=len(BATCH)) as pool:
        responses = list(pool.map(
            lambda pair: post(fault_client, pair[0], f"{pair[1][0]} batch {uuid.uuid4().hex[:8]}"),
            zip(threads, BATCH)))
    assert all(r.status_code == 201 for r in responses)
    for _, kind, _ in BATCH:
        if kind:
            LEDGER.fault(kind)
    ids = [r.json()["createdMessage"]["id"] for r in responses]
    rows = {row["id"]: row for row in wait_answered(fault_stack, ids, timeout=60)}
    assert_exactly_once(list(rows.values()), status=None)
    for message_id, thread, (directive, _, expected) in zip(ids, threads, BATCH):
        assert rows[message_id]["statuses"] == [expected], f"{directive!r}: {rows[message_id]}"
        answer = fault_client.get(f"/api/v1/ai/threads/{thread}/messages").json()["data"][1]
        assert answer["is_error"] is (expected == "failed")
        if expected == "failed":
            assert answer["content"] == SAFE_TEXT, answer["content"]
        else:
            assert "batch" in answer["content"]
