"""report_conversation through the real stack: the assistant files a report and the thread shows flagged."""
from __future__ import annotations

import uuid

import pytest

from shared.errors import NotFound, ValidationFailed
from shared.services import reports
from tests.answers import post_and_wait


def new_thread(client) -> int:
    return client.post("/api/v1/ai/threads", json={"title": "moderation"}).json()["id"]


def test_abuse_is_reported_and_the_thread_flagged(client, user):
    thread, calm = new_thread(client), new_thread(client)
    assert client.get(f"/api/v1/ai/threads/{thread}").json()["flagged"] is False
    answer = post_and_wait(client, thread, {"content": "you are an idiot"})
    assert answer["status"] == "completed"
    step = next(s for s in answer["steps"] if s["name"] == "report_conversation")
    assert step["status"] == "completed" and step["output"] == '{"reported": true}'
    assert "reported this conversation" in answer["content"]
    assert client.get(f"/api/v1/ai/threads/{thread}").json()["flagged"] is True
    assert client.get(f"/api/v1/ai/threads/{calm}").json()["flagged"] is False
    filed = reports.list_reports(user.tenant_id, thread_id=thread)
    assert [(r.reason, r.created_by) for r in filed] == [("abusive language", "assistant")]


def test_a_second_report_keeps_the_first_flag_time(client, user):
    thread = new_thread(client)
    for _ in range(2):
        post_and_wait(client, thread, {"content": '[[tool:report_conversation {"reason": "threats"}]] report it'})
    filed = reports.list_reports(user.tenant_id, thread_id=thread)
    assert len(filed) == 2
    from shared.db import transaction
    from shared.models import Thread

    with transaction() as session:
        flagged_at = session.get(Thread, thread).flagged_at
    assert flagged_at is not None and flagged_at <= min(r.created_at for r in filed)


def test_reports_are_scoped_to_the_threads_owner(client, user, make_user):
    thread = new_thread(client)
    stranger = make_user(tenant=user.tenant)
    with pytest.raises(NotFound):
        reports.report_thread(tenant_id=user.tenant_id, user_id=stranger.id, thread_id=thread, reason="x")
    with pytest.raises(NotFound):
        reports.report_thread(tenant_id=uuid.uuid4(), user_id=user.id, thread_id=thread, reason="x")
    with pytest.raises(ValidationFailed):
        reports.report_thread(tenant_id=user.tenant_id, user_id=user.id, thread_id=thread, reason="   ")
    assert client.get(f"/api/v1/ai/threads/{thread}").json()["flagged"] is False
    assert reports.list_reports(stranger.tenant_id, thread_id=thread) == []
