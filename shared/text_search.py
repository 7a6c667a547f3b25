"""Full-text search over document chunks and memories, on PostgreSQL or SQLite.

PostgreSQL: GIN expression indexes on ``to_tsvector('english', …)`` (migration 0003), queried with
``websearch_to_tsquery`` and ranked by ``ts_rank``. SQLite: FTS5 tables kept in sync by triggers
(same migration), ranked by ``bm25``. Both first require every term; when that finds nothing, any term
will do (``relax=False`` skips that second pass, e.g. before deleting).

Callers pass their scope as SQL conditions (tenant, user, is_current); they are applied in the same
statement as the match, so a search can never return a row outside the caller's scope.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Uuid, column, func, literal_column, select, text
from sqlalchemy.orm import Session

from shared.models import DocumentChunk, Memory

MAX_TERMS = 32
ENGLISH = literal_column("'english'")  # a literal, so the expression matches the index's exactly

# Words that carry no meaning for a search. PostgreSQL's english configuration drops them itself;
# SQLite's FTS5 does not, and "what is my favourite colour" must still find "favourite colour".
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves
""".split())


@dataclass(frozen=True)
class Indexed:
    """A searchable table: its model, the text it indexes (PostgreSQL) and its FTS5 table (SQLite)."""

    model: Any
    pg_document: Any
    fts_table: str
    fts_key: str
    fts_weights: str


CHUNKS = Indexed(
    DocumentChunk,
    DocumentChunk.heading.op("||")(literal_column("' '")).op("||")(DocumentChunk.content),
    "document_chunks_fts", "chunk_id", "0.0, 2.0, 1.0",  # key unweighted, heading counts double
)
MEMORIES = Indexed(Memory, Memory.content, "memories_fts", "memory_id", "0.0, 1.0")


def terms(query: str) -> list[str]:
    """The query's words, lower-cased, without stop words or duplicates (at most MAX_TERMS)."""
    seen: dict[str, None] = {}
    for word in re.findall(r"[^\W_]+", query.lower()):
        if word not in STOP_WORDS:
            seen.setdefault(word)
    return list(seen)[:MAX_TERMS]


def search(session: Session, index: Indexed, query: str, where: list, limit: int, *,
           relax: bool = True) -> list[uuid.UUID]:
    """Ids of the best matches for ``query`` among rows satisfying ``where``, best first."""
    words = terms(query)
    if not words or limit < 1:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    run = _postgres if postgres else _sqlite
    ids = run(session, index, query, words, where, limit, any_term=False)
    if not ids and relax and len(words) > 1:
        ids = run(session, index, query, words, where, limit, any_term=True)
    return ids


def _postgres(session, index, query, words, where, limit, *, any_term):
    vector = func.to_tsvector(ENGLISH, index.pg_document)
    if any_term:  # the words are [^\W_]+ only, so they are safe inside to_tsquery syntax
        tsquery = func.to_tsquery(ENGLISH, " | ".join(words))
    else:
        tsquery = func.websearch_to_tsquery(ENGLISH, query[:1000])
    statement = (
        select(index.model.id)
        .where(*where, vector.bool_op("@@")(tsquery))
        .order_by(func.ts_rank(vector, tsquery).desc(), index.model.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def _sqlite(session, index, query, words, where, limit, *, any_term):
    match = (" OR " if any_term else " ").join(f'"{word}"' for word in words)
    hits = (
        text(f"SELECT {index.fts_key} AS key, bm25({index.fts_table}, {index.fts_weights}) AS score "
             f"FROM {index.fts_table} WHERE {index.fts_table} MATCH :match")
        .bindparams(match=match)
        .columns(column("key", Uuid()), column("score", Float()))
        .subquery()
    )
    statement = (
        select(index.model.id)
        .join(hits, hits.c.key == index.model.id)
        .where(*where)
        .order_by(hits.c.score, index.model.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


SEARCH_INDEXES = frozenset({"ix_document_chunks_fts", "ix_memories_fts"})  # PostgreSQL, made by migration 0003


def include_object(obj, name: str | None, type_: str, reflected: bool, compare_to) -> bool:
    """Alembic ``include_object`` hook: the search indexes and FTS5 tables of migration 0003 are made
    by hand (the models cannot describe them), so autogenerate must neither drop nor compare them."""
    if not reflected or name is None:
        return True
    searchable = (CHUNKS.fts_table, MEMORIES.fts_table)
    if type_ == "table":
        return not any(name == t or name.startswith(f"{t}_") for t in searchable)
    return not (type_ == "index" and name in SEARCH_INDEXES)
