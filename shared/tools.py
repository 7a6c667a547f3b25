"""The agent's tool names: the one list both sides use.

``worker/tools`` registers exactly one module per name (it refuses to import otherwise) and workflows
validate their allowed-tool lists against it. It lives in ``shared`` because the API (workflow
validation, the CLI) must know the names without importing the worker.
"""
from __future__ import annotations

from enum import StrEnum


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
