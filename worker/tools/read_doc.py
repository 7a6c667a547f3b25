"""read_doc: one knowledge-base chunk by id, or a whole document by name (current version)."""
from __future__ import annotations

from typing import Any

from shared.config import settings
from shared.services import knowledge
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.READ_DOC
SCHEMA = {
    "description": "Read the documentation: a passage by its chunk_id (from search_docs or an earlier citation), "
    "or a whole document by its document_name. Give exactly one of the two.",
    "parameters": {
        "type": "object",
        "properties": {
            "chunk_id": {"type": "string", "maxLength": 100},
            "document_name": {"type": "string", "maxLength": 300, "description": "A document's name or path."},
        },
    },
}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    chunk_id, name = args.get("chunk_id"), args.get("document_name")
    if bool(chunk_id) == bool(name):
        raise ToolError("give exactly one of 'chunk_id' or 'document_name'")
    if chunk_id:
        view = knowledge.get_chunk(ctx.tenant_id, chunk_id)
        if view is None:
            raise ToolError(f"chunk {chunk_id} not found")
        ctx.sources[view.chunk_id] = view.source()
        return _shape(view)
    views = knowledge.document_chunks(ctx.tenant_id, name)
    if not views:
        raise ToolError(f"document '{name}' not found")
    first, *rest = views
    ctx.sources[first.chunk_id] = first.source()
    body, budget, truncated = _shape(first), settings.docs_read_max_chars - len(first.content), False
    body["more_chunks"] = []
    for view in rest:
        if len(view.content) > budget:
            truncated = True
            break
        budget -= len(view.content)
        ctx.sources[view.chunk_id] = view.source()
        body["more_chunks"].append({"chunk_id": view.chunk_id, "heading": view.heading, "content": view.content})
    body["truncated"] = truncated
    return body


def _shape(view: knowledge.ChunkView) -> dict[str, Any]:
    return {"chunk_id": view.chunk_id, "document_name": view.document_name, "document_version": view.document_version,
            "path": view.path, "heading": view.heading, "content": view.content}
