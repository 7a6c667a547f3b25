"""Post a message and get its finished answer: wait on the POST, then poll (a busy CI box can be slow)."""
from __future__ import annotations

from devtools.stack import wait_until

FINISHED = ("completed", "failed", "cancelled")


def post_and_wait(client, thread: int, body: dict, *, wait: float = 25, timeout: float = 90) -> dict:
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait={wait}", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()["responseMessage"]
    if answer["status"] not in FINISHED:
        url = f"/api/v1/ai/threads/{thread}/messages/{answer['id']}"
        answer = wait_until(lambda: (m := client.get(url).json())["status"] in FINISHED and m, timeout=timeout,
                            interval=0.2, what=f"the answer to {body.get('content', '')[:40]!r}")
    return answer
