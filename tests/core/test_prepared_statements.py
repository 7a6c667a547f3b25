"""The hot statements run as server-side prepared statements on PostgreSQL (shared.db.prepared).

Like test_round_trips, this test uses a database of its own through the production engine and pool
(a prepared statement belongs to a connection; the folder's rolled-back connection would hide what
the pool does)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import bindparam, select, text

from shared import db
from shared.models import ACTIVE_STATUSES, Run
from tests.core.conftest import own_database


@pytest.fixture(autouse=True)
def connection(monkeypatch) -> Iterator[None]:
    """Overrides the folder's rolled-back connection (see the module docstring)."""
    with own_database(monkeypatch, "threadline_prep"):
        yield


def prepared_on(connection) -> dict[str, str]:
    return dict(connection.exec_driver_sql("SELECT name, statement FROM pg_prepared_statements").all())


def test_a_marked_statement_is_prepared_once_per_connection_with_its_constants_inlined():
    statement = db.prepared(
        select(Run.__table__.c.id)
        .where(Run.__table__.c.user_id == bindparam("user_id"), Run.__table__.c.status.in_(ACTIVE_STATUSES),
               Run.__table__.c.model_id == "some-model")
        .limit(3)
    )
    with db.engine().connect() as connection:
        assert connection.execute(statement, {"user_id": "nobody"}).all() == []
        assert connection.execute(statement, {"user_id": "nobody else"}).all() == []
        (name, sql), = prepared_on(connection).items()
    assert name.startswith("tl_")
    # the IN list of statuses and the LIMIT are literals (a partial index on the active statuses stays
    # usable), the caller's value and a string compared with = are parameters
    assert "IN ('queued', 'in_progress')" in sql and "LIMIT 3" in sql, sql
    assert "user_id = $1" in sql and "model_id = $2" in sql, sql


def test_an_unmarked_statement_is_not_prepared():
    with db.engine().connect() as connection:
        connection.execute(select(Run.__table__.c.id).where(Run.__table__.c.user_id == bindparam("user_id")),
                           {"user_id": "nobody"})
        assert prepared_on(connection) == {}


def test_a_statement_the_server_cannot_prepare_runs_as_text_without_spoiling_the_transaction(caplog):
    # $1 stands where PostgreSQL cannot infer a type for it: PREPARE fails, EXECUTE is never sent
    statement = db.prepared(text("SELECT :value IS NULL AS missing").bindparams(bindparam("value")))
    with db.engine().connect() as connection:  # a transaction (not autocommit): the savepoint path
        connection.exec_driver_sql("SELECT 1")
        assert connection.execute(statement, {"value": "x"}).scalar() is False
        assert connection.execute(statement, {"value": None}).scalar() is True  # and stays as text
        assert connection.exec_driver_sql("SELECT 2").scalar() == 2  # the transaction is still usable
        assert prepared_on(connection) == {}
    assert "cannot prepare statement" in caplog.text


def test_the_post_claim_and_finish_run_prepared(monkeypatch):
    """The message's hot path through the services: the same answers, its statements prepared."""
    monkeypatch.setattr("shared.services.messages.enqueue_run", lambda run_id: None)
    from shared import permissions
    from shared.permissions import Principal
    from shared.services import identity, messages, runs, threads

    user = identity.create_user("prepared@example.com", "t-prepared")
    principal = Principal(user_id=user.id, tenant_id=user.tenant_id, permissions=frozenset(permissions.ALL))
    thread = threads.create_thread(principal, title="prepared")
    for turn in range(8):  # past the five custom plans PostgreSQL makes before it settles on a generic one
        exchange = messages.post_user_message(principal, thread.id, content=f"turn {turn}")
        job = runs.claim(exchange.run_id, "owner-1")
        assert job is not None and job.content == f"turn {turn}"
        assert [m["content"] for m in job.history] == [c for t in range(turn) for c in (f"turn {t}", f"answer {t}")]
        finished = runs.finish(job, runs.Outcome(content=f"answer {turn}"))
        assert finished is not None and finished.status == "completed"
        assert runs.claim(exchange.run_id, "owner-2") is None  # the conditional claim still holds
    with db.engine().connect() as connection:
        plans = connection.exec_driver_sql(
            "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements").all()
    statements = " ".join(statement for statement, _ in plans)
    for part in ("FOR UPDATE", "UPDATE threads SET last_seq", "WITH posted_messages", "WITH claim_clock",
                 "WITH finish_clock"):
        assert part in statements, part


def test_fetch_prepared_sends_the_execute_to_the_cursor_once_sqlalchemy_has_shown_how(monkeypatch):
    """shared.db.fetch_prepared: the first run goes through SQLAlchemy; later runs on a connection that
    has the statement prepared skip it, with the same rows (bind and result processors applied) and
    SQLAlchemy's errors; another cursor listener (tracing, round-trip counting) sees every statement."""
    from sqlalchemy import Integer, event, exc, literal_column
    from sqlalchemy.dialects.postgresql import JSONB

    from shared.models import Status

    status = literal_column("'in_progress'", type_=Run.__table__.c.status.type).label("status")
    statement = db.prepared(select(
        status, bindparam("doc", type_=JSONB()).label("doc"),
        (bindparam("n", type_=Integer) / bindparam("d", type_=Integer)).label("q"),
    ))
    direct = []
    original = db._fetch_direct
    monkeypatch.setattr(db, "_fetch_direct", lambda *args: direct.append(1) or original(*args))
    with db.engine().connect() as connection:
        first = db.fetch_prepared(connection, statement, {"doc": {"a": [1, "x"]}, "n": 6, "d": 3})
        second = db.fetch_prepared(connection, statement, {"doc": {"b": None}, "n": 8, "d": 2})
        assert direct == [1]
        assert [tuple(row) for row in first] == [(Status.IN_PROGRESS, {"a": [1, "x"]}, 2)]
        assert [tuple(row) for row in second] == [(Status.IN_PROGRESS, {"b": None}, 4)]
        assert second[0].status is Status.IN_PROGRESS and second[0].doc == {"b": None}
        with pytest.raises(exc.DataError):  # division by zero, wrapped as SQLAlchemy wraps it
            db.fetch_prepared(connection, statement, {"doc": None, "n": 1, "d": 0})
        assert direct == [1, 1]
        connection.rollback()  # the failed statement ended the transaction, as through SQLAlchemy
        seen = []
        event.listen(connection, "before_cursor_execute", lambda _c, _cur, sql, *_a: seen.append(sql))
        assert [tuple(row) for row in db.fetch_prepared(connection, statement, {"doc": 1, "n": 9, "d": 3})] == [
            (Status.IN_PROGRESS, 1, 3)]
        assert direct == [1, 1] and len(seen) == 1  # through SQLAlchemy, where the listener sees it
