"""Small helpers the chats / v1-threads / cross-dialect / contract tests share."""
from __future__ import annotations

import re
import uuid

import httpx

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ISO_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LABEL = "(Threadline development model)"


def is_uuid(value) -> bool:
    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


def login(client_for, user) -> httpx.Client:
    """A client without a bearer token, holding the session cookie of ``user``."""
    client = client_for()
    response = client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    return client


def new_chat(client: httpx.Client, **body) -> str:
    response = client.post("/api/chats", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def new_v1_thread(client: httpx.Client, **body) -> str:
    response = client.post("/v1/threads", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def direct(client: httpx.Client, thread: str, text: str, role: str = "USER", **extra) -> dict:
    """Create a message without the AI through v1-threads."""
    response = client.post(f"/v1/threads/{thread}/messages", json={"role": role, "content": {"text": text}, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def ask_v1(client: httpx.Client, thread: str, text: str, **extra) -> dict:
    """Post a user message through v1-threads and wait for the answer."""
    response = client.post(f"/v1/threads/{thread}/user_message?wait=20", json={"content": {"text": text}, **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["assistant_message"]["status"] == "completed", body
    return body
