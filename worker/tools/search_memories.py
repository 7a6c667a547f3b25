"""search_memories: what the assistant remembers about the current user, matching a query."""
from __future__ import annotations

from typing import Any

from shared.services import memories
from shared.tools import ToolName
from worker.tools.base import ToolContext

NAME = ToolName.SEARCH_MEMORIES
SCHEMA = {
    "description": "Search what you remember about the current user (facts saved with save_memory).",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": 500, "description": "What to look for, e.g. 'favourite colour'."},
            "limit": {"type": "integer", "minimum": 1, "maximum": memories.MAX_SEARCH_RESULTS},
        },
        "required": ["query"],
    },
}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    found = memories.search(ctx.tenant_id, ctx.user_id, args["query"], args.get("limit") or 5)
    return {"memories": [m.as_dict() for m in found]}
