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
from worker.tools.policy import RunGuard

__all__ = ["REGISTRY", "RunGuard", "Tool", "ToolContext", "ToolError", "available", "dispatch", "schema"]

_MODULES: tuple[Tool, ...] = (context, search_docs, read_doc, save_memory, search_memories, delete_memory,
                              web_search, read_web_page, query_data, report_conversation)
REGISTRY: dict[str, Tool] = {module.NAME: module for module in _MODULES}
if set(REGISTRY) != set(ToolName) or len(REGISTRY) != len(_MODULES):  # fail at worker start, not mid-run
    raise RuntimeError(f"worker/tools registers {sorted(REGISTRY)}; shared.tools.ToolName lists {sorted(ToolName)}")


def available(allowed: list[str] | None, guard: RunGuard | None = None) -> list[Tool]:
    """The tools to offer: those the workflow allows (``allowed``; None: all) and the run's permissions
    allow (``guard``); query_data only when at least one view is allowed; web_search only when a search
    provider is configured (a tool that can only fail would waste a model call)."""
    offered = [m for name, m in REGISTRY.items() if (allowed is None or name in allowed)
               and (guard is None or guard.offers(name))
               and (name != web_search.NAME or web_search.configured())]
    if guard is not None and query_data in offered and query_data.offered_schema(guard.permissions) is None:
        offered.remove(query_data)
    return offered


def dispatch(module: Tool, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Run a tool after two checks, in one place for every tool: the run's guard (permissions and
    the taint rule, worker/tools/policy.py) and the arguments against the tool's own JSON schema
    (unknown keys, identity keys such as user_id, types, lengths). A refusal is a ToolError and the
    tool does not run. A service's ThreadlineError (a limit, a missing row) becomes a ToolError here,
    once, for every tool."""
    if ctx.guard is not None and (why := ctx.guard.refusal(module.NAME, args)):
        raise ToolError(why)
    try:
        return module.run(check(args, module.SCHEMA), ctx)
    except ThreadlineError as exc:
        raise ToolError(exc.message) from None


def schema(module: Tool, guard: RunGuard | None = None) -> dict[str, Any]:
    """The function schema the model is shown (query_data: only the views the run's permissions allow)."""
    body = module.SCHEMA
    if module is query_data and guard is not None:
        body = query_data.offered_schema(guard.permissions) or body
    return {"type": "function", "function": {"name": module.NAME, **body}}
