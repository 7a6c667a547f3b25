"""search_docs: full-text search over the knowledge base the caller's tenant may read."""
from __future__ import annotations

from typing import Any

from shared.services import knowledge
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.SEARCH_DOCS
SCHEMA = {
    "description": "Search the product documentation (knowledge base). Returns the best matching passages "
    "(chunks) with their chunk_id; quote them as <cite chunk=\"CHUNK_ID\">exact text</cite>.",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": 500, "description": "What to look for, in a few words."},
            "limit": {"type": "integer", "minimum": 1, "maximum": knowledge.MAX_SEARCH_RESULTS,
                      "description": "How many passages to return (default 5)."},
        },
        "required": ["query"],
    },
}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    query = args["query"].strip()
    if not query:
        raise ToolError("'query' must not be empty")
    results = []
    for view in knowledge.search(ctx.tenant_id, query, args.get("limit") or 5):
        ctx.sources[view.chunk_id] = view.source()
        results.append({"chunk_id": view.chunk_id, "document_name": view.document_name, "path": view.path,
                        "heading": view.heading, "content": view.content})
    return {"results": results}
