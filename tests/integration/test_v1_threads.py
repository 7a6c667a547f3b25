"""The v1-threads dialect through the real stack: threads, direct messages, the AI via user_message,
newest-first pages with a stable ``before`` cursor, read-time citation enrichment, FastAPI-style errors."""
from __future__ import annotations

import uuid

import pytest

from shared.services import knowledge
from tests.dialects import ISO_US, LABEL, ask_v1, direct, is_uuid, new_v1_thread
from devtools.stack import wait_until

pytestmark = pytest.mark.core

DOC = """# Flux capacitor

To recalibrate the flux capacitor in Threadline, open Settings and press Calibrate. The needle settles
within a minute; do not unplug the device while it moves.
"""


def messages(client, thread: str, **params) -> list[dict]:
    response = client.get(f"/v1/threads/{thread}/messages", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def assert_detail(response, status: int) -> object:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if status == 422:
        assert isinstance(detail, list) and detail
        assert all(set(item) == {"loc", "msg", "type"} and item["loc"] for item in detail)
    else:
        assert isinstance(detail, str) and detail
    return detail


def test_threads_are_created_listed_and_read(client, user):
    response = client.post("/v1/threads", json={"title": "Support", "model_id": "gpt-4o"})
    assert response.status_code == 201, response.text
    thread = response.json()
    assert set(thread) == {"id", "tenant_id", "user_id", "title", "model_id", "workflow_id", "created_at", "updated_at"}
    assert is_uuid(thread["id"]) and thread["tenant_id"] == str(user.tenant_id) and thread["user_id"] == user.id
    assert thread["title"] == "Support" and thread["model_id"] == "gpt-4o" and ISO_US.match(thread["created_at"])
    assert client.get(f"/v1/threads/{thread['id']}").json() == thread
    assert client.get("/v1/threads", params={"limit": 1}).json() == {"data": [thread]}
    assert [e["loc"] for e in assert_detail(client.post("/v1/threads", json={"model_id": "nope"}), 422)] == [
        ["body", "model_id"]]


def test_direct_messages_keep_role_content_and_details(client, user):
    thread = new_v1_thread(client)
    system = direct(client, thread, "You are terse.", role="SYSTEM")
    assistant = client.post(f"/v1/threads/{thread}/messages", json={
        "role": "ASSISTANT", "details": {"tool_calls": [{"name": "lookup", "ok": True}]},
        "content": {"text": "Imported answer", "is_error": True, "references": [{"kind": "url", "href": "https://x.y"}]},
    })
    assert assistant.status_code == 201, assistant.text
    assistant = assistant.json()
    assert system["role"] == "SYSTEM" and system["sequence_number"] == 1 and system["details"] is None
    assert system["content"] == {"text": "You are terse.", "is_error": False, "citations": [], "references": []}
    assert assistant["sequence_number"] == 2 and assistant["status"] == "completed"
    assert assistant["details"] == {"tool_calls": [{"name": "lookup", "ok": True}]}
    assert assistant["content"]["is_error"] is True and assistant["content"]["references"] == [
        {"kind": "url", "href": "https://x.y"}]
    assert assistant["path_part_id"] == assistant["id"] and assistant["parent_path_id"] == thread
    assert assistant["path"] == f"/threads/{thread}/messages/2" and assistant["tenant_id"] == str(user.tenant_id)
    assert assistant["created_at"] > system["created_at"] and ISO_US.match(assistant["updated_at"])
    got = client.get(f"/v1/threads/{thread}/messages/{assistant['id']}").json()
    assert got == assistant
    lean = client.get(f"/v1/threads/{thread}/messages/{assistant['id']}", params={"with_details": "false"}).json()
    assert lean["details"] is None and lean["content"] == assistant["content"]


def test_message_id_makes_direct_creation_idempotent(client):
    thread = new_v1_thread(client)
    message_id = str(uuid.uuid4())
    body = {"role": "USER", "content": {"text": "once"}, "message_id": message_id}
    first = client.post(f"/v1/threads/{thread}/messages", json=body)
    again = client.post(f"/v1/threads/{thread}/messages", json=body)
    assert (first.status_code, again.status_code) == (201, 201)  # seed 004: the existing message
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert first.json()["id"] == message_id and again.json() == first.json()
    assert len(messages(client, thread)) == 1
    changed = client.post(f"/v1/threads/{thread}/messages", json={**body, "content": {"text": "changed"}})
    assert changed.status_code == 201 and changed.json() == first.json()  # the stored one, unchanged
    elsewhere = new_v1_thread(client)
    assert_detail(client.post(f"/v1/threads/{elsewhere}/messages", json=body), 409)
    assert messages(client, elsewhere) == []


def test_user_message_runs_the_ai_and_details_carry_the_steps(client):
    thread = new_v1_thread(client)
    body = ask_v1(client, thread, "Hello v1!")
    user_message, answer = body["user_message"], body["assistant_message"]
    assert user_message["role"] == "USER" and user_message["content"]["text"] == "Hello v1!"
    assert user_message["details"] is None and user_message["sequence_number"] == 1
    assert answer["role"] == "ASSISTANT" and answer["sequence_number"] == 2
    assert answer["content"]["text"].startswith(LABEL) and answer["content"]["is_error"] is False
    details = answer["details"]
    assert details["status"] == "completed" and details["attempts"] == 1 and is_uuid(details["run_id"])
    assert [s["kind"] for s in details["steps"]] == ["model_call"] and ISO_US.match(details["steps"][0]["started_at"])
    assert [m["id"] for m in messages(client, thread)] == [answer["id"], user_message["id"]]
    assert [m["details"] for m in messages(client, thread, with_details="false")] == [None, None]


def test_a_pending_answer_is_polled_at_location(client):
    thread = new_v1_thread(client)
    response = client.post(f"/v1/threads/{thread}/user_message", headers={"Prefer": "wait=0"},
                           json={"content": {"text": "[[latency:0.5]] slow"}})
    assert response.status_code == 201, response.text
    pending = response.json()["assistant_message"]
    assert pending["status"] in ("queued", "in_progress") and pending["content"]["text"] == ""
    location = response.headers["Location"]
    assert location.endswith(f"/v1/threads/{thread}/messages/{pending['id']}") and response.headers["Retry-After"]
    done = wait_until(lambda: (m := client.get(location).json())["status"] == "completed" and m, what="answer")
    assert done["id"] == pending["id"] and done["content"]["text"].startswith(LABEL)
    assert done["details"]["steps"] and done["created_at"] == pending["created_at"]


def test_user_message_retries_with_message_id_or_idempotency_key_return_the_same_exchange(client):
    thread = new_v1_thread(client)
    message_id = str(uuid.uuid4())
    body = {"content": {"text": "retry me"}, "message_id": message_id}
    first = client.post(f"/v1/threads/{thread}/user_message", json=body)
    again = client.post(f"/v1/threads/{thread}/user_message", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["user_message"]["id"] == message_id
    assert again.json()["assistant_message"]["id"] == first.json()["assistant_message"]["id"]
    key = {"Idempotency-Key": "v1-key-1"}
    one = client.post(f"/v1/threads/{thread}/user_message", json={"content": {"text": "k"}}, headers=key).json()
    two = client.post(f"/v1/threads/{thread}/user_message", json={"content": {"text": "k"}}, headers=key).json()
    assert one["user_message"]["id"] == two["user_message"]["id"]
    assert len(messages(client, thread)) == 4
    assert_detail(client.post(f"/v1/threads/{thread}/user_message",
                              json={"content": {"text": "other"}, "message_id": message_id}), 409)
    direct_id = direct(client, thread, "plain", message_id=str(uuid.uuid4()))["id"]
    assert_detail(client.post(f"/v1/threads/{thread}/user_message",
                              json={"content": {"text": "plain"}, "message_id": direct_id}), 409)


def test_pages_are_newest_first_with_limit_and_offset(client):
    thread = new_v1_thread(client)
    sent = [direct(client, thread, f"m{i}") for i in range(5)]
    newest_first = [m["id"] for m in reversed(sent)]
    assert [m["id"] for m in messages(client, thread)] == newest_first
    assert [m["id"] for m in messages(client, thread, limit=2, offset=1)] == newest_first[1:3]
    assert messages(client, thread, offset=5) == [] and messages(client, thread, offset=1_000_000) == []
    assert [m["id"] for m in messages(client, thread, limit=100)] == newest_first
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"offset": -1}, {"before": "yesterday"},
                {"with_details": "maybe"}):
        [name] = bad
        locs = [e["loc"] for e in assert_detail(client.get(f"/v1/threads/{thread}/messages", params=bad), 422)]
        assert locs == [["query", name]], locs


def test_before_walks_back_without_skipping_while_messages_arrive(client):
    """Exchanges write two messages in one transaction; walking one message at a time still sees each
    exactly once, in order, while new messages keep arriving at the head."""
    thread = new_v1_thread(client)
    ask_v1(client, thread, "first")
    direct(client, thread, "between")
    ask_v1(client, thread, "second")
    expected = [m["id"] for m in messages(client, thread)]
    assert len(expected) == 5 and len({m["created_at"] for m in messages(client, thread)}) == 5
    seen, cursor = [], None
    while True:
        page = messages(client, thread, limit=1, **({"before": cursor} if cursor else {}))
        if not page:
            break
        seen.append(page[0]["id"])
        cursor = page[0]["created_at"]
        direct(client, thread, f"arrives after {len(seen)}")  # newer than everything paged so far
        if len(seen) == 2:
            client.post(f"/v1/threads/{thread}/user_message?wait=0", json={"content": {"text": "arrives too"}})
    assert seen == expected
    two = messages(client, thread, limit=2, before=messages(client, thread, limit=1)[0]["created_at"])
    assert [m["sequence_number"] for m in two] == sorted((m["sequence_number"] for m in two), reverse=True)


def test_before_accepts_any_utc_offset_and_naive_times_as_utc(client):
    from datetime import datetime, timedelta, timezone

    thread = new_v1_thread(client)
    sent = [direct(client, thread, f"m{i}") for i in range(3)]
    cursor = datetime.fromisoformat(sent[2]["created_at"].replace("Z", "+00:00"))
    expected = [sent[1]["id"], sent[0]["id"]]
    for form in (sent[2]["created_at"], cursor.astimezone(timezone(timedelta(hours=2))).isoformat(),
                 cursor.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat(),
                 cursor.replace(tzinfo=None).isoformat()):
        assert [m["id"] for m in messages(client, thread, before=form)] == expected, form


def test_citations_are_enriched_at_read_time(client, user, make_user):
    knowledge.ingest_text("v1-flux.md", DOC, tenant_id=user.tenant_id)
    [view] = [v for v in knowledge.search(user.tenant_id, "recalibrate flux capacitor") if v.path == "v1-flux.md"]
    stranger = make_user()
    knowledge.ingest_text("secret.md", "# Secret\n\nThe vault code is 1234.\n", tenant_id=stranger.tenant_id)
    [secret] = knowledge.search(stranger.tenant_id, "vault code")
    thread = new_v1_thread(client)
    quote = "open Settings and press Calibrate"
    missing = str(uuid.uuid4())
    created = client.post(f"/v1/threads/{thread}/messages", json={"role": "ASSISTANT", "content": {
        "text": "See the docs.", "citations": [
            {"chunk_id": view.chunk_id, "quote": quote, "offset": view.content.index(quote)},
            {"chunk_id": secret.chunk_id, "quote": "vault code", "offset": 4, "length": 10},
            {"chunk_id": missing, "quote": "gone", "offset": 0},
        ]}})
    assert created.status_code == 201, created.text
    own, foreign, gone = created.json()["content"]["citations"]
    assert own == {"chunk_id": view.chunk_id, "quote": quote, "offset": view.content.index(quote), "length": len(quote),
                   "document_id": view.document_id, "document_version_id": view.document_version_id,
                   "document_name": "Flux capacitor", "document_version": 1, "path_part_id": view.chunk_id,
                   "path": "/documents/v1-flux.md/versions/1/chunks/0"}
    for unresolved, chunk_id in ((foreign, secret.chunk_id), (gone, missing)):
        assert unresolved["chunk_id"] == chunk_id and unresolved["quote"] and unresolved["length"] >= 0
        assert all(unresolved[k] is None for k in ("document_id", "document_version_id", "document_name",
                                                   "document_version", "path_part_id", "path"))
    # read time: a renamed document shows its new name on the stored message
    knowledge.ingest_text("v1-flux.md", DOC.replace("# Flux capacitor", "# Flux capacitor (v2)"), tenant_id=user.tenant_id)
    [again] = messages(client, thread)[0]["content"]["citations"][:1]
    assert again["document_name"] == "Flux capacitor (v2)" and again["document_version"] == 1


def test_an_ai_answer_cites_the_knowledge_base(client, user):
    knowledge.ingest_text("v1-ai-flux.md", DOC, tenant_id=user.tenant_id)
    thread = new_v1_thread(client)
    answer = ask_v1(client, thread, "How do I recalibrate the flux capacitor in Threadline?")["assistant_message"]
    [citation] = answer["content"]["citations"]
    assert citation["quote"] == "To recalibrate the flux capacitor in Threadline, open Settings and press Calibrate."
    assert citation["offset"] == 0 and citation["length"] == len(citation["quote"])
    assert citation["document_name"] == "Flux capacitor" and citation["path"].startswith("/documents/v1-ai-flux.md/")
    assert [s["name"] for s in answer["details"]["steps"] if s["kind"] == "tool_call"] == ["search_docs"]


@pytest.mark.parametrize("body, loc", [
    ({}, ["body", "role"]),
    ({"role": "user", "content": {"text": "x"}}, ["body", "role"]),
    ({"role": "USER"}, ["body", "content"]),
    ({"role": "USER", "content": {}}, ["body", "content", "text"]),
    ({"role": "USER", "content": {"text": 5}}, ["body", "content", "text"]),
    ({"role": "USER", "content": {"text": "x", "citations": [{"quote": "q", "offset": 0}]}},
     ["body", "content", "citations", 0, "chunk_id"]),
    ({"role": "USER", "content": {"text": "x", "citations": [
        {"chunk_id": str(uuid.uuid4()), "quote": "abc", "offset": 0, "length": 2}]}},
     ["body", "content", "citations", 0, "length"]),
    ({"role": "USER", "content": {"text": "x"}, "message_id": "nope"}, ["body", "message_id"]),
    ({"role": "USER", "content": {"text": "x"}, "details": [1]}, ["body", "details"]),
    ({"role": "USER", "content": {"text": "x\u0000"}}, ["body", "content", "text"]),
    ({"role": "USER", "content": {"text": "x"}, "extra": 1}, ["body", "extra"]),
])
def test_422_locates_the_bad_field(client, body, loc):
    thread = new_v1_thread(client)
    detail = assert_detail(client.post(f"/v1/threads/{thread}/messages", json=body), 422)
    assert loc in [e["loc"] for e in detail], detail


def test_422_for_malformed_json_ids_and_user_message_bodies(client):
    thread = new_v1_thread(client)
    [item] = assert_detail(client.post(f"/v1/threads/{thread}/messages", content=b"{no",
                                       headers={"Content-Type": "application/json"}), 422)
    assert item["loc"] == ["body"] and item["type"] == "json_invalid"
    [item] = assert_detail(client.get("/v1/threads/not-a-uuid/messages"), 422)
    assert item["loc"] == ["path", "thread_id"] and item["type"] == "uuid_parsing"
    assert [e["loc"] for e in assert_detail(client.get(f"/v1/threads/{thread}/messages/123"), 422)] == [
        ["path", "message_id"]]
    for body, loc in (({"content": {"text": ""}}, ["body", "content", "text"]),
                      ({"content": {"text": "x" * 5001}}, ["body", "content", "text"]),
                      ({"content": {"text": "hi"}, "model_id": "nope"}, ["body", "model_id"])):
        detail = assert_detail(client.post(f"/v1/threads/{thread}/user_message", json=body), 422)
        assert {tuple(e["loc"]) for e in detail} == {tuple(loc)}, detail
    detail = assert_detail(client.post(f"/v1/threads/{thread}/user_message?wait=-1", json={"content": {"text": "x"}}), 422)
    assert [e["loc"] for e in detail] == [["query", "wait"]]
    detail = assert_detail(client.post(f"/v1/threads/{thread}/user_message", headers={"Idempotency-Key": "k" * 256},
                                       json={"content": {"text": "x"}}), 422)
    assert [e["loc"] for e in detail] == [["header", "Idempotency-Key"]]


def test_401_403_404_are_plain_details(client_for, make_user, user, client):
    thread = new_v1_thread(client)
    assert_detail(client_for().get(f"/v1/threads/{thread}"), 401)
    neighbour = client_for(make_user(tenant=user.tenant))
    assert_detail(neighbour.get(f"/v1/threads/{thread}/messages"), 403)
    assert_detail(neighbour.post(f"/v1/threads/{thread}/messages", json={"role": "USER", "content": {"text": "x"}}), 403)
    stranger = client_for(make_user())
    for response in (stranger.get(f"/v1/threads/{thread}"), stranger.get(f"/v1/threads/{thread}/messages"),
                     client.get(f"/v1/threads/{uuid.uuid4()}"),
                     client.get(f"/v1/threads/{thread}/messages/{uuid.uuid4()}"),
                     client.post(f"/v1/threads/{uuid.uuid4()}/user_message", json={"content": {"text": "x"}})):
        assert_detail(response, 404)
    reader = client_for(make_user(permissions=["ai_threads.create", "ai_threads.read", "ai_thread_messages.read"]))
    own = new_v1_thread(reader)
    assert "ai_thread_messages.create" in assert_detail(
        reader.post(f"/v1/threads/{own}/messages", json={"role": "USER", "content": {"text": "x"}}), 403)


def test_concurrent_writers_get_distinct_ordered_times_and_one_message_per_id(client):
    from concurrent.futures import ThreadPoolExecutor

    thread = new_v1_thread(client)
    shared_id = str(uuid.uuid4())

    def write(i: int):
        if i % 5 == 0:
            body = {"role": "USER", "content": {"text": "same"}, "message_id": shared_id}
            response = client.post(f"/v1/threads/{thread}/messages", json=body)
            return response.status_code, response.headers.get("Idempotent-Replayed")
        if i % 5 == 1:
            return client.post(f"/v1/threads/{thread}/user_message?wait=0", json={"content": {"text": f"q{i}"}}).status_code
        return client.post(f"/v1/threads/{thread}/messages", json={"role": "USER", "content": {"text": f"d{i}"}}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(write, range(20)))
    # one writer creates the message; the three others get it back (201, marked as a replay: seed 004)
    assert sorted(f"{s[0]} {s[1]}" for i, s in enumerate(statuses) if i % 5 == 0) == [
        "201 None", "201 true", "201 true", "201 true"]
    assert all(s == 201 for i, s in enumerate(statuses) if i % 5)
    listed = messages(client, thread, limit=100, with_details="false")
    assert len(listed) == 1 + 4 * 2 + 12
    assert [m["sequence_number"] for m in listed] == list(range(len(listed), 0, -1))
    times = [m["created_at"] for m in listed]
    assert times == sorted(set(times), reverse=True)  # strictly decreasing with the sequence: no ties
