"""The connection pool on PostgreSQL: autocommit reads leave no trace on the pooled connection, and a
connection that died while idle in the pool is replaced before anyone uses it (the ping-if-idle check
that stands in for pool_pre_ping)."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, insert, select, text

from shared import db
from shared.models import Tenant


@pytest.fixture
def engine(stack):
    if not stack.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL pool behaviour; the embedded SQLite mode has no server connections")
    db.dispose()
    yield db.engine()
    db.dispose()


def test_a_read_runs_without_a_transaction_and_leaves_the_connection_transactional(engine):
    with db.read() as session:
        assert session.execute(text("SELECT now() = statement_timestamp()")).scalar() is True  # no open txn
    name = f"rolled-back-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError):
        with db.transaction() as session:
            session.execute(insert(Tenant).values(name=name))
            raise RuntimeError("roll it back")
    with db.read() as session:
        assert session.scalar(select(Tenant.id).where(Tenant.name == name)) is None


def test_a_connection_killed_while_idle_is_replaced_before_use(engine, stack, monkeypatch):
    with db.read() as session:
        first_pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
    admin = create_engine(stack.database_url)
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid}).scalar() is True
    admin.dispose()
    monkeypatch.setattr(db, "IDLE_BEFORE_PING", 0.0)  # instead of sleeping past the idle threshold
    with db.transaction() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar() != first_pid
