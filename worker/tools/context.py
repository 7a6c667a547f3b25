"""update_context: the assistant fills in the client's form; the result is the response's updated_context."""
from __future__ import annotations

import copy
from typing import Any

from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.UPDATE_CONTEXT
SCHEMA = {
    "description": "Change the client's form state (the context or state object the client sent), for "
    "example fill in form fields. Give only the keys to change; nested objects are merged.",
    "parameters": {
        "type": "object",
        "properties": {"changes": {"type": "object", "description": "Keys and values to set, e.g. {\"form\": {\"name\": \"Ada\"}}"}},
        "required": ["changes"],
    },
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    changes = args.get("changes")
    if not isinstance(changes, dict) or not changes:
        raise ToolError("'changes' must be a non-empty object")
    ctx.change_context(merge(ctx.context or {}, changes))
    return {"updated_context": ctx.context}
