"""update_context: the assistant fills in the client's form; the result is the response's updated_context."""
from __future__ import annotations

import copy
import json
from typing import Any

from shared.config import settings
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


def depth(value: Any) -> int:
    """Nesting levels of a JSON value (a scalar is 1), walked iteratively (no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_limits(context: dict[str, Any]) -> None:
    """The updated context obeys the limits client input does (api/hardening.py): at most
    MAX_CONTEXT_BYTES of JSON, and nested no deeper than a context inside a request body may be
    (MAX_JSON_DEPTH counts the body itself, one level above the context). It is stored on the thread
    and sent with every later prompt, so the model must not grow it beyond what a client could send."""
    levels, limit = depth(context), settings.max_json_depth - 1
    if levels > limit:
        raise ToolError(f"the updated context would be nested {levels} levels deep; at most {limit} are allowed")
    size = len(json.dumps(context, ensure_ascii=False, default=str).encode())
    if size > settings.max_context_bytes:
        raise ToolError(f"the updated context would be {size} bytes of JSON; at most {settings.max_context_bytes} "
                        "are allowed")


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    changes = args.get("changes")
    if not isinstance(changes, dict) or not changes:
        raise ToolError("'changes' must be a non-empty object")
    updated = merge(ctx.context or {}, changes)
    check_limits(updated)  # before anything changes: a refused update leaves the context as it was
    ctx.change_context(updated)
    return {"updated_context": ctx.context}
