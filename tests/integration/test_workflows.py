"""Workflows end to end: created with the CLI, used by threads and messages; a run gets the workflow's
system prompt, only its tools and its model."""
from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.services import workflows
from tests.answers import post_and_wait
from devtools.stack import ROOT

# The scripted model only ever reads the system prompt for remembered facts: a workflow prompt carrying
# such a heading is the visible proof that the run used the workflow's prompt.
PROMPT = "You are the gym assistant.\n\nRelevant memories about the user:\n- the workflow prompt is in charge"


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "api", "workflows", *args], cwd=ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=60)


def post(client, thread: int, content: str, **body) -> dict:
    answer = post_and_wait(client, thread, {"content": content, **body})
    assert answer["status"] == "completed", answer
    return answer


def test_cli_create_list_delete(stack, user):
    created = cli(stack, "create", "Gym helper", "--tenant", user.tenant, "--system-prompt", PROMPT,
                  "--tools", "query_data,read_web_page", "--model", "gpt-4o")
    assert created.returncode == 0, created.stderr
    workflow_id = uuid.UUID(created.stdout.strip())
    listed = cli(stack, "list", "--tenant", user.tenant)
    assert f"{workflow_id}  Gym helper  model=gpt-4o  query_data,read_web_page" in listed.stdout
    bad = cli(stack, "create", "Broken", "--tenant", user.tenant, "--tools", "query_data,rm_rf")
    assert bad.returncode != 0 and "Unknown tool(s): rm_rf" in bad.stderr
    bad = cli(stack, "create", "Broken", "--tenant", user.tenant, "--model", "gpt-99")
    assert bad.returncode != 0 and "Unknown model" in bad.stderr
    assert "No tenant named" in cli(stack, "list", "--tenant", "no-such-tenant").stderr
    assert cli(stack, "delete", str(workflow_id)).stdout.strip() == "deleted"
    assert "0 workflow(s)" in cli(stack, "list", "--tenant", user.tenant).stdout
    assert cli(stack, "delete", str(workflow_id)).returncode != 0


def test_a_thread_with_a_workflow_runs_with_its_prompt_tools_and_model(client, user):
    workflow = workflows.create_workflow(user.tenant_id, "Restricted", system_prompt=PROMPT, tools=["query_data"],
                                         model_id="gpt-4o")
    thread = client.post("/api/v1/ai/threads", json={"title": "wf", "workflow_id": str(workflow.id)}).json()["id"]
    form = {"form": {"name": ""}}
    answer = post(client, thread, "set the field name to Ada", context=form)
    assert [s["kind"] for s in answer["steps"]] == ["model_call"]  # update_context was not offered
    assert answer["steps"][0]["name"] == "gpt-4o"
    assert answer["updated_context"] == form and "You said" in answer["content"]
    answer = post(client, thread, "what is my favourite gym?")
    assert "From what I remember: the workflow prompt is in charge" in answer["content"]
    answer = post(client, thread, "show my threads")  # the tool it does allow still works
    assert [s["name"] for s in answer["steps"]][1] == "query_data"


def test_without_a_workflow_the_same_message_uses_the_default_tools(client):
    thread = client.post("/api/v1/ai/threads", json={"title": "plain"}).json()["id"]
    answer = post(client, thread, "set the field name to Ada", context={"form": {"name": ""}})
    assert [s["name"] for s in answer["steps"]][1] == "update_context"
    assert answer["updated_context"] == {"form": {"name": "Ada"}}
    assert "workflow prompt" not in post(client, thread, "what is my favourite gym?")["content"]


def test_a_workflow_on_one_message_and_a_workflow_with_no_tools(client, user):
    silent = workflows.create_workflow(user.tenant_id, "No tools", tools=[])
    thread = client.post("/api/v1/ai/threads", json={"title": "per message"}).json()["id"]
    answer = post(client, thread, "remember that I like rowing", workflow_id=str(silent.id))
    assert [s["kind"] for s in answer["steps"]] == ["model_call"] and "You said" in answer["content"]
    answer = post(client, thread, "remember that I like rowing")  # the next message has no workflow
    assert [s["name"] for s in answer["steps"]][1] == "save_memory"


def test_another_tenants_workflow_cannot_be_used(client, make_user):
    foreign = workflows.create_workflow(make_user().tenant_id, "Theirs", tools=None)
    response = client.post("/api/v1/ai/threads", json={"title": "x", "workflow_id": str(foreign.id)})
    assert response.status_code == 422
    thread = client.post("/api/v1/ai/threads", json={"title": "x"}).json()["id"]
    response = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "hi", "workflow_id": str(foreign.id)})
    assert response.status_code == 422
    response = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "hi", "workflow_id": "not-a-uuid"})
    assert response.status_code == 422 and "workflow_id" in response.json()["errors"]


def test_service_rules(user, make_user):
    created = workflows.create_workflow(user.tenant_id, "Unique", tools=["web_search", "web_search"])
    assert created.tools == ["web_search"]
    with pytest.raises(Conflict):
        workflows.create_workflow(user.tenant_id, "Unique")
    with pytest.raises(ValidationFailed):
        workflows.create_workflow(user.tenant_id, "  ")
    other = make_user()
    with pytest.raises(NotFound):
        workflows.get_workflow(other.tenant_id, created.id)
    with pytest.raises(NotFound):
        workflows.delete_workflow(created.id, tenant_id=other.tenant_id)
    assert [w.name for w in workflows.list_workflows(user.tenant_id)] == ["Unique"]
    workflows.delete_workflow(created.id, tenant_id=user.tenant_id)
    assert workflows.list_workflows(user.tenant_id) == []


def test_known_tool_names_match_the_worker_registry():
    from shared.tools import TOOL_NAMES
    from worker.tools import REGISTRY

    assert set(REGISTRY) == set(TOOL_NAMES) and len(REGISTRY) == len(TOOL_NAMES)
