"""One conversation, three dialects: messages written through any of them read the same through all."""
from __future__ import annotations

import pytest

from tests.dialects import direct, login

pytestmark = pytest.mark.core


def test_the_same_conversation_reads_the_same_through_every_dialect(client, client_for, user):
    created = client.post("/api/v1/ai/threads", json={"title": "Shared"})
    assert created.status_code == 201, created.text
    integer_id, public_id = created.json()["id"], created.json()["uuid"]

    ai = client.post(f"/api/v1/ai/threads/{integer_id}/messages?wait=20", json={"content": "from ai-threads"}).json()
    chats = login(client_for, user)
    assert chats.get(f"/api/chats/{public_id}").json()["data"]["title"] == "Shared"
    chat = chats.post(f"/api/chats/{public_id}/messages?wait=20",
                      json={"content": "from chats", "modelId": "gpt-4", "userId": user.id}).json()["data"]
    v1 = client.post(f"/v1/threads/{public_id}/user_message?wait=20", json={"content": {"text": "from v1"}}).json()
    note = direct(client, public_id, "a system note", role="SYSTEM")
    assert v1["assistant_message"]["status"] == "completed" and chat["response"]["status"] == "completed"

    written = [ai["createdMessage"]["id"], ai["responseMessage"]["id"], chat["id"], chat["response"]["id"],
               v1["user_message"]["id"], v1["assistant_message"]["id"], note["id"]]

    through_ai = client.get(f"/api/v1/ai/threads/{integer_id}/messages").json()["data"]
    through_chats = chats.get(f"/api/chats/{public_id}/messages").json()["data"]
    through_v1 = list(reversed(client.get(f"/v1/threads/{public_id}/messages").json()["data"]))

    assert [m["id"] for m in through_ai] == [m["id"] for m in through_chats] == [m["id"] for m in through_v1] == written
    assert [m["seq"] for m in through_ai] == [m["sequence_number"] for m in through_v1] == list(range(1, 8))
    assert [m["role"] for m in through_ai] == [m["role"] for m in through_chats] == [
        m["role"].lower() for m in through_v1] == ["user", "assistant"] * 3 + ["system"]
    assert [m["content"] for m in through_ai] == [m["content"] for m in through_chats] == [
        m["content"]["text"] for m in through_v1]
    assert [m["content"] for m in through_ai][::2] == ["from ai-threads", "from chats", "from v1", "a system note"]
    # one clock: chats shows milliseconds of the microsecond timestamps v1 shows
    assert [m["createdAt"] for m in through_chats] == [m["created_at"][:23] + "Z" for m in through_v1]
    assert {m["thread_id"] for m in through_ai} == {integer_id}
    assert {m["chatId"] for m in through_chats} == {m["thread_id"] for m in through_v1} == {public_id}
    # the AI saw the whole history, whichever dialect wrote it
    assert [s["kind"] for s in through_v1[5]["details"]["steps"]] == ["model_call"]


def test_a_thread_created_in_v1_is_the_chat_and_the_ai_thread(client, client_for, user):
    thread = client.post("/v1/threads", json={"title": "From v1"}).json()
    chats = login(client_for, user)
    chat = chats.get(f"/api/chats/{thread['id']}").json()["data"]
    assert chat["title"] == "From v1" and chat["createdAt"] == thread["created_at"][:23] + "Z"
    [listed] = [t for t in client.get("/api/v1/ai/threads").json()["data"] if t["uuid"] == thread["id"]]
    assert client.get(f"/api/v1/ai/threads/{listed['id']}").json()["title"] == "From v1"
