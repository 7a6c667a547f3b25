"""Seed fidelity: places where Threadline once answered differently from what a seed says, each pinned
by the seed's own words (issue 11, item 7).

- seed 004: "submitting the same message_id twice returns the existing message without creating a
  duplicate" — a replay is 201 with the stored message, also when the body differs;
- seed 002: an invalid ``chatId`` is "400 | Bad Request | Invalid request body or parameters";
- seed 001: "``state`` | object | No | Optional state data as JSON" and "In
  ``responseMessage.updated_state`` you may find the updated state data you initially sent": ``{}`` is
  a state, and a thread that uses state keeps answering with ``updated_state``;
- seed 000/001: "``ai_thread_messages.create`` | Create messages in your own thread" is all a client
  needs to post and then poll the answer to its own post (and nothing more);
- every dialect: missing credentials are a 401 before anything looks at the body.
"""
from __future__ import annotations

import uuid

import pytest

from shared import permissions
from shared.services import identity
from tests.answers import FINISHED
from tests.dialects import direct, new_chat, new_v1_thread
from devtools.stack import wait_until

pytestmark = pytest.mark.core


# -- seed 004: "submitting the same message_id twice returns the existing message" ----------------------

def test_v1_same_message_id_twice_returns_the_existing_message(client):
    """Seed 004: 'Use this to make the create operation idempotent — submitting the same message_id twice
    returns the existing message without creating a duplicate.' and 'Returns 201 on success.'"""
    thread = new_v1_thread(client)
    message_id = str(uuid.uuid4())
    body = {"role": "USER", "content": {"text": "the first"}, "message_id": message_id}
    first = client.post(f"/v1/threads/{thread}/messages", json=body)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    for again_body in (body, {**body, "role": "SYSTEM", "content": {"text": "a different body"}}):
        again = client.post(f"/v1/threads/{thread}/messages", json=again_body)
        assert again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()  # the existing message, unchanged
    listed = client.get(f"/v1/threads/{thread}/messages").json()["data"]
    assert [m["id"] for m in listed] == [message_id]  # no duplicate


# -- seed 002: "400 | Bad Request | Invalid request body or parameters" ---------------------------------

@pytest.mark.parametrize("chat_id", ["not-a-uuid", "550e8400-e29b-41d4-a716-44665544000Z", "123"])
def test_chats_an_invalid_chat_id_is_400(client, chat_id):
    """Seed 002: chatId is 'The chat's unique identifier (UUID)'; a bad parameter is '400 | Bad Request |
    Invalid request body or parameters' (404 is for a chat that does not exist)."""
    body = {"content": "hi", "modelId": "gpt-4", "userId": "ignored"}
    for response in (client.post(f"/api/chats/{chat_id}/messages", json=body),
                     client.get(f"/api/chats/{chat_id}"),
                     client.get(f"/api/chats/{chat_id}/messages"),
                     client.get(f"/api/chats/{chat_id}/messages/{uuid.uuid4()}")):
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["statusCode"] == 400 and error["error"] == "Bad Request"
        assert "chatId" in error["details"]
    chat = new_chat(client)
    bad_message = client.get(f"/api/chats/{chat}/messages/nope")
    assert bad_message.status_code == 400 and "messageId" in bad_message.json()["details"]
    assert client.get(f"/api/chats/{uuid.uuid4()}").status_code == 404  # a valid id of no chat: still 404


# -- seed 001: state ----------------------------------------------------------------------------------------

def _ai_thread(client) -> int:
    response = client.post("/api/v1/ai/threads", json={"title": "state"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _post(client, thread: int, body: dict) -> dict:
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=25", json=body)
    assert response.status_code == 201, response.text
    pair = response.json()
    answer = pair["responseMessage"]
    if answer["status"] not in FINISHED:
        url = f"/api/v1/ai/threads/{thread}/messages/{answer['id']}"
        pair["responseMessage"] = wait_until(lambda: (m := client.get(url).json())["status"] in FINISHED and m,
                                             timeout=90, interval=0.2, what="the answer")
    return pair


def test_ai_threads_an_empty_state_is_a_state(client):
    """Seed 001: '| state | object | No | Optional state data as JSON |' — ``{}`` is such an object, not
    an absent one: it is kept, and the answer carries it back as updated_state."""
    thread = _ai_thread(client)
    pair = _post(client, thread, {"content": "Hello!", "state": {}})
    assert pair["createdMessage"]["state"] == {}
    assert pair["responseMessage"]["updated_state"] == {}
    assert client.get(f"/api/v1/ai/threads/{thread}").json()["context"] == {}


def test_ai_threads_a_follow_up_without_state_still_gets_updated_state(client):
    """Seed 001: 'In responseMessage.updated_state you may find the updated state data you initially
    sent.' A later message of the same thread that sends no state is answered in the same terms."""
    thread = _ai_thread(client)
    first = _post(client, thread, {"content": "set the field name to Ada", "state": {"form": {"name": ""}}})
    assert first["responseMessage"]["updated_state"] == {"form": {"name": "Ada"}}
    follow_up = _post(client, thread, {"content": "Hello!"})
    assert follow_up["responseMessage"]["status"] == "completed"
    assert follow_up["responseMessage"]["updated_state"] == {"form": {"name": "Ada"}}


# -- seeds 000/001: ai_thread_messages.create is enough to poll one's own answer -----------------------------

@pytest.fixture
def poster(make_user, client_for):
    """A user whose full token sets things up, and a second token holding only the seed's permission."""
    owner = make_user()
    only_create, _ = identity.create_token(owner.email, name="create only", perms=[permissions.MESSAGES_CREATE])
    full = client_for(owner)
    limited = client_for(owner)
    limited.headers["Authorization"] = f"Bearer {only_create}"
    return owner, full, limited


def test_create_permission_alone_can_poll_its_own_answer(poster, make_user, client_for):
    """Seed 000: '| ai_thread_messages.create | Create messages in your own thread |' is the one
    permission the endpoint names, and the 201 may hold a pending answer: polling it must work."""
    owner, full, limited = poster
    thread = _ai_thread(full)
    posted = limited.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "Hello!"},
                          headers={"Prefer": "wait=0"})
    assert posted.status_code == 201, posted.text
    created, answer = posted.json()["createdMessage"], posted.json()["responseMessage"]
    location = posted.headers.get("Location") or f"/api/v1/ai/threads/{thread}/messages/{answer['id']}"

    def settled():
        """The poll's response once it is an error or a finished answer (a 403 ends the wait at once)."""
        response = limited.get(location)
        return [response] if response.status_code != 200 or response.json()["status"] in FINISHED else None

    [polled] = wait_until(settled, timeout=90, interval=0.2, what="the polled answer")
    assert polled.status_code == 200, polled.text
    assert polled.json()["id"] == answer["id"] and polled.json()["status"] == "completed"
    assert limited.get(f"/api/v1/ai/threads/{thread}/messages/{created['id']}").status_code == 200
    # ... and nothing else: not the list, not a message the post did not make
    assert limited.get(f"/api/v1/ai/threads/{thread}/messages").status_code == 403
    uuid_ = full.get(f"/api/v1/ai/threads/{thread}").json()["uuid"]
    other = direct(full, uuid_, "imported, not posted for an answer")
    for path in (f"/api/v1/ai/threads/{thread}/messages/{other['id']}", f"/v1/threads/{uuid_}/messages/{other['id']}",
                 f"/api/chats/{uuid_}/messages/{other['id']}"):
        assert limited.get(path).status_code == 403, path
    # the same poll through the other dialects
    assert limited.get(f"/v1/threads/{uuid_}/messages/{answer['id']}").status_code == 200
    assert limited.get(f"/api/chats/{uuid_}/messages/{answer['id']}").status_code == 200
    # another user's create-only token never reads it
    stranger = make_user()
    stranger_token, _ = identity.create_token(stranger.email, perms=[permissions.MESSAGES_CREATE])
    outsider = client_for()
    outsider.headers["Authorization"] = f"Bearer {stranger_token}"
    assert outsider.get(location).status_code in (403, 404)


def test_a_token_without_create_or_read_still_cannot_poll(poster):
    owner, full, _ = poster
    thread = _ai_thread(full)
    answer = full.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "Hello!"},
                       headers={"Prefer": "wait=0"}).json()["responseMessage"]
    threads_only, _ = identity.create_token(owner.email, perms=[permissions.THREADS_READ])
    full.headers["Authorization"] = f"Bearer {threads_only}"
    response = full.get(f"/api/v1/ai/threads/{thread}/messages/{answer['id']}")
    assert response.status_code == 403 and "ai_thread_messages.read" in response.json()["message"]


# -- every dialect: 401 before body validation ------------------------------------------------------------------

BAD_BODIES = [b"{not json", b'{"content": 5}', b"[]", b'{"content": "a\\u0000b"}']


@pytest.mark.parametrize("raw", BAD_BODIES, ids=["broken", "wrong-type", "array", "nul"])
@pytest.mark.parametrize("path, error_ok", [
    ("/api/v1/ai/threads/1/messages", lambda body: isinstance(body.get("message"), str) and body.get("code")),
    (f"/api/chats/{uuid.uuid4()}/messages", lambda body: body.get("statusCode") == 401),
    (f"/v1/threads/{uuid.uuid4()}/user_message", lambda body: isinstance(body.get("detail"), str)),
    (f"/v1/threads/{uuid.uuid4()}/messages", lambda body: isinstance(body.get("detail"), str)),
    ("/api/chats/not-a-uuid/messages", lambda body: body.get("statusCode") == 401),
], ids=["ai-threads", "chats", "v1-user_message", "v1-messages", "chats-bad-id"])
def test_missing_credentials_are_401_before_the_body_is_read(client_for, stack, path, error_ok, raw):
    """Seed 000/001: '| 401 | Unauthorized |'; seed 002: '| 401 | Unauthorized | Invalid or missing
    session |'. Who is calling is decided first: an anonymous bad body learns nothing about validation."""
    response = client_for().post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_ok(response.json()), response.json()
