"""Engine and sessions. One engine per process, created lazily so forked workers get their own."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.config import settings

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


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
    return create_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                         pool_pre_ping=True, pool_timeout=settings.db_pool_timeout)


def engine() -> Engine:
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
    engine()
    assert _factory is not None
    with _factory() as session, session.begin():
        yield session


def is_postgres() -> bool:
    return engine().dialect.name == "postgresql"
