"""The agent's tools. Each module has NAME, SCHEMA (an OpenAI function) and run(args, ctx) -> dict.

Tools get the caller's identity only from ToolContext, never from the model's arguments: that is what
keeps a prompt from reaching another user's data.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from worker.tools import context as context_tool


@dataclass
class ToolContext:
    tenant_id: uuid.UUID
    user_id: str
    thread_id: int
    run_id: uuid.UUID
    context: dict[str, Any] | None
    context_changed: bool = False
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # chunk id -> chunk, for citations


class ToolError(Exception):
    """A failure the model should read (bad arguments, nothing found), not a crash."""


REGISTRY: dict[str, ModuleType] = {module.NAME: module for module in (context_tool,)}

# Knowledge base and memories (imported here, after ToolError, which they use).
from worker.tools import delete_memory, read_doc, save_memory, search_docs, search_memories  # noqa: E402

REGISTRY.update({m.NAME: m for m in (search_docs, read_doc, save_memory, search_memories, delete_memory)})

# Web, data and reporting.
from worker.tools import query_data, read_web_page, report_conversation, web_search  # noqa: E402

REGISTRY.update({m.NAME: m for m in (web_search, read_web_page, query_data, report_conversation)})


def available(allowed: list[str] | None) -> list[ModuleType]:
    return [m for name, m in REGISTRY.items() if allowed is None or name in allowed]


def dispatch(module: ModuleType, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Run a tool after checking its arguments against its own JSON schema (unknown keys, identity
    keys such as user_id, types, lengths): every tool gets the same checks in one place."""
    from worker.tools.arguments import check

    return module.run(check(args, module.SCHEMA), ctx)


def schema(module: ModuleType) -> dict[str, Any]:
    return {"type": "function", "function": {"name": module.NAME, **module.SCHEMA}}
