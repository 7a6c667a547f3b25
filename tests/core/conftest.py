"""In-process tests of the core services on real PostgreSQL, without the process stack.

One database per session, created and migrated with Alembic once. Every test runs inside one outer
transaction on one connection that is rolled back at the end; ``shared.db.bind_to`` makes each
service's ``transaction()`` a SAVEPOINT inside it (SQLAlchemy 2 ``join_transaction_mode=
"create_savepoint"``), so services commit and roll back as in production and no test sees another's
rows. Nothing here starts the API, a worker or a broker: enqueued run ids are recorded instead.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from shared import db, permissions
from shared.config import ROOT, settings
from shared.permissions import Principal

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """The URL of a new PostgreSQL database at the head migration, dropped (forcibly) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes.update(url=url, configure_logger=False)
        command.upgrade(config, "head")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def own_database(monkeypatch, prefix: str) -> Iterator[None]:
    """For a test that overrides the folder's rolled-back connection: a database of its own at the head
    migration, used through the production engine and pool (shared.db), dropped at the end."""
    with migrated_database(prefix) as url:
        db.dispose()
        monkeypatch.setattr(db, "settings", dataclasses.replace(settings, database_url=url))
        try:
            yield
        finally:
            db.dispose()


@pytest.fixture(scope="session")
def core_engine():
    """A fresh database at the head migration, dropped at the end of the session."""
    with migrated_database("threadline_core") as url:
        engine = db.make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(autouse=True)
def connection(core_engine):
    """This test's connection: one outer transaction, rolled back at the end whatever the test did."""
    with core_engine.connect() as conn:
        outer = conn.begin()
        with db.bind_to(conn):
            yield conn
        outer.rollback()


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """Run ids the services hand to the broker, in order (the broker itself is not part of these tests)."""
    sent: list[uuid.UUID] = []
    from shared.services import messages

    monkeypatch.setattr(messages, "enqueue_run", sent.append)
    monkeypatch.setattr(messages, "enqueue_queued_run", lambda run_id, *_ids: sent.append(run_id))
    return sent


@pytest.fixture
def set_settings(monkeypatch):
    """Change settings for one test, for every module that reads them (they share one object)."""
    from shared import config
    from shared.services import runs

    def change(**values):
        changed = dataclasses.replace(config.settings, **values)
        for module in (config, runs):
            monkeypatch.setattr(module, "settings", changed)
        return changed

    return change


@pytest.fixture
def make_principal():
    """A new user in a new tenant (unless one is given), as the Principal a request would carry."""
    from shared.services import identity

    def make(tenant: str | None = None, perms: list[str] | None = None) -> Principal:
        user = identity.create_user(f"{uuid.uuid4().hex[:12]}@example.com", tenant or f"t-{uuid.uuid4().hex[:8]}")
        return Principal(user_id=user.id, tenant_id=user.tenant_id,
                         permissions=frozenset(perms if perms is not None else permissions.ALL))

    return make


@pytest.fixture
def principal(make_principal) -> Principal:
    return make_principal()


@pytest.fixture
def thread(principal):
    from shared.services import threads

    created = threads.create_thread(principal, title="core")
    return SimpleNamespace(id=created.id, public_id=created.public_id)
