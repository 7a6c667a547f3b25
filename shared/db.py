"""Engine and sessions. One engine per process, created lazily so forked workers get their own.

Services open sessions only through ``transaction()`` and ``read()``. ``bind_to(connection)`` points
both at one connection that the caller holds inside a transaction, each ``transaction()`` becoming a
savepoint in it: the in-process core tests (tests/core) run every test that way and roll it all back.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from shared.config import settings

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_bound: sessionmaker[Session] | None = None  # set by bind_to()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL and a busy timeout let the API and the worker share one SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                           pool_timeout=settings.db_pool_timeout)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


IDLE_BEFORE_PING = 1.0  # seconds a pooled connection may sit unused before it is checked on checkout


def _note_checkin(_dbapi_connection, record) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    """pool_pre_ping costs a round trip on every checkout, ~8 per message. A connection that was in use
    a moment ago is alive, or its failure already invalidated the pool (SQLAlchemy drops every older
    connection on a disconnect): only ping one that sat idle, where a restart or a cut may hide."""
    if time.monotonic() - record.info.get("checked_in", 0.0) < IDLE_BEFORE_PING:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as error:  # noqa: BLE001 - any failure means this connection is unusable
        raise exc.DisconnectionError(str(error)) from error  # the pool discards it and connects anew


def engine() -> Engine:
    if _bound is not None:
        return _bound.kw["bind"].engine
    global _engine, _factory
    if _engine is None:
        _engine = make_engine(settings.database_url)
        _factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def dispose() -> None:
    """Forget the engine (after fork, or when tests switch databases)."""
    global _engine, _factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = _factory = None


@contextmanager
def transaction() -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error, always closed."""
    if _bound is not None:
        with _bound() as session, session.begin():  # a SAVEPOINT in the bound connection's transaction
            yield session
        return
    engine()
    assert _factory is not None and _engine is not None
    if _engine.dialect.name != "sqlite":
        with _factory() as session, session.begin():
            yield session
        return
    with _one_writer_per_process(), _factory() as session, session.begin():
        _begin_immediate(session)
        yield session


_WRITER = threading.RLock()  # reentrant: a nested transaction() fails on SQLite's lock as before, not here
# Seconds, as the busy timeout: then the request answers 503 (Retry-After), the task retries. Not longer:
# since the run events are batched (3 write transactions per message, not 10), no post of 200 bursts
# of 160 waited it out (docs/reliability.md), and past 10 s a client's own timeout is near (httpx's
# default is 5 s), where a clean 503 (nothing stored, retry) is better than a timeout that leaves the
# client unsure whether its post was stored.
WRITER_WAIT = 10.0


@contextmanager
def _one_writer_per_process() -> Iterator[None]:
    """On SQLite the threads of one process queue here for the write lock, so each process has one
    thread in SQLite's busy loop. That loop polls with sleeps (up to 100 ms), not in order: with 32
    threads of an API process polling at once, one could starve past the busy timeout (measured:
    ``database is locked`` on a few posts of a burst of 160). A thread lock hands over at once and in
    rough arrival order; the busy loop is left to the 3-4 processes (API workers, worker, beat)."""
    if not _WRITER.acquire(timeout=WRITER_WAIT):
        raise exc.OperationalError("BEGIN IMMEDIATE", None,
                                   sqlite3.OperationalError(f"database is locked (no write turn in {WRITER_WAIT:g} s)"))
    try:
        yield
    finally:
        _WRITER.release()


def _begin_immediate(session: Session) -> None:
    """On SQLite a write transaction takes the write lock when it begins (issue 10: a 503 under bursts).

    pysqlite begins a transaction late: a deferred ``BEGIN`` just before the first INSERT/UPDATE/DELETE,
    the SELECTs before it running outside any transaction. So a service's read-then-write (the thread
    busy check, the idempotency look-up, the out-of-attempts check) was not atomic on SQLite, and a
    write that must upgrade a read lock the connection still holds (a SELECT not yet reset) gets
    SQLITE_BUSY at once: SQLite does not run the busy handler for an upgrade, as waiting could not help.
    ``BEGIN IMMEDIATE`` waits for the write lock first, under the busy timeout, and every statement
    after it runs in one serialized transaction, as on PostgreSQL. pysqlite sees the transaction open
    and adds no BEGIN of its own; commit and rollback end it as usual. ``read()`` stays as it was: in
    WAL mode readers never wait for the writer.

    Measured with devtools/burst.py (8 users x 20 posts at once, embedded stack, a loaded 2-core
    machine): this alone made things worse, 8 posts of the first burst of 160 answered 503 after
    waiting out the 10 s busy timeout, as the write lock is now held from the first statement and 32
    threads per API process polled for it; with ``_one_writer_per_process`` none did (see the report
    in docs/reliability.md)."""
    session.connection().exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def read() -> Iterator[Session]:
    """A session for reads that need no transaction. On PostgreSQL its connection runs in autocommit,
    so each statement is one round trip, without BEGIN and COMMIT around it. Use transaction() for
    anything that writes."""
    if _bound is not None:
        with _bound() as session:
            yield session
        return
    engine()
    assert _factory is not None and _engine is not None
    with _engine.connect() as connection, _factory(bind=connection) as session:
        if connection.dialect.driver != "psycopg2":
            yield session
            return
        # psycopg2's own autocommit switch, not execution_options(isolation_level=...): that one
        # resets the connection with an extra "SET default_transaction_isolation" round trip.
        raw = connection.connection.dbapi_connection
        raw.autocommit = True
        try:
            yield session
        finally:
            if raw.closed == 0:  # a connection lost mid-read is invalidated; resetting it would raise
                raw.autocommit = False


@contextmanager
def one_statement() -> Iterator[Session]:
    """A session for exactly one statement that writes and is atomic on its own (a data-modifying CTE
    on PostgreSQL). On PostgreSQL (psycopg2) it runs in autocommit: the statement is its own
    transaction, so BEGIN and COMMIT, two round trips, are not sent (issue 14: a message's hot path
    counted 23 round trips). Elsewhere (SQLite, tests bound to a connection) it is a transaction().
    Never run a second statement in it: the two would commit separately."""
    if _bound is not None or engine().dialect.driver != "psycopg2":
        with transaction() as session:
            yield session
        return
    with read() as session:
        yield session


@contextmanager
def bind_to(connection: Connection) -> Iterator[None]:
    """Route every ``transaction()`` and ``read()`` to ``connection`` until the block ends.

    The caller begins a transaction on the connection first and rolls it back afterwards; sessions
    join it with ``join_transaction_mode="create_savepoint"`` (SQLAlchemy 2), so a service's commit
    releases a SAVEPOINT and its rollback returns to one, and nothing outlives the caller's rollback.
    """
    global _bound
    previous = _bound
    _bound = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield
    finally:
        _bound = previous


def is_postgres() -> bool:
    return engine().dialect.name == "postgresql"
