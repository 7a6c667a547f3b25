"""Model failures through the real stack: the scripted model's directives make the real openai SDK see
429s, 500s and a hanging server. The stack runs with MODEL_MAX_RETRIES=2 and MODEL_TIMEOUT=5.

Each test uses a unique first message: the scripted model counts failures per conversation.
"""
from __future__ import annotations

import time
import uuid

import pytest

from devtools.stack import wait_until

LABEL = "(Threadline development model)"
SAFE_TEXT = "Sorry, the AI model is not available right now. Please try again in a moment."
LEAKS = ("Error code", "Scripted failure", "HTTP 500", "server_error", "Traceback", "127.0.0.1", "timed out")


def ask(client, content: str, wait: float = 25) -> dict:
    thread = client.post("/api/v1/ai/threads", json={"title": "faults"}).json()["id"]
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait={wait}", json={"content": content})
    assert response.status_code == 201, response.text
    answer = response.json()["responseMessage"]
    if answer["status"] in ("queued", "in_progress"):
        url = f"/api/v1/ai/threads/{thread}/messages/{answer['id']}"
        answer = wait_until(lambda: (m := client.get(url).json())["status"] in ("completed", "failed") and m,
                            timeout=60, what="the run to finish")
    return answer


def assert_user_safe(answer: dict) -> None:
    assert answer["status"] == "failed" and answer["is_error"] is True
    assert answer["content"] == SAFE_TEXT
    shown = answer["content"] + " ".join(str(s.get("output")) for s in answer["steps"])
    for leak in LEAKS:
        assert leak not in shown, f"{leak!r} leaked into what the user sees: {shown}"


@pytest.mark.parametrize("status", [429, 500])
def test_one_transient_failure_is_retried_and_the_answer_completes(client, status):
    tag = uuid.uuid4().hex[:8]
    answer = ask(client, f"[[fail:{status}x1]] hello {tag}")
    assert answer["status"] == "completed" and answer["is_error"] is False
    assert answer["content"].startswith(LABEL) and tag in answer["content"]


def test_as_many_failures_as_retries_still_complete(client):
    """MODEL_MAX_RETRIES=2: two failures then a success is within budget (proves the SDK really retries)."""
    answer = ask(client, f"[[fail:503x2]] again {uuid.uuid4().hex[:8]}")
    assert answer["status"] == "completed" and answer["is_error"] is False


def test_one_failure_more_than_the_retries_fails_the_run(client):
    assert_user_safe(ask(client, f"[[fail:500x3]] almost {uuid.uuid4().hex[:8]}"))


def test_persistent_server_errors_end_with_a_user_safe_error_answer(client):
    answer = ask(client, f"[[fail:500x10]] doomed {uuid.uuid4().hex[:8]}")
    assert_user_safe(answer)
    assert [s["kind"] for s in answer["steps"]] == ["model_call"] and answer["steps"][0]["status"] == "failed"


def test_a_hanging_model_fails_after_the_timeout(client):
    started = time.monotonic()
    answer = ask(client, f"[[hang]] are you there {uuid.uuid4().hex[:8]}", wait=0)
    elapsed = time.monotonic() - started
    assert_user_safe(answer)
    assert elapsed >= 5  # at least one MODEL_TIMEOUT went by before giving up
