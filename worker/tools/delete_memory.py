"""delete_memory: forget the current user's memories, by id or by every word of a query."""
from __future__ import annotations

from typing import Any

from shared.errors import ThreadlineError
from shared.services import memories

NAME = "delete_memory"
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


def run(args: dict[str, Any], ctx) -> dict[str, Any]:
    from worker.tools import ToolError

    if bool(args.get("id")) == bool(args.get("query")):
        raise ToolError("give exactly one of 'id' or 'query'")
    try:
        deleted = memories.delete(ctx.tenant_id, ctx.user_id, memory_id=args.get("id"), query=args.get("query"))
    except ThreadlineError as exc:
        raise ToolError(exc.message) from exc
    return {"deleted": deleted}
