"""delete_memory: forget the current user's memories, by id or by every word of a query."""
from __future__ import annotations

from typing import Any

from shared.services import memories
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.DELETE_MEMORY
SCHEMA = {
    "description": "Forget something about the current user: give the id of a memory, or a query; every "
    "memory containing all of the query's words is deleted.",
    "parameters": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 100},
            "query": {"type": "string", "maxLength": 500},
        },
    },
}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if bool(args.get("id")) == bool(args.get("query")):
        raise ToolError("give exactly one of 'id' or 'query'")
    deleted = memories.delete(ctx.tenant_id, ctx.user_id, memory_id=args.get("id"), query=args.get("query"))
    return {"deleted": deleted}
