"""save_memory: keep a fact about the current user for later conversations."""
from __future__ import annotations

from typing import Any

from shared.errors import ThreadlineError
from shared.services import memories

NAME = "save_memory"
SCHEMA = {
    "description": "Remember a short fact about the current user (a preference, a detail they asked you to "
    "keep) for their future conversations. One fact per call, in a sentence.",
    "parameters": {
        "type": "object",
        "properties": {"content": {"type": "string", "description": "The fact, e.g. 'My favourite colour is teal'."}},
        "required": ["content"],
    },
}


def run(args: dict[str, Any], ctx) -> dict[str, Any]:
    from worker.tools import ToolError

    try:
        saved = memories.save(ctx.tenant_id, ctx.user_id, args["content"], source_thread_id=ctx.thread_id)
    except ThreadlineError as exc:
        raise ToolError(exc.message) from exc
    return {"saved": saved.as_dict()}
