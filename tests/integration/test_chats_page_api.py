"""What the chat page needs from the chats dialect, through the real stack: who am I (GET /api/auth/me),
the model registry (GET /api/models), the tenant's workflows (GET /api/workflows), newest-first paging
of messages with a ``before`` cursor (stable while new messages arrive), and citations on the message
resource — each in the dialect's own error format when the input is wrong."""
from __future__ import annotations

import uuid

import pytest

from shared.config import settings
from shared.services import knowledge, workflows
from tests.integration.test_docs_tools import FLUX

pytestmark = pytest.mark.core


def new_chat(client) -> str:
    response = client.post("/api/chats", json={"title": "paging"})
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def add_messages(client, chat_id: str, count: int) -> list[str]:
    """Messages without the AI, through v1-threads (the same thread): fast and deterministic."""
    ids = []
    for i in range(count):
        response = client.post(f"/v1/threads/{chat_id}/messages",
                               json={"role": "USER" if i % 2 == 0 else "ASSISTANT", "content": {"text": f"m{i}"}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_me_models_and_workflows(user, client, client_for):
    assert client.get("/api/auth/me").json() == {"data": {"id": user.id, "tenantId": str(user.tenant_id)}}
    models = client.get("/api/models").json()["data"]
    assert [m["id"] for m in models] == sorted(settings.models)
    assert [m["id"] for m in models if m["default"]] == [settings.default_model_id]
    assert client.get("/api/workflows").json() == {"data": []}
    flow = workflows.create_workflow(user.tenant_id, "Support", system_prompt="Be brief.")
    assert client.get("/api/workflows").json() == {"data": [{"id": str(flow.id), "name": "Support", "modelId": None}]}
    for path in ("/api/auth/me", "/api/models", "/api/workflows"):
        response = client_for().get(path)  # no credentials: the chats dialect's 401
        assert response.status_code == 401 and response.json()["error"] == "Unauthorized", path


def test_messages_page_back_from_a_message_newest_first(client):
    chat_id = new_chat(client)
    ids = add_messages(client, chat_id, 7)
    page = client.get(f"/api/chats/{chat_id}/messages?order=desc&limit=3").json()
    assert [m["id"] for m in page["data"]] == ids[:3:-1] and page["meta"]["total"] == 7
    older = client.get(f"/api/chats/{chat_id}/messages?order=desc&limit=3&before={ids[4]}").json()
    assert [m["id"] for m in older["data"]] == [ids[3], ids[2], ids[1]] and older["meta"]["total"] == 4
    add_messages(client, chat_id, 2)  # new messages do not shift a cursor, as an offset would
    again = client.get(f"/api/chats/{chat_id}/messages?order=desc&limit=3&before={ids[4]}").json()
    assert again["data"] == older["data"]
    last = client.get(f"/api/chats/{chat_id}/messages?order=desc&limit=3&before={ids[1]}").json()
    assert [m["id"] for m in last["data"]] == [ids[0]] and last["meta"]["total"] == 1
    default = client.get(f"/api/chats/{chat_id}/messages?limit=2").json()  # unchanged: oldest first
    assert [m["id"] for m in default["data"]] == ids[:2]


@pytest.mark.parametrize("query, field", [
    ("order=sideways", "order"), ("before=not-a-uuid", "before"), (f"before={uuid.uuid4()}", "before"),
])
def test_bad_paging_is_a_400_naming_the_parameter(client, query, field):
    chat_id = new_chat(client)
    response = client.get(f"/api/chats/{chat_id}/messages?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "Bad Request" and field in body["details"], body


def test_a_cited_answer_carries_its_passages(user, client):
    knowledge.ingest_text("flux.md", FLUX.format(word="amber"), tenant_id=user.tenant_id)
    chat_id = new_chat(client)
    response = client.post(f"/api/chats/{chat_id}/messages?wait=20", json={
        "content": "How do I recalibrate the flux capacitor in Threadline?", "modelId": settings.default_model_id,
        "userId": user.id})
    assert response.status_code == 201, response.text
    answer = response.json()["data"]["response"]
    assert answer["status"] == "completed", answer
    [citation] = answer["citations"]
    assert citation["quote"] in answer["content"]
    assert citation["documentVersion"] == 1 and citation["documentName"] and citation["path"].startswith(
        "/documents/flux.md/versions/1/chunks/")
    assert response.json()["data"]["citations"] == []  # the user's message cites nothing
    listed = client.get(f"/api/chats/{chat_id}/messages").json()["data"]
    assert listed[1]["citations"] == [citation]
