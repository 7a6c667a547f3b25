"""Model output the database cannot store, through the real stack (issue 15).

The scripted model plays a model that answers with a NUL character (``[[nul]]``) or calls a tool with
``NaN`` in its arguments (``[[tool:NAME {json}]]``, read by Python's json). PostgreSQL refuses both, and
the final write used to raise outside the run's error handling: the run was retried, its tools run
again, until every attempt was used. Now the values are made storable (shared/storable.py: NUL becomes
U+FFFD, NaN becomes null) and stored once; SQLite (embedded mode) gets the same values, so the API
never answers with a NUL or a ``NaN`` that strict JSON parsers refuse.
"""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

pytestmark = pytest.mark.core


def ask(client, content: str, **body) -> dict:
    thread = client.post("/api/v1/ai/threads", json={"title": "unstorable"}).json()["id"]
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=25", json={"content": content, **body})
    assert response.status_code == 201, response.text
    answer = response.json()["responseMessage"]
    assert answer["status"] == "completed", answer
    read = client.get(f"/api/v1/ai/threads/{thread}/messages/{answer['id']}")
    assert read.status_code == 200, read.text

    def refuse(constant):
        raise AssertionError(f"the API answered with {constant}, which is not JSON")

    return json.loads(read.text, parse_constant=refuse)


def run_of(answer_id: str):
    """The run that produced the answer, and how many tool calls it recorded over all its attempts."""
    from shared.db import read
    from shared.models import Run, RunStep

    with read() as session:
        run = session.execute(select(Run.id, Run.status, Run.attempts)
                              .where(Run.response_message_id == uuid.UUID(answer_id))).one()
        tool_calls = session.scalar(select(func.count()).select_from(RunStep)
                                    .where(RunStep.run_id == run.id, RunStep.kind == "tool_call"))
    return run, tool_calls


def test_a_nul_in_the_models_text_is_stored_as_a_replacement_character_once(client):
    tag = uuid.uuid4().hex[:8]
    answer = ask(client, f"[[nul]] hello {tag}")

    assert tag in answer["content"] and answer["content"].endswith(" [\ufffd]"), answer["content"]
    assert answer["is_error"] is False
    assert all("\x00" not in (step["output"] or "") for step in answer["steps"])
    run, _ = run_of(answer["id"])
    assert (run.status, run.attempts) == ("completed", 1)


def test_nan_in_a_tools_arguments_is_stored_as_null_and_the_tool_runs_once(client):
    answer = ask(client, '[[tool:update_context {"changes": {"form": {"size": NaN, "name": "Ada"}}}]] '
                         "please fill in the form", context={"form": {"colour": "teal"}})

    assert answer["is_error"] is False
    assert answer["updated_context"] == {"form": {"colour": "teal", "size": None, "name": "Ada"}}
    [tool_step] = [s for s in answer["steps"] if s["kind"] == "tool_call"]
    assert (tool_step["name"], tool_step["status"]) == ("update_context", "completed")
    assert tool_step["arguments"] == {"changes": {"form": {"size": None, "name": "Ada"}}}
    run, tool_calls = run_of(answer["id"])
    assert (run.status, run.attempts, tool_calls) == ("completed", 1, 1)
