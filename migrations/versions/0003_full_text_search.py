"""full-text search over document chunks and memories

PostgreSQL: GIN expression indexes on to_tsvector('english', …), the expressions shared/text_search.py
queries. SQLite: FTS5 tables kept in sync with their source tables by triggers, filled from the rows
that already exist. Downgrade removes exactly what upgrade made, on either database.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# (source table, FTS5 table, key column, indexed columns) — the same shapes text_search.py reads.
SQLITE_INDEXES = (
    ("document_chunks", "document_chunks_fts", "chunk_id", ("heading", "content")),
    ("memories", "memories_fts", "memory_id", ("content",)),
)
POSTGRES_INDEXES = (
    ("ix_document_chunks_fts", "document_chunks", "heading || ' ' || content"),
    ("ix_memories_fts", "memories", "content"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, table, document in POSTGRES_INDEXES:
            op.execute(f"CREATE INDEX {name} ON {table} USING gin (to_tsvector('english', {document}))")
        return
    for source, fts, key, columns in SQLITE_INDEXES:
        names = ", ".join(columns)
        new_values = ", ".join(f"new.{c}" for c in columns)
        op.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5({key} UNINDEXED, {names}, "
                   "tokenize = 'porter unicode61 remove_diacritics 2')")
        op.execute(f"INSERT INTO {fts} ({key}, {names}) SELECT id, {names} FROM {source}")
        op.execute(f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {source} BEGIN "
                   f"INSERT INTO {fts} ({key}, {names}) VALUES (new.id, {new_values}); END")
        op.execute(f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {source} BEGIN "
                   f"DELETE FROM {fts} WHERE {key} = old.id; END")
        assignments = ", ".join(f"{c} = new.{c}" for c in columns)
        op.execute(f"CREATE TRIGGER {fts}_update AFTER UPDATE OF id, {names} ON {source} BEGIN "
                   f"UPDATE {fts} SET {key} = new.id, {assignments} WHERE {key} = old.id; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _table, _document in POSTGRES_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        return
    for _source, fts, _key, _columns in SQLITE_INDEXES:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {fts}_{event}")
        op.execute(f"DROP TABLE IF EXISTS {fts}")
