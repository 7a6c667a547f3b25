"""Contract of seed 004 (v1-threads): create a message without AI, list (newest first, limit 1–100
default 20, offset, before, with_details default true), get one, ThreadMessageResponse and its
EnrichedThreadMessageContent / EnrichedCitation field by field, MessageRole values, user_message."""
from __future__ import annotations

import uuid

import pytest

from shared.services import knowledge
from tests.contract.shapes import (assert_shape, boolean, integer, iso8601, list_of, nullable, obj, one_of, string,
                                   uuid_string)
from tests.dialects import new_v1_thread

pytestmark = pytest.mark.core

CITATION = {"chunk_id": string, "quote": string, "offset": integer, "length": integer,
            "document_id": nullable(uuid_string), "document_version_id": nullable(uuid_string),
            "document_name": nullable(string), "document_version": nullable(integer),
            "path_part_id": nullable(uuid_string), "path": nullable(string)}
CONTENT = {"text": string, "is_error": boolean, "citations": list_of(obj), "references": list_of(obj)}
MESSAGE = {"id": uuid_string, "thread_id": uuid_string, "path_part_id": uuid_string, "sequence_number": integer,
           "role": one_of("USER", "ASSISTANT", "SYSTEM"), "content": obj, "details": nullable(obj),
           "parent_path_id": uuid_string, "path": string, "tenant_id": uuid_string, "created_at": iso8601,
           "updated_at": iso8601}
ADDED = {"status"}  # Threadline's addition: queued / in_progress while the AI is answering


def assert_message(message: dict, thread: str, tenant_id) -> None:
    assert_shape(message, MESSAGE, extra=ADDED, where="ThreadMessageResponse")
    assert_shape(message["content"], CONTENT, where="content")
    for citation in message["content"]["citations"]:
        assert_shape(citation, CITATION, where="EnrichedCitation")
    assert message["thread_id"] == message["parent_path_id"] == thread
    assert message["tenant_id"] == str(tenant_id)


@pytest.mark.parametrize("role", ["USER", "ASSISTANT", "SYSTEM"])
def test_create_message_without_ai_returns_201_and_the_message(client, user, role):
    thread = new_v1_thread(client)
    response = client.post(f"/v1/threads/{thread}/messages", json={"role": role, "content": {"text": f"a {role}"}})
    assert response.status_code == 201, response.text
    message = response.json()
    assert_message(message, thread, user.tenant_id)
    assert message["role"] == role and message["content"]["text"] == f"a {role}" and message["sequence_number"] == 1
    assert message["status"] == "completed"  # no AI was asked: nothing to wait for
    assert client.get(f"/v1/threads/{thread}/messages").json()["data"] == [message]  # and no answer appeared


def test_full_request_body_round_trips(client, user):
    knowledge.ingest_text("contract.md", "# Contract\n\nThe quick brown fox jumps.\n", tenant_id=user.tenant_id)
    [chunk] = knowledge.search(user.tenant_id, "quick brown fox")
    thread = new_v1_thread(client)
    message_id = str(uuid.uuid4())
    body = {"role": "ASSISTANT", "message_id": message_id,
            "details": {"steps": [{"tool": "search_docs", "output": "…"}]},
            "content": {"text": "Foxes jump.", "is_error": False, "references": [{"type": "link", "url": "https://e.x"}],
                        "citations": [{"chunk_id": chunk.chunk_id, "quote": "quick brown fox",
                                       "offset": chunk.content.index("quick brown fox"), "length": 15}]}}
    response = client.post(f"/v1/threads/{thread}/messages", json=body)
    assert response.status_code == 201, response.text
    message = response.json()
    assert_message(message, thread, user.tenant_id)
    assert message["id"] == message["path_part_id"] == message_id
    assert message["details"] == body["details"] and message["content"]["references"] == body["content"]["references"]
    [citation] = message["content"]["citations"]
    assert citation["document_id"] == chunk.document_id and citation["document_name"] == "Contract"
    assert citation["document_version_id"] == chunk.document_version_id and citation["document_version"] == 1
    assert citation["path_part_id"] == chunk.chunk_id and citation["path"]
    # "submitting the same message_id twice returns the existing message without creating a duplicate"
    again = client.post(f"/v1/threads/{thread}/messages", json=body)
    assert again.status_code == 201 and again.json() == message and again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get(f"/v1/threads/{thread}/messages").json()["data"]) == 1


def test_list_defaults_order_and_parameters(client, user):
    thread = new_v1_thread(client)
    created = [client.post(f"/v1/threads/{thread}/messages", json={"role": "USER", "content": {"text": str(i)}}).json()
               for i in range(22)]
    page = client.get(f"/v1/threads/{thread}/messages").json()
    assert list(page) == ["data"] and len(page["data"]) == 20  # default limit
    for message in page["data"]:
        assert_message(message, thread, user.tenant_id)
    assert [m["created_at"] for m in page["data"]] == sorted((m["created_at"] for m in page["data"]), reverse=True)
    assert [m["id"] for m in page["data"]] == [m["id"] for m in reversed(created)][:20]
    assert len(client.get(f"/v1/threads/{thread}/messages?limit=1").json()["data"]) == 1
    assert len(client.get(f"/v1/threads/{thread}/messages?limit=100").json()["data"]) == 22
    assert client.get(f"/v1/threads/{thread}/messages?limit=0").status_code == 422
    assert client.get(f"/v1/threads/{thread}/messages?limit=101").status_code == 422
    assert [m["id"] for m in client.get(f"/v1/threads/{thread}/messages?offset=20").json()["data"]] == [
        created[1]["id"], created[0]["id"]]
    before = created[5]["created_at"]
    older = client.get(f"/v1/threads/{thread}/messages", params={"before": before}).json()["data"]
    assert [m["id"] for m in older] == [m["id"] for m in reversed(created[:5])]


def test_with_details_defaults_to_true_on_list_and_get(client):
    thread = new_v1_thread(client)
    message = client.post(f"/v1/threads/{thread}/messages", json={
        "role": "ASSISTANT", "content": {"text": "x"}, "details": {"trace": [1, 2]}}).json()
    url = f"/v1/threads/{thread}/messages"
    assert client.get(url).json()["data"][0]["details"] == {"trace": [1, 2]}
    assert client.get(url, params={"with_details": "false"}).json()["data"][0]["details"] is None
    assert client.get(f"{url}/{message['id']}").json()["details"] == {"trace": [1, 2]}
    assert client.get(f"{url}/{message['id']}", params={"with_details": "false"}).json()["details"] is None


def test_user_message_triggers_the_ai(client, user):
    thread = new_v1_thread(client)
    response = client.post(f"/v1/threads/{thread}/user_message", json={"content": {"text": "Hello"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user_message", "assistant_message"}
    assert_message(body["user_message"], thread, user.tenant_id)
    assert_message(body["assistant_message"], thread, user.tenant_id)
    assert body["user_message"]["role"] == "USER" and body["assistant_message"]["role"] == "ASSISTANT"
    assert body["assistant_message"]["sequence_number"] == body["user_message"]["sequence_number"] + 1
    assert isinstance(body["assistant_message"]["details"]["steps"], list)  # execution step data


def test_thread_path_is_tenant_scoped(client, client_for, make_user):
    thread = new_v1_thread(client)
    stranger = client_for(make_user())
    assert stranger.get(f"/v1/threads/{thread}/messages").status_code == 404
    assert stranger.post(f"/v1/threads/{thread}/messages",
                         json={"role": "USER", "content": {"text": "x"}}).status_code == 404
