"""Unit tests of the core's pure parts: request schemas, wait parsing, prompt window, form merge."""
from __future__ import annotations

import pytest
from flask import Flask
from marshmallow import ValidationError

from api.dialects.ai_threads.schemas import MessageCreate
from api.waiting import idempotency_key, requested_wait
from shared.config import settings
from shared.errors import ValidationFailed
from worker.agent.prompt import history_window
from worker.tools.context import merge


def test_message_schema_accepts_context_or_state_and_limits_content():
    assert MessageCreate().load({"content": "hi", "state": {"a": 1}})["state"] == {"a": 1}
    with pytest.raises(ValidationError) as excinfo:
        MessageCreate().load({"content": "hi", "context": {}, "state": {}})
    assert "state" in excinfo.value.messages
    with pytest.raises(ValidationError) as excinfo:
        MessageCreate().load({"content": "x" * 5001})
    assert "content" in excinfo.value.messages
    with pytest.raises(ValidationError):
        MessageCreate().load({"content": "hi", "surprise": True})


@pytest.mark.parametrize("query, header, expected", [
    ("", "", settings.wait_default),
    ("?wait=3", "", 3.0),
    ("", "respond-async, wait=7", 7.0),
    ("?wait=2", "wait=9", 2.0),
    ("?wait=100000", "", settings.wait_max),
])
def test_requested_wait(query, header, expected):
    app = Flask(__name__)
    with app.test_request_context(f"/x{query}", headers={"Prefer": header} if header else {}):
        assert requested_wait() == expected


@pytest.mark.parametrize("query", ["?wait=-1", "?wait=soon", "?wait=nan", "?wait=inf"])
def test_requested_wait_rejects_nonsense(query):
    with Flask(__name__).test_request_context(f"/x{query}"):
        with pytest.raises(ValidationFailed):
            requested_wait()


def test_idempotency_key_bounds():
    app = Flask(__name__)
    with app.test_request_context("/x", headers={"Idempotency-Key": " abc "}):
        assert idempotency_key() == "abc"
    with app.test_request_context("/x", headers={"Idempotency-Key": "k" * 256}):
        with pytest.raises(ValidationFailed):
            idempotency_key()


def test_history_window_keeps_the_newest_that_fit():
    history = [{"role": "user", "content": "a" * 400}, {"role": "assistant", "content": "b" * 400},
               {"role": "user", "content": "c" * 40}]
    assert [m["content"][0] for m in history_window(history, 120)] == ["b", "c"]
    assert history_window(history, 5) == []


def test_merge_changes_nested_form_fields_without_touching_the_rest():
    base = {"page": ["gymView", 123], "form": {"name": "", "city": "Oslo"}}
    merged = merge(base, {"form": {"name": "Ada"}})
    assert merged == {"page": ["gymView", 123], "form": {"name": "Ada", "city": "Oslo"}}
    assert base["form"]["name"] == ""  # the input is not mutated


def test_every_tool_refuses_identity_arguments_and_unknown_keys():
    """The loop checks each tool's arguments against its own schema before running it."""
    from worker.tools import REGISTRY, ToolContext, ToolError, dispatch

    ctx = ToolContext(tenant_id=None, user_id="someone", thread_id=1, run_id=None, context=None)
    for module in REGISTRY.values():
        with pytest.raises(ToolError, match="current user"):
            dispatch(module, {"user_id": "victim"}, ctx)
        with pytest.raises(ToolError, match="unexpected"):
            dispatch(module, {"surprise": 1}, ctx)


def test_update_context_marks_the_context_changed_and_other_tools_do_not():
    """Only a changed context is written back to the thread (ToolContext.context_changed)."""
    from worker.tools import ToolContext, context, dispatch

    ctx = ToolContext(tenant_id=None, user_id="someone", thread_id=1, run_id=None, context={"form": {"name": ""}})
    assert not ctx.context_changed
    assert dispatch(context, {"changes": {"form": {"name": "Ada"}}}, ctx) == {"updated_context": {"form": {"name": "Ada"}}}
    assert ctx.context_changed and ctx.context == {"form": {"name": "Ada"}}


def test_dispatch_turns_a_service_error_into_a_tool_error():
    """Tools let the services' ThreadlineError through; dispatch hands the model its message."""
    from types import SimpleNamespace

    from shared.errors import NotFound
    from worker.tools import ToolContext, ToolError, dispatch

    def run(args, ctx):
        raise NotFound("No such view.")

    tool = SimpleNamespace(NAME="probe", SCHEMA={"parameters": {"type": "object", "properties": {}}}, run=run)
    ctx = ToolContext(tenant_id=None, user_id="someone", thread_id=1, run_id=None, context=None)
    with pytest.raises(ToolError, match="^No such view.$"):
        dispatch(tool, {}, ctx)
