"""Memories: short facts the assistant keeps about one user, shared across that user's threads.

Every function takes the owner (tenant and user) explicitly and every statement filters on both, so
no caller can reach another user's memories, whatever text a model puts in its tool arguments.
``list_own`` and ``delete_own`` serve the user through the API: they check the caller's
``memories.read`` / ``memories.delete`` and act on the caller's own memories only (another user's
memory is simply not found).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from shared import permissions, text_search
from shared.config import settings
from shared.db import read, transaction
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Memory, Thread
from shared.permissions import Principal

MAX_SEARCH_RESULTS = 20


@dataclass(frozen=True)
class MemoryView:
    id: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "content": self.content}


def _view(memory: Memory) -> MemoryView:
    return MemoryView(str(memory.id), memory.content)


def _owned(tenant_id: uuid.UUID, user_id: str) -> list:
    return [Memory.tenant_id == tenant_id, Memory.user_id == user_id]


def save(tenant_id: uuid.UUID, user_id: str, content: str, *, source_thread_id: int | None = None) -> MemoryView:
    """Keep ``content`` for the user. Saving the same text again returns the existing memory."""
    content = " ".join(str(content or "").split())
    if not content:
        raise ValidationFailed("A memory needs some text.", fields={"content": ["Must not be empty."]})
    if len(content) > settings.memory_max_chars:
        raise ValidationFailed(f"A memory is at most {settings.memory_max_chars} characters.",
                               fields={"content": [f"Longer than {settings.memory_max_chars} characters."]})
    with transaction() as session:
        existing = session.scalar(select(Memory).where(*_owned(tenant_id, user_id), Memory.content == content).limit(1))
        if existing is not None:
            return _view(existing)
        count = session.scalar(select(func.count()).select_from(Memory).where(*_owned(tenant_id, user_id)))
        if count >= settings.memory_max_per_user:
            raise Conflict(f"This user already has {count} memories, the most allowed; delete some first.")
        memory = Memory(tenant_id=tenant_id, user_id=user_id, content=content, source_thread_id=source_thread_id)
        session.add(memory)
        session.flush()
        return _view(memory)


def search(tenant_id: uuid.UUID, user_id: str, query: str, limit: int = 5, *, relax: bool = True) -> list[MemoryView]:
    """The user's memories that best match ``query``, best first."""
    with read() as session:
        return _search(session, tenant_id, user_id, query, limit, relax=relax)


def _search(session, tenant_id: uuid.UUID, user_id: str, query: str, limit: int, *, relax: bool = True) -> list[MemoryView]:
    limit = max(1, min(limit, MAX_SEARCH_RESULTS))
    ids = text_search.search(session, text_search.MEMORIES, query, _owned(tenant_id, user_id), limit, relax=relax)
    rows = session.scalars(select(Memory).where(*_owned(tenant_id, user_id), Memory.id.in_(ids))).all() if ids else []
    by_id = {m.id: _view(m) for m in rows}
    return [by_id[i] for i in ids if i in by_id]


def recent(tenant_id: uuid.UUID, user_id: str, limit: int = 5) -> list[MemoryView]:
    """The user's newest memories, newest first."""
    with read() as session:
        return _recent(session, tenant_id, user_id, limit)


def _recent(session, tenant_id: uuid.UUID, user_id: str, limit: int) -> list[MemoryView]:
    rows = session.execute(
        select(Memory.id, Memory.content).where(*_owned(tenant_id, user_id))
        .order_by(Memory.created_at.desc(), Memory.id).limit(limit)
    ).all()
    return [MemoryView(str(memory_id), content) for memory_id, content in rows]


def recall(tenant_id: uuid.UUID, user_id: str, message: str, limit: int) -> list[str]:
    """Memories for the system prompt: those matching the message first, then the newest, ``limit`` in all.

    Runs before every answer, so the common case is one query: when all of the user's memories fit
    (most users have a few, or none), they are all recalled and no search is needed. On PostgreSQL
    the claim reads the newest ones along with the run (newest_as_json), and recall_from goes on
    from there."""
    if limit < 1:
        return []
    with read() as session:
        return _recall_from(session, _recent(session, tenant_id, user_id, limit + 1), tenant_id, user_id, message,
                            limit)


def recall_from(newest: list[MemoryView], tenant_id: uuid.UUID, user_id: str, message: str, limit: int) -> list[str]:
    """recall() given the user's ``limit + 1`` newest memories, newest first (read by the claim): no
    query at all unless the user has more memories than fit, then one search."""
    if limit < 1:
        return []
    if len(newest) <= limit:
        return [m.content for m in newest]
    with read() as session:
        return _recall_from(session, newest, tenant_id, user_id, message, limit)


def _recall_from(session, newest: list[MemoryView], tenant_id: uuid.UUID, user_id: str, message: str,
                 limit: int) -> list[str]:
    if len(newest) <= limit:
        return [m.content for m in newest]
    chosen = {m.id: m.content for m in _search(session, tenant_id, user_id, message, limit)} if message.strip() else {}
    for memory in newest[:limit]:
        chosen.setdefault(memory.id, memory.content)
    return list(chosen.values())[:limit]


def newest_as_json(tenant_id, user_id, limit):
    """PostgreSQL: the owner's ``limit`` newest memories as one JSON array of ``[id, content]``,
    newest first (the order of _recent), to read inside another statement (the run's claim);
    ``tenant_id``, ``user_id`` and ``limit`` are SQL expressions. views_from_json reads it."""
    newest = (select(Memory.id, Memory.content, Memory.created_at)
              .where(Memory.tenant_id == tenant_id, Memory.user_id == user_id)
              .order_by(Memory.created_at.desc(), Memory.id).limit(limit)
              .correlate_except(Memory.__table__).subquery("newest"))  # the owner comes from the outer statement
    ordered = aggregate_order_by(func.json_build_array(newest.c.id, newest.c.content),
                                 newest.c.created_at.desc(), newest.c.id)
    return select(func.coalesce(func.json_agg(ordered), literal_column("'[]'::json")).label("memories"))


def views_from_json(rows: list[list[str]]) -> list[MemoryView]:
    return [MemoryView(str(memory_id), content) for memory_id, content in rows]


def delete(tenant_id: uuid.UUID, user_id: str, *, memory_id: str | None = None, query: str | None = None) -> int:
    """Delete one memory by id, or every memory matching all words of ``query``; return how many."""
    if memory_id is not None:
        try:
            ids = [uuid.UUID(str(memory_id))]
        except ValueError:
            raise ValidationFailed("Not a memory id.", fields={"id": ["Not a valid id."]}) from None
    elif query and query.strip():
        ids = [uuid.UUID(m.id) for m in search(tenant_id, user_id, query, MAX_SEARCH_RESULTS, relax=False)]
    else:
        raise ValidationFailed("Say which memory to delete: an id or a query.")
    if not ids:
        return 0
    with transaction() as session:
        return session.execute(
            sql_delete(Memory).where(*_owned(tenant_id, user_id), Memory.id.in_(ids))
            .execution_options(synchronize_session=False)
        ).rowcount


@dataclass(frozen=True)
class MemoryEntry:
    """A memory as its owner sees it in the API: with where it was saved from and when."""

    id: uuid.UUID
    content: str
    source_thread_id: int | None  # the thread's integer id (ai-threads)
    source_thread_uuid: uuid.UUID | None  # the same thread's public id (chats, v1-threads)
    created_at: datetime


def list_own(principal: Principal, *, limit: int = 20, offset: int = 0) -> tuple[list[MemoryEntry], int]:
    """One page of the caller's memories, newest first, and how many there are (``memories.read``)."""
    principal.require(permissions.MEMORIES_READ)
    owned = _owned(principal.tenant_id, principal.user_id)
    with read() as session:
        total = session.scalar(select(func.count()).select_from(Memory).where(*owned))
        rows = session.execute(
            select(Memory.id, Memory.content, Memory.source_thread_id, Thread.public_id, Memory.created_at)
            .outerjoin(Thread, Thread.id == Memory.source_thread_id).where(*owned)
            .order_by(Memory.created_at.desc(), Memory.id).limit(limit).offset(offset)
        ).all()
    return [MemoryEntry(*row) for row in rows], total


def delete_own(principal: Principal, memory_id: uuid.UUID | str) -> None:
    """Delete one of the caller's memories (``memories.delete``); NotFound when the caller has none by
    that id, whoever else might."""
    principal.require(permissions.MEMORIES_DELETE)
    try:
        memory_id = uuid.UUID(str(memory_id))
    except ValueError:
        raise NotFound("Memory not found.") from None
    if delete(principal.tenant_id, principal.user_id, memory_id=str(memory_id)) == 0:
        raise NotFound("Memory not found.")
