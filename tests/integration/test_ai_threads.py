"""The ai-threads dialect through the real stack: HTTP → API → queue → worker → scripted model → back."""
from __future__ import annotations

import uuid

import pytest

from devtools.stack import wait_until

pytestmark = pytest.mark.core
LABEL = "(Threadline development model)"


def new_thread(client, **body) -> int:
    response = client.post("/api/v1/ai/threads", json=body or {"title": "t"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_post_with_wait_returns_the_completed_answer(client):
    thread = new_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=20", json={"content": "Hello!"})
    assert response.status_code == 201, response.text
    body = response.json()
    created, answer = body["createdMessage"], body["responseMessage"]
    assert created["role"] == "user" and created["content"] == "Hello!" and created["seq"] == 1
    assert created["thread_id"] == thread
    assert answer["role"] == "assistant" and answer["status"] == "completed" and answer["seq"] == 2
    assert answer["content"].startswith(LABEL) and "Hello!" in answer["content"]
    assert answer["is_error"] is False
    assert [s["kind"] for s in answer["steps"]] == ["model_call"]
    assert "Location" not in response.headers


def test_pending_answer_can_be_polled_to_completion(client):
    thread = new_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": "[[latency:0.5]] slow"})
    assert response.status_code == 201
    pending = response.json()["responseMessage"]
    assert pending["status"] in ("queued", "in_progress") and pending["content"] == ""
    location = response.headers["Location"]
    assert location.endswith(f"/api/v1/ai/threads/{thread}/messages/{pending['id']}")
    assert response.headers["Retry-After"] == "1"
    done = wait_until(lambda: (m := client.get(location).json())["status"] == "completed" and m, what="answer")
    assert done["id"] == pending["id"] and done["content"].startswith(LABEL)


def test_prefer_header_sets_the_wait(client):
    thread = new_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "hi"}, headers={"Prefer": "wait=15"})
    assert response.json()["responseMessage"]["status"] == "completed"
    response = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "[[latency:1]] hi"},
                           headers={"Prefer": "wait=0"})
    assert response.json()["responseMessage"]["status"] in ("queued", "in_progress")


def test_context_and_state_come_back_updated(client):
    thread = new_thread(client)
    sent = {"page": ["gymView", 123], "form": {"name": "", "city": "Oslo"}}
    body = client.post(f"/api/v1/ai/threads/{thread}/messages",
                       json={"content": "set the field name to Ada", "context": sent}).json()
    assert body["createdMessage"]["context"] == sent
    assert body["responseMessage"]["updated_context"] == {"page": ["gymView", 123], "form": {"name": "Ada", "city": "Oslo"}}
    assert [s["name"] for s in body["responseMessage"]["steps"]][:2] == ["threadline-dev", "update_context"]
    body = client.post(f"/api/v1/ai/threads/{thread}/messages",
                       json={"content": "set the field city to Rome", "state": {"form": {"city": ""}}}).json()
    assert body["createdMessage"]["state"] == {"form": {"city": ""}}
    assert body["responseMessage"]["updated_state"] == {"form": {"city": "Rome"}}


def test_history_is_answered_in_order_and_listed(client):
    thread = new_thread(client)
    for text in ("one", "two", "three"):
        client.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": text})
    def all_done():
        data = client.get(f"/api/v1/ai/threads/{thread}/messages").json()["data"]
        return len(data) == 6 and all(m["status"] == "completed" for m in data) and data
    messages = wait_until(all_done, what="three answers")
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5, 6]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert '"three"' in messages[5]["content"]
    page = client.get(f"/api/v1/ai/threads/{thread}/messages?per_page=4&page=2").json()
    assert [m["seq"] for m in page["data"]] == [5, 6] and page["meta"]["total"] == 6 and page["meta"]["last_page"] == 2


def test_thread_crud(client):
    thread = new_thread(client, title="Mine", context={"a": 1})
    got = client.get(f"/api/v1/ai/threads/{thread}").json()
    assert got["title"] == "Mine" and got["context"] == {"a": 1}
    assert thread in [t["id"] for t in client.get("/api/v1/ai/threads").json()["data"]]
    assert client.delete(f"/api/v1/ai/threads/{thread}").status_code == 204
    assert client.get(f"/api/v1/ai/threads/{thread}").status_code == 404


def test_idempotency_key_returns_the_same_messages(client):
    thread = new_thread(client)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "once"}, headers=key).json()
    again = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "once"}, headers=key).json()
    assert again["createdMessage"]["id"] == first["createdMessage"]["id"]
    assert again["responseMessage"]["id"] == first["responseMessage"]["id"]
    assert client.get(f"/api/v1/ai/threads/{thread}/messages").json()["meta"]["total"] == 2
    clash = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "other"}, headers=key)
    assert clash.status_code == 409 and "idempotency" in clash.json()["message"].lower()


@pytest.mark.parametrize("body, field", [
    ({}, "content"),
    ({"content": ""}, "content"),
    ({"content": "x" * 5001}, "content"),
    ({"content": 42}, "content"),
    ({"content": "hi", "context": "not an object"}, "context"),
    ({"content": "hi", "context": {"a": 1}, "state": {"b": 2}}, "state"),
    ({"content": "hi", "unknown": 1}, "unknown"),
])
def test_422_names_the_bad_field(client, body, field):
    thread = new_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread}/messages", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert field in error["errors"] and error["message"] and error["code"] == "validation_failed"


def test_422_for_malformed_json_and_bad_wait(client):
    thread = new_thread(client)
    response = client.post(f"/api/v1/ai/threads/{thread}/messages", content=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["message"]
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=soon", json={"content": "hi"})
    assert response.status_code == 422 and "wait" in response.json()["errors"]


def test_401_without_or_with_a_bad_token(client_for, stack):
    anonymous = client_for()
    for response in (anonymous.post("/api/v1/ai/threads/1/messages", json={"content": "hi"}),
                     anonymous.get("/api/v1/ai/threads"),
                     anonymous.post("/api/v1/ai/threads/1/messages", json={"content": "hi"},
                                    headers={"Authorization": "Bearer tl_not-a-real-token"})):
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized" and "Traceback" not in response.text
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_403_without_permission_or_for_another_users_thread(make_user, client_for):
    owner = make_user()
    reader = make_user(tenant=owner.tenant, permissions=["ai_threads.create", "ai_threads.read"])
    thread = new_thread(client_for(owner))
    own = new_thread(client_for(reader))
    response = client_for(reader).post(f"/api/v1/ai/threads/{own}/messages", json={"content": "hi"})
    assert response.status_code == 403 and "ai_thread_messages.create" in response.json()["message"]
    neighbour = make_user(tenant=owner.tenant)
    response = client_for(neighbour).post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "hi"})
    assert response.status_code == 403


def test_404_for_missing_or_other_tenants_thread(make_user, client_for):
    owner, stranger = make_user(), make_user()
    thread = new_thread(client_for(owner))
    for path in (f"/api/v1/ai/threads/{thread}", f"/api/v1/ai/threads/{thread}/messages",
                 "/api/v1/ai/threads/999999999", "/api/v1/ai/threads/99999999999999999999999"):
        response = client_for(stranger).get(path)
        assert response.status_code == 404, path
        assert "message" in response.json()
    response = client_for(owner).get(f"/api/v1/ai/threads/{thread}/messages/{uuid.uuid4()}")
    assert response.status_code == 404


def test_429_when_a_user_posts_too_fast(stack, user):
    import httpx

    from devtools.stack import free_port

    port = free_port()
    extra = stack._spawn("api-limited", [
        *stack.processes["api"].args[:-3], "-b", f"127.0.0.1:{port}", "api.wsgi:app"])
    extra.env = {**stack.env, "RATE_LIMIT_MESSAGES": "2/minute"}
    extra.stop(); extra.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, what="limited api")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {user.token}"}, timeout=30) as c:
            thread = new_thread(c)
            statuses = [c.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": "x"}).status_code
                        for _ in range(3)]
            assert statuses == [201, 201, 429]
            response = c.post(f"/api/v1/ai/threads/{thread}/messages?wait=0", json={"content": "x"})
            assert response.json()["code"] == "rate_limited" and int(response.headers["Retry-After"]) > 0
    finally:
        extra.stop()
