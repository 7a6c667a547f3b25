"""The agent's tool names: the one list both sides use.

``worker/tools`` registers exactly one module per name (it refuses to import otherwise) and workflows
validate their allowed-tool lists against it. It lives in ``shared`` because the API (workflow
validation, the CLI) must know the names without importing the worker. The second half is the one
table of which permissions each tool needs (issue 15).
"""
from __future__ import annotations

from enum import StrEnum

from shared import permissions as _p


class ToolName(StrEnum):
    SEARCH_DOCS = "search_docs"
    READ_DOC = "read_doc"
    WEB_SEARCH = "web_search"
    READ_WEB_PAGE = "read_web_page"
    SAVE_MEMORY = "save_memory"
    SEARCH_MEMORIES = "search_memories"
    DELETE_MEMORY = "delete_memory"
    QUERY_DATA = "query_data"
    REPORT_CONVERSATION = "report_conversation"
    UPDATE_CONTEXT = "update_context"


TOOL_NAMES: tuple[str, ...] = tuple(name.value for name in ToolName)


# -- which credential may use which tool (issue 15) ------------------------------------------------
# The one table of what a tool needs. A run keeps the permissions of the credential that posted its
# message (runs.permissions); the agent offers the model only the tools whose permissions that set
# holds, and worker/tools/policy.py checks again before any call runs. Posting a message needs
# ai_thread_messages.create, so every run holds it: the tools that need nothing more act on what the
# message itself brings (the public web, the client's own form state, a report about this thread) or
# on the tenant's knowledge base, which every user of the tenant may ask about (there is no separate
# documents permission). A tool that shows the user's stored data needs the read permission for that
# data, exactly as reading it through the API would:
# - every memory tool shows memories (search lists them; save and delete answer with what they touched,
#   delete by query tells what matched), so all three need memories.read, as listing them through the
#   API does, and delete_memory needs memories.delete instead, as deleting one does; recalling memories
#   into the prompt needs memories.read (migration 0012 gave both to whoever held
#   ai_thread_messages.read, which guarded them before the memories permissions existed);
# - query_data needs, per view, the permissions the view declares (shared/data_views.toml,
#   ``permissions``; a view that declares none needs both read permissions); the tool is offered when
#   at least one view is allowed, and lists only those.

TOOL_PERMISSIONS: dict[ToolName, frozenset[str]] = {
    ToolName.SEARCH_DOCS: frozenset({_p.MESSAGES_CREATE}),
    ToolName.READ_DOC: frozenset({_p.MESSAGES_CREATE}),
    ToolName.WEB_SEARCH: frozenset({_p.MESSAGES_CREATE}),
    ToolName.READ_WEB_PAGE: frozenset({_p.MESSAGES_CREATE}),
    ToolName.REPORT_CONVERSATION: frozenset({_p.MESSAGES_CREATE}),
    ToolName.UPDATE_CONTEXT: frozenset({_p.MESSAGES_CREATE}),
    ToolName.SAVE_MEMORY: frozenset({_p.MESSAGES_CREATE, _p.MEMORIES_READ}),
    ToolName.SEARCH_MEMORIES: frozenset({_p.MESSAGES_CREATE, _p.MEMORIES_READ}),
    ToolName.DELETE_MEMORY: frozenset({_p.MESSAGES_CREATE, _p.MEMORIES_READ, _p.MEMORIES_DELETE}),
    ToolName.QUERY_DATA: frozenset({_p.MESSAGES_CREATE}),  # and each view's own (data_views.View.permissions)
}
# What a data view needs when its definition does not say: everything a view of the user's data could show.
DEFAULT_VIEW_PERMISSIONS = frozenset({_p.THREADS_READ, _p.MESSAGES_READ})
# What a run stored before runs.permissions existed (NULL) may use: only what its post certainly held.
LEGACY_RUN_PERMISSIONS = frozenset({_p.MESSAGES_CREATE})


def missing_permissions(tool: str, granted: frozenset[str]) -> list[str]:
    """The permissions ``granted`` lacks for ``tool`` (sorted; empty when it may run). Unknown tools need
    everything, so they are never allowed by accident."""
    needed = TOOL_PERMISSIONS.get(tool)  # type: ignore[call-overload]
    if needed is None:
        return sorted(set(_p.ALL) - granted) or ["(unknown tool)"]
    return sorted(needed - granted)


if set(TOOL_PERMISSIONS) != set(ToolName):  # a new tool must say what it needs
    raise RuntimeError(f"shared/tools.py: TOOL_PERMISSIONS misses {sorted(set(ToolName) - set(TOOL_PERMISSIONS))}")
