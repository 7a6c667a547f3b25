"""The knowledge base: ingest files as versioned documents, search and read their chunks.

Every read is scoped: a caller sees global documents (tenant_id NULL) and their own tenant's, never
another tenant's. Chunks of old versions stay readable by id, so citations made from them resolve;
search only looks at current chunks.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from shared import text_search
from shared.chunking import chunk_text, normalize, title_of
from shared.db import transaction
from shared.errors import NotFound, ValidationFailed
from shared.models import Document, DocumentChunk, DocumentVersion, Tenant, utcnow

SUFFIXES = {".md": True, ".markdown": True, ".txt": False}  # suffix -> parsed as markdown
MAX_SEARCH_RESULTS = 10


@dataclass(frozen=True)
class ChunkView:
    """A chunk with the document fields a citation carries."""

    chunk_id: str
    document_id: str
    document_version_id: str
    document_name: str
    document_version: int
    path: str
    heading: str
    content: str
    is_current: bool

    def source(self) -> dict:
        """What ToolContext.sources keeps for citation checks (and citations copy, minus content)."""
        return {"content": self.content, "document_id": self.document_id,
                "document_version_id": self.document_version_id, "document_name": self.document_name,
                "document_version": self.document_version, "path": self.path}


@dataclass
class IngestSummary:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path -> why
    chunks: int = 0

    @property
    def files(self) -> int:
        return self.new + self.changed + self.unchanged + len(self.failed)

    def line(self) -> str:
        text = (f"{self.files} file(s): {self.new} new, {self.changed} changed, {self.unchanged} unchanged"
                f"{f', {len(self.failed)} failed' if self.failed else ''}; {self.chunks} chunk(s) written")
        return text


# -- reading (always scoped) -----------------------------------------------------------------------

def _visible_to(tenant_id: uuid.UUID):
    return or_(DocumentChunk.tenant_id.is_(None), DocumentChunk.tenant_id == tenant_id)


def _views(session: Session, conditions: list, order=None) -> list[ChunkView]:
    rows = session.execute(
        select(DocumentChunk, DocumentVersion.version, Document.name, Document.path)
        .join(DocumentVersion, DocumentVersion.id == DocumentChunk.document_version_id)
        .join(Document, Document.id == DocumentChunk.document_id)
        .where(*conditions)
        .order_by(*(order if order is not None else [DocumentChunk.index]))
    ).all()
    return [
        ChunkView(chunk_id=str(c.id), document_id=str(c.document_id), document_version_id=str(c.document_version_id),
                  document_name=name, document_version=version, path=path, heading=c.heading, content=c.content,
                  is_current=c.is_current)
        for c, version, name, path in rows
    ]


def search(tenant_id: uuid.UUID, query: str, limit: int = 5) -> list[ChunkView]:
    """Current chunks visible to the tenant that best match ``query``, best first."""
    limit = max(1, min(limit, MAX_SEARCH_RESULTS))
    scope = [_visible_to(tenant_id), DocumentChunk.is_current.is_(True)]
    with transaction() as session:
        ids = text_search.search(session, text_search.CHUNKS, query, scope, limit)
        by_id = {view.chunk_id: view for view in _views(session, [DocumentChunk.id.in_(ids)])} if ids else {}
    return [by_id[str(i)] for i in ids if str(i) in by_id]


def get_chunk(tenant_id: uuid.UUID, chunk_id: str) -> ChunkView | None:
    """One chunk by id, of any version, if the tenant may read it; None otherwise (or for a bad id)."""
    try:
        key = uuid.UUID(str(chunk_id))
    except ValueError:
        return None
    with transaction() as session:
        views = _views(session, [DocumentChunk.id == key, _visible_to(tenant_id)])
    return views[0] if views else None


def document_chunks(tenant_id: uuid.UUID, name: str) -> list[ChunkView]:
    """The current chunks, in order, of the visible document named (or at path) ``name``.

    A tenant's own document wins over a global one of the same name.
    """
    wanted = name.strip().lower()
    if not wanted:
        return []
    with transaction() as session:
        document_id = session.scalar(
            select(Document.id)
            .where(or_(Document.tenant_id.is_(None), Document.tenant_id == tenant_id),
                   or_(func.lower(Document.name) == wanted, func.lower(Document.path) == wanted))
            .order_by(Document.tenant_id.is_(None), Document.updated_at.desc())
            .limit(1)
        )
        if document_id is None:
            return []
        return _views(session, [DocumentChunk.document_id == document_id, DocumentChunk.is_current.is_(True)])


def citation_source(tenant_id: uuid.UUID, chunk_id: str) -> dict | None:
    """Resolve a chunk the model cited without fetching it in this run (tenant-scoped)."""
    view = get_chunk(tenant_id, chunk_id)
    return view.source() if view is not None else None


# -- ingesting -------------------------------------------------------------------------------------

def tenant_id_for(name: str | None) -> uuid.UUID | None:
    """The id of the tenant called ``name``; None (global) without a name. Never creates a tenant."""
    if name is None:
        return None
    with transaction() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
    if tenant_id is None:
        raise NotFound(f"No tenant named '{name}'.")
    return tenant_id


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def ingest_text(path: str, text: str, *, tenant_id: uuid.UUID | None = None, name: str | None = None,
                markdown: bool = True) -> tuple[str, int]:
    """Store one file's text as the next version of the document at ``path`` (per tenant or global).

    Returns (``"new"`` | ``"changed"`` | ``"unchanged"``, chunks written). An unchanged text (same hash
    as the current version) writes nothing; a changed one adds a version whose chunks become the
    current ones, while the previous version's chunks stay, no longer current, for old citations.
    """
    if not path.strip():
        raise ValidationFailed("A document needs a path.")
    text = normalize(text)
    digest = content_hash(text)
    name = (name or (title_of(text) if markdown else None) or Path(path).stem)[:300]
    with transaction() as session:
        scope = Document.tenant_id.is_(None) if tenant_id is None else Document.tenant_id == tenant_id
        document = session.scalar(
            select(Document).where(scope, Document.path == path).order_by(Document.created_at).limit(1)
            .with_for_update()
        )
        if document is None:
            status = "new"
            document = Document(tenant_id=tenant_id, name=name, path=path, current_version=0)
            session.add(document)
            session.flush()
        else:
            current = session.scalar(
                select(DocumentVersion.content_hash)
                .where(DocumentVersion.document_id == document.id, DocumentVersion.version == document.current_version)
            )
            if current == digest:
                return "unchanged", 0
            status = "changed"
            session.execute(
                update(DocumentChunk)
                .where(DocumentChunk.document_id == document.id, DocumentChunk.is_current.is_(True))
                .values(is_current=False)
            )
        version = DocumentVersion(document_id=document.id, version=document.current_version + 1, content_hash=digest)
        session.add(version)
        session.flush()
        chunks = chunk_text(text, markdown=markdown)
        session.add_all(
            DocumentChunk(document_id=document.id, document_version_id=version.id, tenant_id=tenant_id, index=i,
                          heading=chunk.heading, content=chunk.content, is_current=True)
            for i, chunk in enumerate(chunks)
        )
        document.current_version, document.name, document.updated_at = version.version, name, utcnow()
    return status, len(chunks)


def files_under(root: Path) -> list[Path]:
    """The ingestible files: ``root`` itself, or every .md/.markdown/.txt below it (hidden ones skipped)."""
    if root.is_file():
        return [root] if root.suffix.lower() in SUFFIXES else []
    if not root.is_dir():
        raise NotFound(f"No such file or folder: {root}")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def ingest(root: Path, *, tenant_id: uuid.UUID | None = None,
           progress: Callable[[Iterable[Path]], Iterable[Path]] = iter) -> IngestSummary:
    """Ingest a file or a folder (recursively). A document's path is relative to the folder given.

    Idempotent: running it again over the same files changes nothing. ``progress`` wraps the file
    list (the CLI passes a progress bar).
    """
    root = Path(root)
    files = files_under(root)
    if root.is_file() and not files:
        raise ValidationFailed(f"{root.name}: only {', '.join(sorted(SUFFIXES))} files are ingested.")
    base = root.parent if root.is_file() else root
    summary = IngestSummary()
    for file in progress(files):
        relative = file.relative_to(base).as_posix()
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            summary.failed[relative] = f"{type(exc).__name__}: {exc}"
            continue
        status, written = ingest_text(relative, text, tenant_id=tenant_id, markdown=SUFFIXES[file.suffix.lower()])
        setattr(summary, status, getattr(summary, status) + 1)
        summary.chunks += written
    return summary


@dataclass(frozen=True)
class DocumentInfo:
    name: str
    path: str
    tenant: str | None
    version: int
    chunks: int
    updated_at: object


def list_documents(tenant_id: uuid.UUID | None = None, *, only_tenant: bool = False) -> list[DocumentInfo]:
    """Documents with their current version and chunk count; all of them, or one tenant's."""
    current_chunks = (
        select(DocumentChunk.document_id, func.count().label("n"))
        .where(DocumentChunk.is_current.is_(True)).group_by(DocumentChunk.document_id).subquery()
    )
    statement = (
        select(Document, Tenant.name, func.coalesce(current_chunks.c.n, 0))
        .outerjoin(Tenant, Tenant.id == Document.tenant_id)
        .outerjoin(current_chunks, current_chunks.c.document_id == Document.id)
        .order_by(Tenant.name.is_not(None), Tenant.name, Document.path)
    )
    if only_tenant:
        statement = statement.where(Document.tenant_id.is_(None) if tenant_id is None else Document.tenant_id == tenant_id)
    with transaction() as session:
        rows = session.execute(statement).all()
    return [DocumentInfo(d.name, d.path, tenant, d.current_version, n, d.updated_at) for d, tenant, n in rows]
