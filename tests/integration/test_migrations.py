"""The Alembic history upgrades an empty database to head, matches the models, and downgrades back."""
from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from shared.db import make_engine
from shared.models import Base
from shared.text_search import include_object
from devtools.stack import PG_ADMIN_URL, ROOT


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"threadline_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {t for t in inspect(engine).get_table_names() if t != "alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_matches_models_and_downgrade_empties(empty_database):
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= tables(empty_database)
    engine = make_engine(empty_database)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_object": include_object}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"
    command.downgrade(config, "base")
    assert not (set(Base.metadata.tables) & tables(empty_database))
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= tables(empty_database)


def test_runs_stored_before_0005_take_their_threads_owner(empty_database):
    """The upgrade to the run owner column fills it for runs that already exist."""
    config = alembic_config(empty_database)
    command.upgrade(config, "0004")
    as_id = (lambda u: u.hex) if empty_database.startswith("sqlite") else str
    tenant, request, answer, run = (uuid.uuid4() for _ in range(4))
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (:t, 'old', CURRENT_TIMESTAMP)"),
                     {"t": as_id(tenant)})
        conn.execute(text("INSERT INTO users (id, tenant_id, email, permissions, created_at) "
                          "VALUES ('old-user', :t, 'old@example.com', '[]', CURRENT_TIMESTAMP)"), {"t": as_id(tenant)})
        conn.execute(text("INSERT INTO threads (id, public_id, tenant_id, user_id, title, last_seq, created_at, updated_at) "
                          "VALUES (1, :p, :t, 'old-user', '', 2, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                     {"t": as_id(tenant), "p": as_id(uuid.uuid4())})
        for message, seq, role in ((request, 1, "user"), (answer, 2, "assistant")):
            conn.execute(text('INSERT INTO messages (id, thread_id, seq, role, content, citations, "references", '
                              "is_error, status, created_at, updated_at) VALUES (:i, 1, :s, :r, 'hi', '[]', '[]', "
                              "false, 'completed', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                         {"i": as_id(message), "s": seq, "r": role})
        conn.execute(text("INSERT INTO runs (id, thread_id, request_message_id, response_message_id, status, attempts, "
                          "queued_at) VALUES (:i, 1, :a, :b, 'completed', 1, CURRENT_TIMESTAMP)"),
                     {"i": as_id(run), "a": as_id(request), "b": as_id(answer)})
    engine.dispose()
    command.upgrade(config, "head")
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT user_id FROM runs")).scalars().all() == ["old-user"]
    engine.dispose()


def test_the_indexes_the_migrations_make_are_the_models_indexes(empty_database):
    """compare_metadata compares an index's name, columns and uniqueness, not a partial index's WHERE:
    here the definitions themselves (pg_indexes.indexdef, predicates included) of the migrated tables
    are compared with those create_all makes from the models in a schema of their own."""
    if empty_database.startswith("sqlite"):
        pytest.skip("the definitions are compared on PostgreSQL")
    command.upgrade(alembic_config(empty_database), "head")
    engine = make_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA models"))
            Base.metadata.create_all(conn.execution_options(schema_translate_map={None: "models"}))

        def indexes(schema: str) -> dict[str, str]:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s"),
                                    {"s": schema}).all()
            return {name: definition.replace(f" {schema}.", " ") for name, definition in rows
                    if include_object(None, name, "index", True, None)}  # not the search indexes of 0003

        migrated, modelled = indexes("public"), indexes("models")
        assert {n: d for n, d in migrated.items() if n in modelled} == modelled
    finally:
        engine.dispose()
