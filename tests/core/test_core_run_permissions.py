"""A run keeps the permissions of the credential that posted it (issue 15), in process on real PostgreSQL:
the post stores them, the claim hands them to the agent, the agent offers and recalls accordingly, and a
run stored before the column existed (NULL) gets only ai_thread_messages.create."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

from sqlalchemy import select, update

from shared import permissions
from shared.models import Run
from shared.services import memories, runs
from shared.services.messages import post_user_message
from shared.tools import LEGACY_RUN_PERMISSIONS
from worker.agent.loop import Agent, recall_memories

RUNS = Run.__table__
NARROW = frozenset({permissions.MESSAGES_CREATE})


def test_the_run_stores_and_the_claim_returns_the_posters_permissions(connection, principal, thread):
    narrow = dataclasses.replace(principal, permissions=NARROW)
    exchange = post_user_message(narrow, thread.id, content="hello")
    assert connection.scalar(select(RUNS.c.permissions).where(RUNS.c.id == exchange.run_id)) == [
        permissions.MESSAGES_CREATE]
    assert runs.claim(exchange.run_id, "w").permissions == NARROW


def test_a_run_stored_before_the_column_gets_only_the_posts_own_permission(connection, principal, thread):
    exchange = post_user_message(principal, thread.id, content="hello")
    connection.execute(update(RUNS).where(RUNS.c.id == exchange.run_id).values(permissions=None))
    job = runs.claim(exchange.run_id, "w")
    assert job.permissions == LEGACY_RUN_PERMISSIONS == NARROW


def test_the_agent_offers_recalls_and_runs_only_what_the_permissions_allow(connection, principal, thread):
    memories.save(principal.tenant_id, principal.user_id, "my favourite colour is teal")
    narrow = dataclasses.replace(principal, permissions=NARROW)
    job = runs.claim(post_user_message(narrow, thread.id, content="remember everything").run_id, "w")
    assert recall_memories(job) == []  # nothing of the memories reaches the prompt
    agent = Agent(job, lambda: True, recall_memories(job))
    offered = {schema["function"]["name"] for schema in agent.tool_schemas}
    assert not offered & {"search_memories", "save_memory", "delete_memory", "query_data"}
    assert "teal" not in json.dumps(agent.messages)
    call = SimpleNamespace(id="c1", name="search_memories", arguments='{"query": "colour"}')
    output, status, _started, arguments = agent._run_tool(call)
    assert status == "failed" and arguments == {"query": "colour"}
    assert "lacks the permission memories.read" in json.loads(output)["error"] and "teal" not in output
    full = dataclasses.replace(job, permissions=frozenset(permissions.ALL))  # the same post by a full credential
    assert recall_memories(full) == ["my favourite colour is teal"]
    assert "search_memories" in {s["function"]["name"] for s in Agent(full, lambda: True).tool_schemas}
