"""The agent's tools: one module per tool (NAME, SCHEMA, run), registered under the names of
``shared.tools.ToolName``, the list workflows validate against. ``base`` holds ToolContext, ToolError
and the Tool protocol."""
from __future__ import annotations

from typing import Any

from shared.errors import ThreadlineError
from shared.tools import ToolName
from worker.tools import (
    context, delete_memory, query_data, read_doc, read_web_page, report_conversation, save_memory, search_docs,
    search_memories, web_search,
)
from worker.tools.arguments import check
from worker.tools.base import Tool, ToolContext, ToolError

__all__ = ["REGISTRY", "Tool", "ToolContext", "ToolError", "available", "dispatch", "schema"]

_MODULES: tuple[Tool, ...] = (context, search_docs, read_doc, save_memory, search_memories, delete_memory,
                              web_search, read_web_page, query_data, report_conversation)
REGISTRY: dict[str, Tool] = {module.NAME: module for module in _MODULES}
if set(REGISTRY) != set(ToolName) or len(REGISTRY) != len(_MODULES):  # fail at worker start, not mid-run
    raise RuntimeError(f"worker/tools registers {sorted(REGISTRY)}; shared.tools.ToolName lists {sorted(ToolName)}")


def available(allowed: list[str] | None) -> list[Tool]:
    """The tools offered to the model: those the workflow allows, less web_search when no search
    provider is configured (a tool that can only fail would waste a model call)."""
    return [m for name, m in REGISTRY.items()
            if (allowed is None or name in allowed) and (name != web_search.NAME or web_search.configured())]


def dispatch(module: Tool, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Run a tool after checking its arguments against its own JSON schema (unknown keys, identity
    keys such as user_id, types, lengths): every tool gets the same checks in one place. A service's
    ThreadlineError (a limit, a missing row) becomes a ToolError here, once, for every tool."""
    try:
        return module.run(check(args, module.SCHEMA), ctx)
    except ThreadlineError as exc:
        raise ToolError(exc.message) from None


def schema(module: Tool) -> dict[str, Any]:
    return {"type": "function", "function": {"name": module.NAME, **module.SCHEMA}}
