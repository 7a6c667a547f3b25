"""Citations enriched at read time: the stored citation keeps what the model quoted (chunk id, quote,
offset, length); the document fields come from the knowledge-base tables when the message is read.

Reading rather than copying means a renamed document shows its current name, and a citation whose
chunk is gone (or that the reader's tenant may not see) still shows its quote, with the document
fields null. Chunks of old document versions stay in the database, so old citations keep resolving.
"""
from __future__ import annotations

import uuid
from typing import Any, Iterable

from sqlalchemy import or_, select

from shared.db import transaction
from shared.models import Document, DocumentChunk, DocumentVersion

RESOLVED_FIELDS = ("document_id", "document_version_id", "document_name", "document_version", "path_part_id", "path")


def chunk_path(document_path: str, version: int, index: int) -> str:
    """Where a chunk sits: its document's path, the version, and the chunk's position in it."""
    return f"/documents/{document_path.strip('/')}/versions/{version}/chunks/{index}"


def _chunk_key(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def _resolve(tenant_id: uuid.UUID, keys: set[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Document fields of the chunks the tenant may read (its own documents and global ones)."""
    if not keys:
        return {}
    with transaction() as session:
        rows = session.execute(
            select(DocumentChunk.id, DocumentChunk.index, DocumentVersion.id, DocumentVersion.version,
                   Document.id, Document.name, Document.path)
            .join(DocumentVersion, DocumentVersion.id == DocumentChunk.document_version_id)
            .join(Document, Document.id == DocumentChunk.document_id)
            .where(DocumentChunk.id.in_(keys), or_(Document.tenant_id.is_(None), Document.tenant_id == tenant_id))
        ).all()
    return {
        chunk_id: dict(document_id=document_id, document_version_id=version_id, document_name=name,
                       document_version=version, path_part_id=chunk_id, path=chunk_path(path, version, index))
        for chunk_id, index, version_id, version, document_id, name, path in rows
    }


def _enriched(citation: Any, resolved: dict[uuid.UUID, dict[str, Any]]) -> dict[str, Any]:
    stored = citation if isinstance(citation, dict) else {}
    quote = str(stored.get("quote") or "")
    found = resolved.get(_chunk_key(stored.get("chunk_id")))
    return {
        "chunk_id": str(stored.get("chunk_id") or ""),
        "quote": quote,
        "offset": stored.get("offset") if isinstance(stored.get("offset"), int) else 0,
        "length": stored.get("length") if isinstance(stored.get("length"), int) else len(quote),
        **(found or dict.fromkeys(RESOLVED_FIELDS)),
    }


def enrich(tenant_id: uuid.UUID, citation_lists: Iterable[list[Any] | None]) -> list[list[dict[str, Any]]]:
    """EnrichedCitations for several messages' stored citations, resolved in one query."""
    lists = [list(c or []) for c in citation_lists]
    keys = {key for citations in lists for c in citations if isinstance(c, dict)
            if (key := _chunk_key(c.get("chunk_id"))) is not None}
    resolved = _resolve(tenant_id, keys)
    return [[_enriched(c, resolved) for c in citations] for citations in lists]
