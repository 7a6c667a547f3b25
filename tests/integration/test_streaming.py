"""Streaming answers through the real stack (API, worker, scripted model, event log): tokens arrive as
the model produces them, any client can resume with Last-Event-ID and gets exactly what it missed,
reattaching after the end (or after the log is gone) gives the stored message, every dialect streams,
and errors before the stream keep the dialect's JSON format. The worker killed mid-stream is in
tests/faults/test_stream_crash.py."""
from __future__ import annotations

import random

import httpx
import pytest

from tests.answers import FINISHED
from tests.sse import SseEvent, collect, text_of
from devtools.stack import wait_until

pytestmark = pytest.mark.core

TOKEN_RATE = 25.0  # tokens/s: the plain answer (~30 words) takes a bit over a second
FIRST_TOKEN_DELAY = 0.3


@pytest.fixture
def slow_model(stack):
    """The scripted model streams at TOKEN_RATE after FIRST_TOKEN_DELAY for this test."""
    httpx.post(f"{stack.model_url}/_control", json={"token_rate": TOKEN_RATE, "first_token_delay": FIRST_TOKEN_DELAY})
    yield
    httpx.post(f"{stack.model_url}/_control", json={"token_rate": 0, "first_token_delay": 0})


def new_thread(client) -> dict:
    response = client.post("/api/v1/ai/threads", json={"title": "streaming"})
    assert response.status_code == 201, response.text
    return response.json()


def post_stream(client, thread: dict, content: str, **kwargs):
    return collect(client, "POST", f"/api/v1/ai/threads/{thread['id']}/messages", json={"content": content}, **kwargs)


def attach(client, thread: dict, message_id: str, after: int | None = None, **kwargs):
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    return collect(client, "GET", f"/api/v1/ai/threads/{thread['id']}/messages/{message_id}/stream",
                   headers=headers, **kwargs)


def stored(client, thread: dict, message_id: str) -> dict:
    url = f"/api/v1/ai/threads/{thread['id']}/messages/{message_id}"
    return wait_until(lambda: (m := client.get(url).json())["status"] in FINISHED and m, timeout=60,
                      what="the stored answer")


def logged(seen: list[SseEvent]) -> list[SseEvent]:
    return [e for e in seen if e.id is not None]


def test_tokens_arrive_as_the_model_produces_them(client, slow_model):
    thread = new_thread(client)
    response, seen = post_stream(client, thread, "tell me something slowly")
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"

    created = seen[0]
    assert created.type == "message.created" and created.id is None
    answer_id = created.data["responseMessage"]["id"]
    assert created.data["createdMessage"]["content"] == "tell me something slowly"
    assert created.data["responseMessage"]["status"] in ("queued", "in_progress")

    events = logged(seen)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "event ids strictly increase"
    assert [e.type for e in events[:3]] == ["run.queued", "run.started", "step.started"]
    assert events[0].data["message_id"] == answer_id and events[1].data["attempt"] == 1
    assert events[-1].type == "message.completed" and events[-1] is seen[-1]

    deltas = [e for e in events if e.type == "message.delta"]
    assert len(deltas) > 3, "the answer came in pieces"
    assert deltas[-1].at - deltas[0].at > 0.5, "…spread over the time the model took, not all at the end"
    assert deltas[-1].at < events[-1].at + 1e-9

    final = events[-1].data
    assert final["id"] == answer_id and final["status"] == "completed" and final["role"] == "assistant"
    assert text_of(seen) == final["content"]
    assert stored(client, thread, answer_id) == final, "the stream ends with the stored message, unchanged"
    steps = [e for e in events if e.type.startswith("step.")]
    assert [(e.type, e.data["kind"]) for e in steps] == [("step.started", "model_call"), ("step.completed", "model_call")]
    assert steps[1].data["status"] == "completed" and steps[1].data["output"]


def test_a_client_that_disconnects_resumes_with_exactly_what_it_missed(client, slow_model):
    rng = random.Random(12)
    thread = new_thread(client)
    k = rng.randint(4, 8)  # the preface, the run's first events and a few deltas
    response, first = post_stream(client, thread, "a long answer to resume", limit=k)
    assert response.status_code == 201 and len(first) == k
    answer_id = first[0].data["responseMessage"]["id"]
    last_seen = logged(first)[-1].id

    _, rest = attach(client, thread, answer_id, after=last_seen)  # live: the run is still streaming
    assert rest[-1].type == "message.completed"
    ids = [e.id for e in logged(first)] + [e.id for e in logged(rest)]
    assert ids == list(range(1, len(ids) + 1)), "no gap, no duplicate"
    assert text_of(first + rest) == rest[-1].data["content"]

    # and from any point of the finished log: exactly the suffix after it (property over random k)
    _, whole = attach(client, thread, answer_id)
    assert [e.id for e in whole] == ids
    for k in rng.sample(range(1, len(whole)), min(8, len(whole) - 1)):
        _, suffix = attach(client, thread, answer_id, after=whole[k - 1].id)
        assert suffix == whole[k:], f"resume after event {k}"
    _, by_query = collect(client, "GET", f"/api/v1/ai/threads/{thread['id']}/messages/{answer_id}/stream"
                                          f"?last_event_id={whole[-2].id}")
    assert by_query == whole[-1:]


def test_reattaching_after_the_end_gives_the_completed_message(client):
    thread = new_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread['id']}/messages?wait=20", json={"content": "done already"})
    answer = response.json()["responseMessage"]
    assert answer["status"] == "completed"

    _, replay = attach(client, thread, answer["id"])
    assert replay[0].type == "run.queued" and replay[-1].type == "message.completed"
    assert replay[-1].data == stored(client, thread, answer["id"])
    assert text_of(replay) == answer["content"]

    _, past_the_end = attach(client, thread, answer["id"], after=replay[-1].id)
    assert [(e.type, e.id) for e in past_the_end] == [("message.completed", None)]
    assert past_the_end[0].data == replay[-1].data


def test_once_the_log_is_gone_the_stream_is_the_stored_message(stack, client):
    from shared import events

    thread = new_thread(client)
    answer = client.post(f"/api/v1/ai/threads/{thread['id']}/messages?wait=20", json={"content": "expire me"}).json()[
        "responseMessage"]
    run_id = attach(client, thread, answer["id"])[1][0].data["run_id"]
    forget_log(events.event_log(), run_id)

    _, seen = attach(client, thread, answer["id"], after=3)
    assert [(e.type, e.id) for e in seen] == [("message.completed", None)]
    assert seen[0].data == stored(client, thread, answer["id"])


def forget_log(event_log, run_id: str) -> None:
    """As if the log had expired: the Redis key, or the run's rows of the table."""
    if hasattr(event_log, "key"):
        event_log._writer.delete(event_log.key(run_id))
        return
    import uuid

    from sqlalchemy import delete

    from shared.db import transaction

    with transaction() as session:
        session.execute(delete(event_log.table).where(event_log.table.c.run_id == uuid.UUID(run_id)))


def test_attaching_before_the_run_starts_waits_for_it(client, slow_model):
    thread = new_thread(client)
    url = f"/api/v1/ai/threads/{thread['id']}/messages?wait=0"
    client.post(url, json={"content": "first, slowly"})
    second = client.post(url, json={"content": "second, waits its turn"}).json()["responseMessage"]
    assert second["status"] == "queued"  # the thread answers in order

    _, seen = attach(client, thread, second["id"])
    assert [e.type for e in seen[:2]] == ["run.queued", "run.started"]
    assert seen[-1].type == "message.completed" and text_of(seen) == seen[-1].data["content"]
    assert "second, waits its turn" in seen[-1].data["content"]


def test_a_disconnect_does_not_cancel_the_run(client, slow_model):
    thread = new_thread(client)
    _, seen = post_stream(client, thread, "hang up on me", limit=3)  # preface, run.queued, run.started
    answer = stored(client, thread, seen[0].data["responseMessage"]["id"])
    assert answer["status"] == "completed" and "hang up on me" in answer["content"]


def test_tool_steps_are_streamed_with_name_arguments_and_output(client):
    thread = new_thread(client)
    _, seen = post_stream(client, thread, "Remember that my favourite colour is teal.")
    steps = [(e.type, e.data["kind"], e.data["name"]) for e in seen if e.type.startswith("step.")]
    assert steps[:4] == [("step.started", "model_call", "threadline-dev"), ("step.completed", "model_call", "threadline-dev"),
                         ("step.started", "tool_call", "save_memory"), ("step.completed", "tool_call", "save_memory")]
    tool_done = next(e for e in seen if e.type == "step.completed" and e.data["kind"] == "tool_call")
    assert "teal" in str(tool_done.data["arguments"]) and tool_done.data["status"] == "completed"
    assert tool_done.data["output"]
    assert seen[-1].type == "message.completed" and text_of(seen) == seen[-1].data["content"]
    # The stream's end (streams.stored_answer, one read) is the message exactly as GET renders it,
    # its steps included, in order.
    assert seen[-1].data == stored(client, thread, seen[0].data["responseMessage"]["id"])


def test_the_chats_dialect_streams_in_its_own_shape(client, user):
    chat = new_thread(client)["uuid"]
    response, seen = collect(client, "POST", f"/api/chats/{chat}/messages",
                             json={"content": "stream a chat", "modelId": "gpt-4", "userId": user.id})
    assert response.status_code == 201
    assert seen[0].type == "message.created" and seen[0].data["data"]["response"]["chatId"] == chat
    final = seen[-1]
    assert final.type == "message.completed" and final.data["chatId"] == chat and "createdAt" in final.data
    assert text_of(seen) == final.data["content"]
    _, again = collect(client, "GET", f"/api/chats/{chat}/messages/{final.data['id']}/stream",
                       headers={"Last-Event-ID": str(final.id - 1)})
    assert again == [final]


def test_the_v1_threads_dialect_streams_in_its_own_shape(client):
    thread = client.post("/v1/threads", json={"title": "v1 stream"}).json()["id"]
    response, seen = collect(client, "POST", f"/v1/threads/{thread}/user_message", json={"content": {"text": "stream v1"}})
    assert response.status_code == 201
    assert seen[0].type == "message.created" and seen[0].data["assistant_message"]["role"] == "ASSISTANT"
    final = seen[-1]
    assert final.type == "message.completed" and final.data["thread_id"] == thread
    assert text_of(seen) == final.data["content"]["text"] and final.data["details"]["steps"]
    _, again = collect(client, "GET", f"/v1/threads/{thread}/messages/{final.data['id']}/stream",
                       params={"last_event_id": final.id - 1})
    assert again == [final]
    # a message no run produced streams as itself
    user_message = seen[0].data["user_message"]["id"]
    _, itself = collect(client, "GET", f"/v1/threads/{thread}/messages/{user_message}/stream")
    assert [(e.type, e.data["id"]) for e in itself] == [("message.completed", user_message)]


def test_errors_before_the_stream_are_the_dialects_json(client, user, client_for, make_user):
    thread = new_thread(client)
    answer = client.post(f"/api/v1/ai/threads/{thread['id']}/messages?wait=20", json={"content": "x"}).json()[
        "responseMessage"]["id"]
    missing = "00000000-0000-4000-8000-000000000000"
    ai = f"/api/v1/ai/threads/{thread['id']}/messages"
    chats, v1 = f"/api/chats/{thread['uuid']}/messages", f"/v1/threads/{thread['uuid']}/messages"
    sse = {"Accept": "text/event-stream"}

    def get(c, url, **headers):
        response = c.get(url, headers={**sse, **headers})
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response

    assert get(client, f"{ai}/{missing}/stream").json() == {"code": "not_found", "message": "Message not found."}
    assert get(client, f"{chats}/{missing}/stream").json()["statusCode"] == 404
    assert get(client, f"{v1}/{missing}/stream").json() == {"detail": "Message not found."}

    anonymous = client_for()
    assert get(anonymous, f"{ai}/{answer}/stream").status_code == 401
    assert get(anonymous, f"{chats}/{answer}/stream").json()["statusCode"] == 401
    assert get(anonymous, f"{v1}/{answer}/stream").status_code == 401

    bad = get(client, f"{ai}/{answer}/stream", **{"Last-Event-ID": "seven"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["errors"]
    assert get(client, f"{chats}/{answer}/stream?last_event_id=-1").json()["statusCode"] == 400
    assert get(client, f"{v1}/{answer}/stream", **{"Last-Event-ID": "1.5"}).json()["detail"][0]["loc"] == [
        "header", "Last-Event-ID"]

    stranger = client_for(make_user(tenant=user.tenant))  # same tenant, another user
    assert get(stranger, f"{ai}/{answer}/stream").status_code == 403
    outsider = client_for(make_user())  # another tenant: the thread does not exist for them
    assert get(outsider, f"{v1}/{answer}/stream").status_code == 404

