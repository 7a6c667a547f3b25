"""Helpers the knowledge-base and memory integration tests share: ask the assistant, read its steps."""
from __future__ import annotations


def ask(client, text: str, thread: int | None = None) -> dict:
    """Post ``text`` (in a new thread unless one is given), wait for the answer and return it."""
    if thread is None:
        response = client.post("/api/v1/ai/threads", json={"title": "docs"})
        assert response.status_code == 201, response.text
        thread = response.json()["id"]
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=20", json={"content": text})
    assert response.status_code == 201, response.text
    answer = response.json()["responseMessage"]
    assert answer["status"] == "completed", answer
    return answer


def step_names(answer: dict) -> list[str]:
    return [s["name"] for s in answer["steps"] if s["kind"] == "tool_call"]
