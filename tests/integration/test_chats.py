"""The chats dialect through the real stack: cookie login, chats, messages answered by the AI, polling,
idempotency, and the NestJS-style errors of seeds 002/003."""
from __future__ import annotations

import uuid

import httpx
import pytest

from tests.dialects import ISO_MS, LABEL, is_uuid, login, new_chat
from devtools.stack import wait_until

pytestmark = pytest.mark.core


def post(client, chat: str, user, content: str = "Hello chats!", **extra) -> httpx.Response:
    return client.post(f"/api/chats/{chat}/messages",
                       json={"content": content, "modelId": "gpt-4", "userId": user.id, **extra})


def assert_error(response: httpx.Response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status and body["error"] == error and body["message"]
    assert "Traceback" not in response.text
    return body


def test_login_sets_a_protected_session_cookie_and_returns_the_user(client_for, user):
    client = client_for()
    response = client.post("/api/auth/login", json={"email": user.email.upper(), "password": user.password})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"id": user.id, "email": user.email, "tenantId": str(user.tenant_id)}}
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # SESSION_COOKIE_SECURE=false in tests; true by default with Redis
    assert "Expires=" in cookie  # ends with the server-side session
    assert client.get("/api/chats").status_code == 200


def test_wrong_password_or_bad_body_is_rejected(client_for, user):
    client = client_for()
    assert_error(client.post("/api/auth/login", json={"email": user.email, "password": "nope"}), 401, "Unauthorized")
    assert_error(client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "x"}), 401,
                 "Unauthorized")
    body = assert_error(client.post("/api/auth/login", json={"email": user.email}), 400, "Bad Request")
    assert "password" in body["details"]
    assert "set-cookie" not in {k.lower() for k in client.post("/api/auth/login", json={}).headers}


def test_chats_are_created_listed_and_read_with_the_session(client_for, user):
    client = login(client_for, user)
    response = client.post("/api/chats", json={"title": "Research", "modelId": "gpt-4"})
    assert response.status_code == 201, response.text
    chat = response.json()["data"]
    assert set(chat) == {"id", "title", "modelId", "workflowId", "userId", "createdAt", "updatedAt"}
    assert is_uuid(chat["id"]) and chat["title"] == "Research" and chat["modelId"] == "gpt-4"
    assert chat["userId"] == user.id and chat["workflowId"] is None and ISO_MS.match(chat["createdAt"])
    assert client.get(f"/api/chats/{chat['id']}").json() == {"data": chat}
    listed = client.get("/api/chats?limit=5").json()
    assert listed["data"][0] == chat and listed["meta"] == {"total": 1, "limit": 5, "offset": 0}
    assert client.post("/api/chats", json={}).json()["data"]["title"] == ""


def test_posting_a_message_returns_the_seed_shape_with_the_answer(client_for, user):
    client = login(client_for, user)
    chat = new_chat(client, title="t")
    response = post(client, chat, user, "How can I automate my research workflow?")
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert set(data) == {"id", "chatId", "role", "content", "createdAt", "status", "citations", "response"}
    assert data["chatId"] == chat and data["role"] == "user" and data["status"] == "completed"
    assert data["content"] == "How can I automate my research workflow?" and ISO_MS.match(data["createdAt"])
    answer = data["response"]
    assert set(answer) == {"id", "chatId", "role", "content", "createdAt", "status", "citations"}
    assert answer["role"] == "assistant" and answer["chatId"] == chat and answer["status"] == "completed"
    assert answer["content"].startswith(LABEL) and is_uuid(answer["id"]) and answer["id"] != data["id"]
    assert answer["createdAt"] >= data["createdAt"] and "Location" not in response.headers

    listed = client.get(f"/api/chats/{chat}/messages").json()
    assert [m["id"] for m in listed["data"]] == [data["id"], answer["id"]] and listed["meta"]["total"] == 2
    assert client.get(f"/api/chats/{chat}/messages/{answer['id']}").json()["data"] == answer


def test_a_pending_answer_is_polled_at_location(client_for, user):
    client = login(client_for, user)
    chat = new_chat(client)
    response = client.post(f"/api/chats/{chat}/messages", headers={"Prefer": "wait=0"},
                           json={"content": "[[latency:0.5]] slow", "modelId": "gpt-4", "userId": user.id})
    assert response.status_code == 201
    pending = response.json()["data"]["response"]
    assert pending["status"] in ("queued", "in_progress") and pending["content"] == ""
    location = response.headers["Location"]
    assert location.endswith(f"/api/chats/{chat}/messages/{pending['id']}") and response.headers["Retry-After"] == "1"
    done = wait_until(lambda: (m := client.get(location).json()["data"])["status"] == "completed" and m,
                      what="the polled answer")
    assert done["id"] == pending["id"] and done["content"].startswith(LABEL) and '"slow"' in done["content"]


def test_idempotency_key_returns_the_same_two_messages(client_for, user):
    client = login(client_for, user)
    chat = new_chat(client)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"content": "only once", "modelId": "gpt-4", "userId": user.id}
    first = client.post(f"/api/chats/{chat}/messages", json=body, headers=key).json()["data"]
    again = client.post(f"/api/chats/{chat}/messages", json=body, headers=key).json()["data"]
    assert (again["id"], again["response"]["id"]) == (first["id"], first["response"]["id"])
    assert client.get(f"/api/chats/{chat}/messages").json()["meta"]["total"] == 2
    clash = client.post(f"/api/chats/{chat}/messages", json={**body, "content": "other"}, headers=key)
    assert_error(clash, 409, "Conflict")


def test_logout_ends_the_session_on_the_server(client_for, user, stack):
    client = login(client_for, user)
    chat = new_chat(client)
    copied = dict(client.cookies)  # what a thief would have kept
    assert client.post("/api/auth/logout").status_code == 204
    assert_error(client.get(f"/api/chats/{chat}"), 401, "Unauthorized")
    with httpx.Client(base_url=stack.api_url, cookies=copied) as thief:
        assert_error(thief.get(f"/api/chats/{chat}"), 401, "Unauthorized")
    assert client.post("/api/auth/logout").status_code == 204  # idempotent
    assert login(client_for, user).get(f"/api/chats/{chat}").status_code == 200  # a new login works


def test_bearer_tokens_work_too(client, user):
    chat = new_chat(client, title="by token")
    response = post(client, chat, user)
    assert response.status_code == 201 and response.json()["data"]["response"]["status"] == "completed"


def test_401_without_or_with_a_forged_session(client_for, stack, user):
    anonymous = client_for()
    for response in (anonymous.get("/api/chats"), anonymous.post("/api/chats", json={}),
                     anonymous.post(f"/api/chats/{uuid.uuid4()}/messages", json={"content": 1})):
        assert_error(response, 401, "Unauthorized")
    with httpx.Client(base_url=stack.api_url, cookies={"session": "eyJ1c2VyX2lkIjoieCJ9.forged.sig"}) as forged:
        assert_error(forged.get("/api/chats"), 401, "Unauthorized")


def test_403_for_another_users_chat_or_userid(client_for, make_user, user):
    client = login(client_for, user)
    chat = new_chat(client)
    body = assert_error(post(client, chat, user, userId="user-somebody-else"), 403, "Forbidden")
    assert "userId" in body["message"]
    neighbour = make_user(tenant=user.tenant)
    other = login(client_for, neighbour)
    assert_error(other.get(f"/api/chats/{chat}"), 403, "Forbidden")
    assert_error(post(other, chat, neighbour), 403, "Forbidden")
    assert_error(other.get(f"/api/chats/{chat}/messages"), 403, "Forbidden")


def test_404_for_missing_or_other_tenants_chats_and_400_for_malformed_ids(client_for, make_user, user):
    client = login(client_for, user)
    chat = new_chat(client)
    stranger = make_user()
    other = login(client_for, stranger)
    for response in (other.get(f"/api/chats/{chat}"), post(other, chat, stranger),
                     client.get(f"/api/chats/{uuid.uuid4()}"), post(client, str(uuid.uuid4()), user),
                     client.get(f"/api/chats/{chat}/messages/{uuid.uuid4()}")):
        assert_error(response, 404, "Not Found")
    # seed 002: "400 | Bad Request | Invalid request body or parameters" — a chatId that is not a UUID
    for response in (post(client, "not-a-uuid", user), client.get("/api/chats/12345")):
        assert_error(response, 400, "Bad Request")


@pytest.mark.parametrize("change, field", [
    ({"modelId": "no-such-model"}, "modelId"),
    ({"modelId": None}, "modelId"),
    ({"content": None}, "content"),
    ({"content": ""}, "content"),
    ({"content": "   "}, "content"),
    ({"content": "x" * 5001}, "content"),
    ({"content": "nul \u0000 byte"}, "content"),
    ({"userId": None}, "userId"),
    ({"workflowId": "not-a-uuid"}, "workflowId"),
    ({"workflowId": str(uuid.uuid4())}, "workflowId"),
    ({"extra": 1}, "extra"),
])
def test_400_names_the_bad_field(client_for, user, change, field):
    client = login(client_for, user)
    chat = new_chat(client)
    body = {"content": "hi", "modelId": "gpt-4", "userId": user.id, **change}
    body = {k: v for k, v in body.items() if v is not None}
    error = assert_error(client.post(f"/api/chats/{chat}/messages", json=body), 400, "Bad Request")
    assert field in error["details"], error


def test_400_for_malformed_json_and_bad_paging(client_for, user):
    client = login(client_for, user)
    chat = new_chat(client)
    assert_error(client.post(f"/api/chats/{chat}/messages", content=b"{nope",
                             headers={"Content-Type": "application/json"}), 400, "Bad Request")
    assert "limit" in assert_error(client.get("/api/chats?limit=0"), 400, "Bad Request")["details"]
    assert_error(client.post(f"/api/chats/{chat}/messages?wait=soon",
                             json={"content": "hi", "modelId": "gpt-4", "userId": user.id}), 400, "Bad Request")
    long_key = assert_error(client.post(f"/api/chats/{chat}/messages", headers={"Idempotency-Key": "k" * 256},
                                        json={"content": "hi", "modelId": "gpt-4", "userId": user.id}), 400, "Bad Request")
    assert "Idempotency-Key" in long_key["details"]


def test_a_workflow_of_the_tenant_is_accepted(client_for, user):
    from shared.services import workflows

    flow = workflows.create_workflow(user.tenant_id, "chats-flow", system_prompt="Be brief.", tools=[])
    client = login(client_for, user)
    chat = new_chat(client)
    response = post(client, chat, user, workflowId=str(flow.id))
    assert response.status_code == 201, response.text
    assert response.json()["data"]["response"]["status"] == "completed"


def test_login_attempts_are_rate_limited_per_email(client_for, make_user, stack):
    if stack.mode != "production":
        pytest.skip("per-process memory limits in embedded mode split the count across API workers")
    victim = make_user()
    client = client_for()
    statuses = [client.post("/api/auth/login", json={"email": victim.email, "password": "guess"}).status_code
                for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    assert client.post("/api/auth/login", json={"email": victim.email, "password": victim.password}).status_code == 429
