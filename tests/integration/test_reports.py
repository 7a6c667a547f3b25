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


# -- moderators: /api/v1/ai/reports and flask reports -----------------------------------------------------

def file_report(client, user, text: str = "you are an idiot") -> tuple[int, dict]:
    """The owner says something abusive; the assistant reports it. Returns (thread, the report as listed)."""
    thread = new_thread(client)
    post_and_wait(client, thread, {"content": text})
    [report] = [r for r in reports.list_reports(user.tenant_id, thread_id=thread)]
    return thread, report


def test_a_moderator_lists_and_resolves_a_report(client, user, make_user, client_for):
    thread, filed = file_report(client, user)
    moderator = make_user(tenant=user.tenant, permissions=["moderator"])
    mod = client_for(moderator)
    listed = mod.get("/api/v1/ai/reports", params={"status": "open"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["meta"] == {"current_page": 1, "per_page": 20, "total": 1, "last_page": 1}
    [item] = body["data"]
    assert item["id"] == str(filed.id) and item["thread_id"] == thread and item["status"] == "open"
    assert item["reason"] == "abusive language" and item["created_by"] == "assistant"
    assert item["excerpt"] == "you are an idiot"
    assert item["resolved_at"] is None and item["resolved_by"] is None
    assert item["thread_uuid"] == client.get(f"/api/v1/ai/threads/{thread}").json()["uuid"]

    resolved = mod.post(f"/api/v1/ai/reports/{filed.id}/resolve", json={"note": "warned the user"})
    assert resolved.status_code == 200, resolved.text
    done = resolved.json()
    assert done["status"] == "resolved" and done["resolved_by"] == moderator.id
    assert done["resolution_note"] == "warned the user" and done["resolved_at"] >= item["created_at"]
    again = mod.post(f"/api/v1/ai/reports/{filed.id}/resolve", json={"note": "changed my mind"})
    assert again.status_code == 200 and again.json() == done  # the first resolution is kept
    assert mod.get("/api/v1/ai/reports", params={"status": "open"}).json()["data"] == []
    assert [r["id"] for r in mod.get("/api/v1/ai/reports?status=resolved").json()["data"]] == [str(filed.id)]


def test_reports_are_the_moderators_own_tenants_only(client, user, make_user, client_for):
    _, filed = file_report(client, user)
    elsewhere = client_for(make_user(permissions=["moderator"]))
    assert elsewhere.get("/api/v1/ai/reports").json()["data"] == []
    response = elsewhere.post(f"/api/v1/ai/reports/{filed.id}/resolve")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    # a plain user (the default role) cannot see the tenant's reports, nor resolve them
    for path, method in (("/api/v1/ai/reports", "GET"), (f"/api/v1/ai/reports/{filed.id}/resolve", "POST")):
        refused = client.request(method, path)
        assert refused.status_code == 403 and "reports." in refused.json()["message"]
    reader = client_for(make_user(tenant=user.tenant, permissions=["user", "reports.read"]))
    assert reader.get("/api/v1/ai/reports").status_code == 200
    refused = reader.post(f"/api/v1/ai/reports/{filed.id}/resolve")
    assert refused.status_code == 403 and "reports.manage" in refused.json()["message"]
    assert reports.list_reports(user.tenant_id, thread_id=filed.thread_id)[0].status == "open"


def test_bad_report_requests_are_422_in_the_dialects_format(client, user, make_user, client_for):
    mod = client_for(make_user(tenant=user.tenant, permissions=["moderator"]))
    for params in ({"status": "closed"}, {"per_page": 0}, {"page": "x"}):
        response = mod.get("/api/v1/ai/reports", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["code"] == "validation_failed" and response.json()["errors"]
    response = mod.post(f"/api/v1/ai/reports/{uuid.uuid4()}/resolve", json={"note": "x" * 1001})
    assert response.status_code == 422 and "note" in response.json()["errors"]
    assert mod.post(f"/api/v1/ai/reports/{uuid.uuid4()}/resolve").status_code == 404
    assert mod.post("/api/v1/ai/reports/not-a-uuid/resolve").status_code == 404


def test_reports_page_like_the_other_listings(client, user, make_user, client_for):
    thread = new_thread(client)
    for n in range(3):
        reports.report_thread(tenant_id=user.tenant_id, user_id=user.id, thread_id=thread, reason=f"reason {n}",
                              created_by="user")
    mod = client_for(make_user(tenant=user.tenant, permissions=["moderator"]))
    first = mod.get("/api/v1/ai/reports?per_page=2").json()
    second = mod.get("/api/v1/ai/reports?per_page=2&page=2").json()
    assert first["meta"]["total"] == 3 and first["meta"]["last_page"] == 2
    assert [r["reason"] for r in first["data"] + second["data"]] == ["reason 2", "reason 1", "reason 0"]
    assert first["data"][0]["excerpt"] == ""  # no user message before these reports


def test_the_cli_lists_and_resolves_reports(stack, client, user, make_user):
    from api import create_app

    _, filed = file_report(client, user)
    moderator = make_user(tenant=user.tenant, permissions=["moderator"])
    runner = create_app().test_cli_runner()
    listed = runner.invoke(args=["reports", "list", "--tenant", user.tenant])
    assert listed.exit_code == 0, listed.output
    assert str(filed.id) in listed.output and "open" in listed.output and "abusive language" in listed.output
    assert "you are an idiot" in listed.output
    resolved = runner.invoke(args=["reports", "resolve", str(filed.id), "--tenant", user.tenant,
                                   "--by", moderator.email, "--note", "handled"])
    assert resolved.exit_code == 0, resolved.output
    assert f"resolved by {moderator.id}" in resolved.output
    [stored] = reports.list_reports(user.tenant_id, thread_id=filed.thread_id)
    assert stored.status == "resolved" and stored.resolved_by == moderator.id and stored.resolution_note == "handled"
    assert runner.invoke(args=["reports", "list", "--tenant", user.tenant, "--status", "open"]).output.strip() in ("", "0 of 0 report(s)")
    unknown = runner.invoke(args=["reports", "resolve", str(uuid.uuid4()), "--tenant", user.tenant])
    assert unknown.exit_code == 1 and "Report not found" in unknown.output
    stranger = make_user()
    wrong = runner.invoke(args=["reports", "resolve", str(filed.id), "--tenant", user.tenant, "--by", stranger.email])
    assert wrong.exit_code == 1 and "is not a user of tenant" in wrong.output
