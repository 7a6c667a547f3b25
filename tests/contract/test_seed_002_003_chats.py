"""Contract of seeds 002 and 003 (the same "Create Message" page, HTML and plain text): the example
request sent as written, the example response's shape field by field, every status of the error table."""
from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import update

from tests.contract.shapes import assert_shape, iso8601, one_of, string, uuid_string
from tests.dialects import ISO_MS, LABEL, login

pytestmark = pytest.mark.core

SEED_CHAT_ID = "550e8400-e29b-41d4-a716-446655440000"
SEED_USER_ID = "user-123"
# The seed's "Example Request" (curl --data) and "Example Body", verbatim.
EXAMPLE_REQUEST_BODY = """{
    "content": "How can I automate my research workflow?",
    "modelId": "gpt-4",
    "userId": "user-123"
  }"""
EXAMPLE_BODY = """{
  "content": "How can I automate my research workflow?",
  "modelId": "gpt-4",
  "userId": "user-123",
  "workflowId": null
}"""
EXAMPLE_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}

# "Response Fields" of the seed; ``status`` is Threadline's one addition (queued/in_progress/completed/failed).
MESSAGE = {"id": uuid_string, "chatId": one_of(SEED_CHAT_ID), "role": one_of("user", "assistant"), "content": string,
           "createdAt": lambda v: iso8601(v) and bool(ISO_MS.match(v))}
ADDED = {"status", "citations"}  # Threadline additions: the answer status, its cited passages
# The seed's "Error Responses" table: Status Code | Error.
ERRORS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


@pytest.fixture(scope="module")
def seed_user(demo_user):
    """The seed's user-123, owner of the seed's chat 550e8400-…, with a password for cookie login."""
    from shared.db import transaction
    from shared.models import Thread
    from shared.services import identity, threads

    assert demo_user.id == SEED_USER_ID
    thread = threads.create_thread(identity.load_principal(SEED_USER_ID), title="Research")
    with transaction() as session:
        session.execute(update(Thread).where(Thread.id == thread.id).values(public_id=uuid.UUID(SEED_CHAT_ID)))
    return demo_user


@pytest.fixture
def cookies(client_for, seed_user) -> httpx.Client:
    """``curl -c cookies.txt …/api/auth/login``: a client carrying the session cookie."""
    return login(client_for, seed_user)


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert_shape(response.json(), {"statusCode": one_of(status), "error": one_of(ERRORS[status]), "message": string},
                 extra={"details"}, where=str(status))


@pytest.mark.parametrize("raw", [EXAMPLE_REQUEST_BODY, EXAMPLE_BODY], ids=["example-request", "example-body"])
def test_the_example_request_gets_the_example_response(cookies, raw):
    response = cookies.post(f"/api/chats/{SEED_CHAT_ID}/messages", content=raw.encode(), headers=EXAMPLE_HEADERS)
    assert response.status_code == 201, response.text  # HTTP/1.1 201 Created
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["data"]
    data = body["data"]
    assert_shape(data, {**MESSAGE, "response": lambda v: isinstance(v, dict)}, extra=ADDED, where="data")
    assert_shape(data["response"], MESSAGE, extra=ADDED, where="data.response")
    assert data["role"] == "user" and data["content"] == "How can I automate my research workflow?"
    answer = data["response"]
    assert answer["role"] == "assistant" and answer["content"].startswith(LABEL) and answer["id"] != data["id"]
    assert (data["status"], answer["status"]) == ("completed", "completed")
    assert answer["createdAt"] >= data["createdAt"]


def test_400_bad_request(cookies):
    for body in ({"modelId": "gpt-4", "userId": SEED_USER_ID},
                 {"content": "hi", "modelId": "no-such-model", "userId": SEED_USER_ID},
                 {"content": "hi", "modelId": "gpt-4", "userId": SEED_USER_ID, "workflowId": "not-a-uuid"}):
        assert_error(cookies.post(f"/api/chats/{SEED_CHAT_ID}/messages", json=body, headers=EXAMPLE_HEADERS), 400)


def test_401_unauthorized_without_a_session(client_for, stack):
    response = client_for().post(f"/api/chats/{SEED_CHAT_ID}/messages", content=EXAMPLE_REQUEST_BODY.encode(),
                                 headers=EXAMPLE_HEADERS)
    assert_error(response, 401)


def test_403_forbidden_for_another_users_chat(client_for, make_user, seed_user, cookies):
    neighbour = make_user(tenant=seed_user.tenant)  # same tenant as user-123, not the chat's owner
    other = login(client_for, neighbour)
    response = other.post(f"/api/chats/{SEED_CHAT_ID}/messages", headers=EXAMPLE_HEADERS,
                          json={"content": "hi", "modelId": "gpt-4", "userId": neighbour.id})
    assert_error(response, 403)
    # and user-123 cannot post as somebody else
    assert_error(cookies.post(f"/api/chats/{SEED_CHAT_ID}/messages", headers=EXAMPLE_HEADERS,
                              json={"content": "hi", "modelId": "gpt-4", "userId": neighbour.id}), 403)


def test_404_not_found_when_the_chat_does_not_exist(cookies):
    response = cookies.post(f"/api/chats/{uuid.uuid4()}/messages", content=EXAMPLE_REQUEST_BODY.encode(),
                            headers=EXAMPLE_HEADERS)
    assert_error(response, 404)
