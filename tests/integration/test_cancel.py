"""Cancel and the thread-busy policies through the real stack (API, worker, scripted model, event log):
an answer stopped while queued, while the model streams and after a tool ran, a client waiting on its
post answered at once, the 409 for a finished answer in each dialect's format, and interrupt and
rollback followed by a listing in every dialect. Marked ``core``: the same tests run in embedded mode
(``THREADLINE_TEST_MODE=embedded``), where the worker learns of a cancel from its 0.1 s recheck."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import httpx
import pytest

from devtools.stack import wait_until
from tests.sse import collect, events

pytestmark = pytest.mark.core

TOKEN_RATE = 20.0  # tokens/s: a ~30-word answer takes about 1.5 s
FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture
def slow_model(stack):
    httpx.post(f"{stack.model_url}/_control", json={"token_rate": TOKEN_RATE, "first_token_delay": 0})
    yield
    httpx.post(f"{stack.model_url}/_control", json={"token_rate": 0, "first_token_delay": 0})


@dataclass
class Dialect:
    name: str
    create: Callable  # client → thread id
    post: str  # path of the post-for-an-answer
    body: Callable  # (text, user) → JSON body
    ids: Callable  # post's JSON → (user message id, response message id)
    message: str  # path of one message
    unwrap: Callable  # cancel/GET JSON → the message resource
    listing: str
    page: Callable  # listing JSON → messages in conversation order
    text: Callable  # message resource → its text
    seq: Callable | None  # message resource → its seq (None: the dialect does not show it)


DIALECTS = [
    Dialect("ai-threads", lambda c: c.post("/api/v1/ai/threads", json={}).json()["id"],
            "/api/v1/ai/threads/{t}/messages", lambda text, user: {"content": text},
            lambda b: (b["createdMessage"]["id"], b["responseMessage"]["id"]),
            "/api/v1/ai/threads/{t}/messages/{m}", lambda b: b,
            "/api/v1/ai/threads/{t}/messages?per_page=100", lambda b: b["data"],
            lambda m: m["content"], lambda m: m["seq"]),
    Dialect("chats", lambda c: c.post("/api/chats", json={"title": "cancel"}).json()["data"]["id"],
            "/api/chats/{t}/messages", lambda text, user: {"content": text, "userId": user.id, "modelId": "threadline-dev"},
            lambda b: (b["data"]["id"], b["data"]["response"]["id"]),
            "/api/chats/{t}/messages/{m}", lambda b: b["data"],
            "/api/chats/{t}/messages?limit=100", lambda b: b["data"],
            lambda m: m["content"], None),
    Dialect("v1-threads", lambda c: c.post("/v1/threads", json={}).json()["id"],
            "/v1/threads/{t}/user_message", lambda text, user: {"content": {"text": text}},
            lambda b: (b["user_message"]["id"], b["assistant_message"]["id"]),
            "/v1/threads/{t}/messages/{m}", lambda b: b,
            "/v1/threads/{t}/messages?limit=100&with_details=true", lambda b: list(reversed(b["data"])),
            lambda m: m["content"]["text"], lambda m: m["sequence_number"]),
]
BY_NAME = {d.name: d for d in DIALECTS}


def post(client, d: Dialect, thread, text, user, wait=0, headers=None):
    response = client.post(d.post.format(t=thread) + f"?wait={wait}", json=d.body(text, user), headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()


def cancel(client, d: Dialect, thread, message_id):
    return client.post(d.message.format(t=thread, m=message_id) + "/cancel")


def message(client, d: Dialect, thread, message_id):
    return d.unwrap(client.get(d.message.format(t=thread, m=message_id)).json())


def wait_streaming(client, d: Dialect, thread, message_id, min_chars=1):
    """Until the answer is in progress and has streamed some text (read from its event stream)."""
    wait_until(lambda: message(client, d, thread, message_id)["status"] == "in_progress", timeout=20,
               what="the run to start")
    with client.stream("GET", d.message.format(t=thread, m=message_id) + "/stream",
                       headers={"Accept": "text/event-stream"}) as response:
        for event in events(response):
            if event.type == "message.delta":
                return
            assert event.type not in ("message.completed", "run.failed", "run.cancelled"), event.type
    raise AssertionError("the stream ended without text")


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
def test_cancel_while_the_model_streams_keeps_the_partial_text(client, user, slow_model, d):
    thread = d.create(client)
    _, answer = d.ids(post(client, d, thread, "tell me a long story please", user))
    wait_streaming(client, d, thread, answer)
    started = time.monotonic()
    response = cancel(client, d, thread, answer)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    stopped = d.unwrap(response.json())
    assert stopped["status"] == "cancelled" and stopped["id"] == answer
    assert took < 1.5, f"cancel took {took:.3f}s"  # the goal is 0.5 s; this machine is shared and loaded
    partial = d.text(stopped)
    assert partial, "the text streamed before the cancel is kept"
    time.sleep(0.5)  # the model would have gone on for another second: nothing is appended after the cancel
    assert d.text(message(client, d, thread, answer)) == partial
    again = cancel(client, d, thread, answer)  # idempotent
    assert again.status_code == 200 and d.unwrap(again.json())["status"] == "cancelled"


def test_the_stream_ends_with_run_cancelled_and_the_text_matches(client, user, slow_model):
    d = BY_NAME["ai-threads"]
    thread = d.create(client)
    seen: list = []

    def read_stream():
        with client.stream("POST", d.post.format(t=thread), json={"content": "a long story, slowly"},
                           headers={"Accept": "text/event-stream"}) as response:
            for event in events(response):
                seen.append(event)

    streaming = threading.Thread(target=read_stream)
    streaming.start()
    answer = wait_until(lambda: seen and seen[0].data["responseMessage"]["id"], timeout=20, what="message.created")
    wait_until(lambda: any(e.type == "message.delta" for e in seen), timeout=20, what="the first delta")
    requested = time.monotonic()
    stopped = cancel(client, d, thread, answer).json()
    streaming.join(timeout=10)
    assert not streaming.is_alive() and seen[-1].type == "run.cancelled"
    assert seen[-1].at - requested < 1.5
    assert seen[-1].data["message"]["status"] == "cancelled"
    streamed = "".join(e.data["text"] for e in seen if e.type == "message.delta")
    assert streamed.startswith(stopped["content"]) or stopped["content"].startswith(streamed)


def test_a_client_waiting_on_its_post_gets_the_cancelled_answer_at_once(client, user, slow_model):
    d = BY_NAME["chats"]
    thread = d.create(client)
    result: dict = {}

    def waiting_post():
        response = client.post(d.post.format(t=thread), json=d.body("a long story to wait for", user),
                               headers={"Prefer": "wait=30"})
        result.update(response=response, at=time.monotonic())

    poster = threading.Thread(target=waiting_post)
    poster.start()
    listing = d.listing.format(t=thread)
    answer = wait_until(lambda: next((m["id"] for m in client.get(listing).json()["data"]
                                      if m["role"] == "assistant" and m["status"] == "in_progress"), None),
                        timeout=20, what="the answer in progress")
    requested = time.monotonic()
    assert cancel(client, d, thread, answer).status_code == 200
    poster.join(timeout=10)
    assert result["response"].status_code == 201
    assert result["response"].json()["data"]["response"]["status"] == "cancelled"
    assert result["at"] - requested < 1.5


def test_a_queued_answer_never_starts_and_the_next_one_starts_at_once(client, user):
    d = BY_NAME["v1-threads"]
    thread = d.create(client)
    _, busy = d.ids(post(client, d, thread, "[[latency:1.5]] busy", user))
    _, doomed = d.ids(post(client, d, thread, "never mind", user))
    _, after = d.ids(post(client, d, thread, "and then this", user))
    response = cancel(client, d, thread, doomed)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["content"]["text"] == ""
    wait_until(lambda: message(client, d, thread, after)["status"] == "completed", timeout=20, what="the next answer")
    assert message(client, d, thread, busy)["status"] == "completed"
    assert message(client, d, thread, doomed)["details"]["steps"] == []  # it never ran


SLOW_TOOL_SECONDS = 3.0


def test_cancel_while_a_slow_tool_runs(client, user, web_ports):
    """read_web_page on a page that takes 3 s: the cancel answers at once (its grace time runs out
    and it ends the run itself), and the tool call, finished later by the worker, is still listed."""
    from tests.local_http import LocalServer, html

    slow_page = html("<p>worth the wait</p>")
    routes = {"/slow": lambda request: (time.sleep(SLOW_TOOL_SECONDS), slow_page(request))[1]}
    d = BY_NAME["ai-threads"]
    with LocalServer(routes, port=web_ports["page"]) as server:
        thread = d.create(client)
        _, answer = d.ids(post(client, d, thread, f"Please read {server.url('/slow')} and summarise it", user))
        with client.stream("GET", d.message.format(t=thread, m=answer) + "/stream",
                           headers={"Accept": "text/event-stream"}) as response:
            for event in events(response):  # until the tool call has started
                if event.type == "step.started" and event.data["kind"] == "tool_call":
                    break
        wait_until(lambda: server.seen, timeout=10, what="the tool's request")
        requested = time.monotonic()
        stopped = cancel(client, d, thread, answer)
        took = time.monotonic() - requested
        assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
        assert took < 1.5, f"cancel took {took:.3f}s while the tool ran"
        steps = wait_until(lambda: (s := message(client, d, thread, answer)["steps"]) and
                           any(x["name"] == "read_web_page" for x in s) and s,
                           timeout=SLOW_TOOL_SECONDS + 10, what="the tool's step, recorded after it finished")
    assert [x["name"] for x in steps if x["kind"] == "tool_call"] == ["read_web_page"]
    assert message(client, d, thread, answer)["status"] == "cancelled"
    assert len([x for x in steps if x["kind"] == "model_call"]) == 1, "no model call after the cancel"


def test_tool_side_effects_done_before_the_cancel_stay_listed(client, user, slow_model):
    d = BY_NAME["v1-threads"]
    thread = d.create(client)
    fact = f"my locker is number {uuid.uuid4().hex[:6]}"
    _, answer = d.ids(post(client, d, thread, '[[tool:save_memory {"content": "' + fact + '"}]] remember that', user))
    wait_streaming(client, d, thread, answer)  # the tool ran; the model's answer after it is streaming
    stopped = cancel(client, d, thread, answer).json()
    assert stopped["status"] == "cancelled"
    steps = message(client, d, thread, answer)["details"]["steps"]
    assert "save_memory" in [s["name"] for s in steps]


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
def test_cancelling_a_finished_answer_is_409_with_the_message(client, user, d):
    thread = d.create(client)
    _, answer = d.ids(post(client, d, thread, "hello", user, wait=20))
    refused = cancel(client, d, thread, answer)
    assert refused.status_code == 409
    body = refused.json()
    assert d.unwrap(body["data"])["status"] == "completed" if d.name != "chats" else body["data"]["status"] == "completed"
    assert {"ai-threads": "message", "chats": "statusCode", "v1-threads": "detail"}[d.name] in body
    missing = cancel(client, d, thread, uuid.uuid4())
    assert missing.status_code == 404


def test_cancel_path_errors_in_the_dialects_format(client, user):
    chat = BY_NAME["chats"].create(client)
    bad = client.post(f"/api/chats/{chat}/messages/not-a-uuid/cancel")
    assert bad.status_code == 400 and bad.json()["statusCode"] == 400
    assert client.post(f"/v1/threads/{uuid.uuid4()}/messages/{uuid.uuid4()}/cancel").status_code == 404


def test_only_the_owner_with_create_permission_may_cancel(client, user, make_user, client_for):
    d = BY_NAME["ai-threads"]
    thread = d.create(client)
    _, answer = d.ids(post(client, d, thread, "[[latency:1]] mine", user))
    stranger = client_for(make_user(tenant=user.tenant))
    assert cancel(stranger, d, thread, answer).status_code == 403
    reader = client_for(make_user(tenant=user.tenant, permissions=["ai_thread_messages.read"]))
    assert cancel(reader, d, thread, answer).status_code == 403


# -- double-texting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
def test_interrupt_keeps_the_partial_answer_and_answers_the_new_message(client, user, slow_model, d):
    thread = d.create(client)
    _, first = d.ids(post(client, d, thread, "tell me a long story", user))
    wait_streaming(client, d, thread, first)
    body = post(client, d, thread, "actually, something else", user, wait=30, headers={"Thread-Busy": "interrupt"})
    _, second = d.ids(body)
    wait_until(lambda: message(client, d, thread, second)["status"] == "completed", timeout=30, what="the new answer")
    listed = d.page(client.get(d.listing.format(t=thread)).json())
    assert [m["id"] for m in listed][1::2] == [first, second]
    assert listed[1]["status"] == "cancelled" and d.text(listed[1]), "the partial answer stays in the history"
    assert d.text(listed[2]) == "actually, something else"
    if d.seq:
        assert [d.seq(m) for m in listed] == [1, 2, 3, 4]


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
def test_rollback_deletes_the_active_exchange_and_keeps_seq_gapless(client, user, slow_model, d):
    thread = d.create(client)
    post(client, d, thread, "kept", user, wait=20)
    _, rolled = d.ids(post(client, d, thread, "tell me a long story", user))
    wait_streaming(client, d, thread, rolled)
    body = post(client, d, thread, "what I meant", user, wait=30, headers={"Thread-Busy": "rollback"})
    _, answer = d.ids(body)
    wait_until(lambda: message(client, d, thread, answer)["status"] == "completed", timeout=30, what="the new answer")
    listed = d.page(client.get(d.listing.format(t=thread)).json())
    assert [d.text(m) for m in listed][::2] == ["kept", "what I meant"] and len(listed) == 4
    assert rolled not in [m["id"] for m in listed]
    if d.seq:
        assert [d.seq(m) for m in listed] == [1, 2, 3, 4]
    assert client.get(d.message.format(t=thread, m=rolled)).status_code == 404


@pytest.mark.parametrize("headers", [{"Thread-Busy": "sometimes"}, {"Thread-Busy": "interrupt", "If-Thread-Idle": "true"},
                                     {"Thread-Busy": "reject", "If-Thread-Idle": "false"}])
@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
def test_bad_or_conflicting_busy_headers_are_refused_in_the_dialects_format(client, user, d, headers):
    thread = d.create(client)
    response = client.post(d.post.format(t=thread), json=d.body("hi", user), headers=headers)
    assert response.status_code == (400 if d.name == "chats" else 422), response.text
    assert "Thread-Busy" in response.text


def test_reject_is_409_and_if_thread_idle_is_its_alias(client, user):
    d = BY_NAME["ai-threads"]
    thread = d.create(client)
    post(client, d, thread, "[[latency:1.5]] busy", user)
    for headers in ({"Thread-Busy": "reject"}, {"If-Thread-Idle": "true"}, {"Thread-Busy": "reject", "If-Thread-Idle": "true"}):
        assert client.post(d.post.format(t=thread), json={"content": "no"}, headers=headers).status_code == 409


def test_cancel_latency_while_streaming(client, user, slow_model, capsys):
    """Time from the cancel request to the cancelled answer stored (the cancel's 200 comes after the
    store) and to the end of a client's stream, over 15 answers cut mid-stream. The issue's goal is
    p99 ≤ 0.5 s; asserted with slack for this shared 2-core machine, and printed."""
    d = BY_NAME["ai-threads"]
    stored, ended = [], []
    for _ in range(15):
        thread = d.create(client)
        seen: list = []

        def read_stream():
            with client.stream("POST", d.post.format(t=thread), json={"content": "a long story, slowly"},
                               headers={"Accept": "text/event-stream"}) as response:
                for event in events(response):
                    seen.append(event)

        streaming = threading.Thread(target=read_stream)
        streaming.start()
        wait_until(lambda: any(e.type == "message.delta" for e in seen), timeout=20, what="the first delta")
        answer = seen[0].data["responseMessage"]["id"]
        requested = time.monotonic()
        assert cancel(client, d, thread, answer).json()["status"] == "cancelled"
        stored.append(time.monotonic() - requested)
        streaming.join(timeout=10)
        assert seen[-1].type == "run.cancelled"
        ended.append(seen[-1].at - requested)

    def pct(values, p):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    with capsys.disabled():
        print(f"\ncancel → stored: p50 {pct(stored, 50) * 1000:.0f} ms, p99 {pct(stored, 99) * 1000:.0f} ms; "
              f"cancel → stream end: p50 {pct(ended, 50) * 1000:.0f} ms, p99 {pct(ended, 99) * 1000:.0f} ms")
    assert pct(stored, 99) < 1.0 and pct(ended, 99) < 1.0


def test_cancelling_a_direct_message_is_409_with_it(client):
    thread = BY_NAME["v1-threads"].create(client)
    created = client.post(f"/v1/threads/{thread}/messages", json={"role": "ASSISTANT", "content": {"text": "imported"}})
    refused = cancel(client, BY_NAME["v1-threads"], thread, created.json()["id"])
    assert refused.status_code == 409 and refused.json()["data"]["content"]["text"] == "imported"


def test_a_stream_of_a_rolled_back_answer_ends_with_run_cancelled(client, user, slow_model, stack):
    d = BY_NAME["ai-threads"]
    thread = d.create(client)
    _, rolled = d.ids(post(client, d, thread, "tell me a long story", user))
    wait_streaming(client, d, thread, rolled)
    seen: list = []

    def follow():
        with client.stream("GET", d.message.format(t=thread, m=rolled) + "/stream",
                           headers={"Accept": "text/event-stream"}) as response:
            seen.extend(events(response))

    follower = threading.Thread(target=follow)
    follower.start()
    post(client, d, thread, "what I meant", user, headers={"Thread-Busy": "rollback"})
    requested = time.monotonic()
    follower.join(timeout=15)
    assert seen[-1].type == "run.cancelled" and seen[-1].data["message"] is None
    if stack.mode == "production":  # Redis: ended by the event at once; embedded: by the row, within STATUS_CHECK
        assert time.monotonic() - requested < 2.0
