"""save_memory: keep a fact about the current user for later conversations."""
from __future__ import annotations

from typing import Any

from shared.services import memories
from shared.tools import ToolName
from worker.tools.base import ToolContext

NAME = ToolName.SAVE_MEMORY
SCHEMA = {
    "description": "Remember a short fact about the current user (a preference, a detail they asked you to "
    "keep) for their future conversations. One fact per call, in a sentence.",
    "parameters": {
        "type": "object",
        "properties": {"content": {"type": "string", "description": "The fact, e.g. 'My favourite colour is teal'."}},
        "required": ["content"],
    },
}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    saved = memories.save(ctx.tenant_id, ctx.user_id, args["content"], source_thread_id=ctx.thread_id)
    return {"saved": saved.as_dict()}
