"""Request guards, probes and in-thread order through the real stack.

Hostile or broken input ends in a clear 4xx in each dialect's own error format (never a 500, never a
trace); /healthz and /readyz report the process and its dependencies; messages of one thread are
answered one after the other, and ``If-Thread-Idle: true`` turns "queue behind" into a 409.
"""
from __future__ import annotations

import importlib.util
import json
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
from sqlalchemy import select

from devtools.stack import wait_until

pytestmark = pytest.mark.core


# -- the dialects: how to make a thread, where to post, what their errors look like ------------------

@dataclass
class Dialect:
    name: str
    create_thread: Callable  # (client) -> thread ref used in paths
    message_path: str  # with {thread}
    message_body: Callable  # (content, user) -> body
    error_ok: Callable  # (status, body) -> bool: the dialect's error format
    thread_path: str = ""
    list_path: str = ""  # GET the thread's messages


def _ai_thread(client) -> int:
    response = client.post("/api/v1/ai/threads", json={"title": "hardening"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _chat(client) -> str:
    response = client.post("/api/chats", json={"title": "hardening"})
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def _v1_thread(client) -> str:
    response = client.post("/v1/threads", json={"title": "hardening"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


DIALECTS = [Dialect(
    "ai-threads", _ai_thread, "/api/v1/ai/threads/{thread}/messages?wait=0",
    lambda content, user: {"content": content},
    lambda status, body: isinstance(body.get("message"), str) and isinstance(body.get("code"), str),
    "/api/v1/ai/threads/{thread}", "/api/v1/ai/threads/{thread}/messages",
)]
if importlib.util.find_spec("api.dialects.chats"):
    DIALECTS.append(Dialect(
        "chats", _chat, "/api/chats/{thread}/messages?wait=0",
        lambda content, user: {"content": content, "modelId": "gpt-4", "userId": user.id},
        lambda status, body: body.get("statusCode") == status and isinstance(body.get("message"), str),
        "/api/chats/{thread}", "/api/chats/{thread}/messages",
    ))
if importlib.util.find_spec("api.dialects.v1_threads"):
    DIALECTS.append(Dialect(
        "v1-threads", _v1_thread, "/v1/threads/{thread}/user_message?wait=0",
        lambda content, user: {"content": {"text": content}},
        lambda status, body: "detail" in body,
        "/v1/threads/{thread}", "/v1/threads/{thread}/messages",
    ))
BY_NAME = {d.name: d for d in DIALECTS}


def assert_clear_error(dialect: Dialect, response, statuses: tuple[int, ...]) -> dict:
    assert response.status_code in statuses, f"{dialect.name}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert dialect.error_ok(response.status_code, body), f"{dialect.name} error format: {body}"
    assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower()
    return body


def raw_post(client, path: str, raw: bytes):
    return client.post(path, content=raw, headers={"Content-Type": "application/json"})


def content_body(dialect: Dialect, user, content_json: str) -> bytes:
    """The dialect's message body with ``content_json`` spliced in raw (to send what json.dumps won't)."""
    return json.dumps(dialect.message_body("@@", user)).replace('"@@"', content_json).encode()


# -- probes --------------------------------------------------------------------------------------------

def test_healthz_and_readyz_report_the_process_and_its_dependencies(client_for, stack):
    anonymous = client_for()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert {"database", "broker"} <= set(body["checks"])
    assert all(check["status"] == "up" for check in body["checks"].values())
    assert ready.headers["Cache-Control"] == "no-store"


# -- input hardening, every dialect ------------------------------------------------------------------

HOSTILE_CONTENT = [
    ("nul", '"hello\\u0000world"'),
    ("lone surrogate", '"broken \\ud800 text"'),
    ("wrong type", "[1, 2, 3]"),
    ("object", '{"text": 1}'),
    ("number", "12345"),
    ("null", "null"),
]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("case, content", HOSTILE_CONTENT, ids=[c[0] for c in HOSTILE_CONTENT])
def test_hostile_content_is_a_clear_4xx(client, user, dialect, case, content):
    thread = dialect.create_thread(client)
    response = raw_post(client, dialect.message_path.format(thread=thread), content_body(dialect, user, content))
    assert_clear_error(dialect, response, (400, 422))


BROKEN_BODIES = [
    ("invalid utf-8", b'{"content": "caf\xe9 \xff\xfe"}'),
    ("not json", b"{content: hi"),
    ("NaN", b'{"content": "hi", "context": {"a": NaN}}'),
    ("Infinity", b'{"content": "hi", "context": {"a": -Infinity}}'),
    ("1e999", b'{"content": "hi", "context": {"a": 1e999}}'),
    ("huge integer", b'{"content": "hi", "context": {"a": ' + b"9" * 5000 + b"}}"),
    ("deep nesting", b'{"content": "hi", "context": ' + b'{"a": ' * 60 + b"1" + b"}" * 60 + b"}"),
    ("very deep nesting", b'{"content": "hi", "context": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"),
    ("nul in a key", b'{"content": "hi", "context": {"a\\u0000b": 1}}'),
    ("nul deep in context", b'{"content": "hi", "context": {"form": {"name": ["x", "a\\u0000"]}}}'),
    ("array body", b'[{"content": "hi"}]'),
    ("string body", b'"hi"'),
]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("case, raw", BROKEN_BODIES, ids=[c[0] for c in BROKEN_BODIES])
def test_broken_bodies_are_a_clear_4xx(client, dialect, case, raw):
    thread = dialect.create_thread(client)
    response = raw_post(client, dialect.message_path.format(thread=thread), raw)
    assert_clear_error(dialect, response, (400, 422))


def test_the_guard_names_the_bad_field(client):
    thread = _ai_thread(client)
    path = f"/api/v1/ai/threads/{thread}/messages"
    body = assert_clear_error(BY_NAME["ai-threads"], raw_post(client, path, b'{"content": "a\\u0000b"}'), (422,))
    assert "content" in body["errors"] and "NUL" in body["errors"]["content"][0]
    body = assert_clear_error(BY_NAME["ai-threads"], raw_post(
        client, path, b'{"content": "hi", "state": {"form": {"name": "\\u0000"}}}'), (422,))
    assert "state.form.name" in body["errors"]
    body = assert_clear_error(BY_NAME["ai-threads"], raw_post(client, path, b'{"content": "\xff"}'), (422,))
    assert body["code"] == "invalid_json" and "UTF-8" in body["message"]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_oversized_body_is_413(client, user, dialect):
    thread = dialect.create_thread(client)
    raw = json.dumps(dialect.message_body("x" * 300_000, user)).encode()
    response = raw_post(client, dialect.message_path.format(thread=thread), raw)
    body = assert_clear_error(dialect, response, (413,))
    assert "too large" in json.dumps(body)


def test_context_larger_than_the_cap_is_422(client):
    thread = _ai_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0",
                           json={"content": "hi", "context": {"blob": "y" * 70_000}})
    body = assert_clear_error(BY_NAME["ai-threads"], response, (422,))
    assert "context" in body["errors"]
    ok = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": "hi", "context": {"blob": "y" * 1000}})
    assert ok.status_code == 201


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_nul_in_the_query_string_is_a_clear_4xx(client, dialect):
    thread = dialect.create_thread(client)
    response = client.get(dialect.list_path.format(thread=thread) + "?limit=%00&page=%00&before=%00")
    assert_clear_error(dialect, response, (400, 422))


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("ref", ["99999999999999999999999", "-1", "0", "%00", "not-an-id", "1e9", str(2**63)])
def test_odd_thread_ids_are_404_or_4xx(client, dialect, ref):
    assert_clear_error(dialect, client.get(dialect.thread_path.format(thread=ref)), (400, 404, 422))


def test_oversized_idempotency_key_and_bad_precondition(client):
    thread = _ai_thread(client)
    path = f"/api/v1/ai/threads/{thread}/messages?wait=0"
    response = client.post(path, json={"content": "hi"}, headers={"Idempotency-Key": "k" * 300})
    assert response.status_code == 422 and "Idempotency-Key" in response.json()["errors"]
    response = client.post(path, json={"content": "hi"}, headers={"If-Thread-Idle": "perhaps"})
    assert response.status_code == 422 and "If-Thread-Idle" in response.json()["errors"]


# -- order inside a thread ------------------------------------------------------------------------------

def _runs_by_request(thread_id: int) -> list:
    from shared.db import transaction
    from shared.models import Message, Run

    with transaction() as session:
        rows = session.execute(
            select(Message.content, Run.started_at, Run.finished_at, Run.attempts)
            .join(Run, Run.request_message_id == Message.id)
            .where(Message.thread_id == thread_id)
            .order_by(Message.seq)
        ).all()
    return rows


def test_messages_posted_while_a_run_is_active_are_answered_in_order(client):
    thread = _ai_thread(client)
    texts = ["[[latency:1]] alpha", "bravo", "[[latency:0.3]] charlie", "delta"]
    for text in texts:  # all posted while the first is still being answered
        assert client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": text}).status_code == 201

    def all_done():
        data = client.get(f"/api/v1/ai/threads/{thread}/messages").json()["data"]
        return len(data) == 8 and all(m["status"] == "completed" for m in data) and data

    messages = wait_until(all_done, timeout=30, what="four answers")
    assert [m["seq"] for m in messages] == list(range(1, 9))
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4
    for i, word in enumerate(["alpha", "bravo", "charlie", "delta"]):
        assert word in messages[2 * i]["content"]
        assert f'"{word}"' in messages[2 * i + 1]["content"], "each answer echoes its own question"
    runs = _runs_by_request(thread)
    assert len(runs) == 4
    for earlier, later in zip(runs, runs[1:]):
        # A run starts only after the previous one finished, so its history (completed messages with a
        # lower seq) already holds the previous answer.
        assert later.started_at >= earlier.finished_at, (earlier, later)


def test_if_thread_idle_refuses_instead_of_queueing(client):
    thread = _ai_thread(client)
    path = f"/api/v1/ai/threads/{thread}/messages?wait=0"
    first = client.post(path, json={"content": "[[latency:2]] busy now"})
    assert first.status_code == 201
    refused = client.post(path, json={"content": "only if idle"}, headers={"If-Thread-Idle": "true"})
    assert refused.status_code == 409, refused.text
    assert "idle" in refused.json()["message"] and refused.headers["Retry-After"] == "1"
    queued = client.post(path, json={"content": "queue me"}, headers={"If-Thread-Idle": "false"})
    assert queued.status_code == 201 and queued.json()["responseMessage"]["status"] == "queued"

    def idle():
        data = client.get(f"/api/v1/ai/threads/{thread}/messages").json()["data"]
        return all(m["status"] == "completed" for m in data)

    wait_until(idle, timeout=20, what="thread idle")
    accepted = client.post(path.replace("wait=0", "wait=10"), json={"content": "now idle"},
                           headers={"If-Thread-Idle": "true"})
    assert accepted.status_code == 201 and accepted.json()["responseMessage"]["status"] == "completed"
    contents = [m["content"] for m in client.get(f"/api/v1/ai/threads/{thread}/messages").json()["data"]]
    assert "only if idle" not in contents, "a refused message must not be stored"


@pytest.mark.parametrize("dialect", [d for d in DIALECTS if d.name != "ai-threads"], ids=lambda d: d.name)
def test_if_thread_idle_works_in_every_dialect(client, user, dialect):
    thread = dialect.create_thread(client)
    path = dialect.message_path.format(thread=thread)
    assert client.post(path, json=dialect.message_body("[[latency:2]] busy", user)).status_code == 201
    refused = client.post(path, json=dialect.message_body("if idle", user), headers={"If-Thread-Idle": "true"})
    assert_clear_error(dialect, refused, (409,))


def test_idempotent_retry_is_not_refused_by_preconditions(client):
    thread = _ai_thread(client)
    path = f"/api/v1/ai/threads/{thread}/messages?wait=0"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post(path, json={"content": "[[latency:1]] once"}, headers=key)
    again = client.post(path, json={"content": "[[latency:1]] once"}, headers={**key, "If-Thread-Idle": "true"})
    assert again.status_code == 201
    assert again.json()["createdMessage"]["id"] == first.json()["createdMessage"]["id"]
