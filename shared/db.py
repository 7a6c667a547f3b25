"""Engine and sessions. One engine per process, created lazily so forked workers get their own.

Services open sessions only through ``transaction()`` and ``read()``. ``bind_to(connection)`` points
both at one connection that the caller holds inside a transaction, each ``transaction()`` becoming a
savepoint in it: the in-process core tests (tests/core) run every test that way and roll it all back.
"""
from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from shared.config import settings

log = logging.getLogger(__name__)

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
    if engine.dialect.driver == "psycopg2":
        event.listen(engine, "before_cursor_execute", _execute_prepared, retval=True)
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


PREPARED = "threadline_prepared"  # execution option: run this statement as a server-side prepared one
LEAD = "threadline_lead"  # execution option: a statement sent ahead of this one, in its round trip (led_by)
COMMITS = "threadline_commits"  # execution option: COMMIT rides with this statement (commits)
IN_LINE = "threadline_in_line"  # connection info: an in-line transaction is open (transaction(in_line=True))
_IDLE = 0  # psycopg2.extensions.TRANSACTION_STATUS_IDLE: no transaction open on the server


def prepared(statement):
    """Mark a hot statement (every message runs it) to be run as a server-side prepared statement on
    PostgreSQL: PREPARE once per connection, then EXECUTE with the parameters (_execute_prepared).

    psycopg2 sends every statement as text with its parameters inlined, so the server parses,
    analyzes, rewrites and plans it on every call; for the claim and the finish (WITH statements of
    several CTEs) that was most of the backend's CPU per message (measured in docs/performance.md).
    A prepared statement is parsed once per connection and, once PostgreSQL's plan cache settles on
    its generic plan (after five executions), not planned again. Mark only statements whose SQL text
    is the same on every call (no expanding IN lists of varying length): each distinct text is one
    prepared statement per connection."""
    return statement.execution_options(**{PREPARED: True})


def led_by(statement, lead):
    """Mark ``statement`` to be sent on psycopg2 with ``lead`` ahead of it in one simple-query string:
    one round trip for both. The lead runs first and to its end (a lock waits there until granted);
    the statement then starts with a snapshot of its own, taken after the lead, as if sent apart. The
    lead's result is dropped; its parameters must be parameters of the statement too (the one dict
    SQLAlchemy makes for the statement fills both) and it is prepared as a ``prepared()`` statement
    is. Only the psycopg2 hook sends the lead: run it yourself elsewhere (see ``execute_led``)."""
    return statement.execution_options(**{LEAD: lead})


def execute_led(session, statement, lead, parameters: dict):
    """Run ``lead`` then ``statement`` (marked with ``led_by(statement, lead)``) with ``parameters``:
    one round trip on psycopg2, two statements elsewhere. Returns the statement's result."""
    if session.get_bind().dialect.driver != "psycopg2":
        session.execute(lead, parameters)
    return session.execute(statement, parameters)


def commits(statement):
    """Mark the last statement of an in-line transaction (``transaction(in_line=True)``): the COMMIT is
    sent with it, in its round trip. Elsewhere (other transactions, SQLite, tests bound to a
    connection) the mark does nothing and the transaction commits as usual. Run nothing after it in
    the transaction: that would begin another one."""
    return statement.execution_options(**{COMMITS: True})


_BIND = re.compile(r"%%|%\((\w+)\)s")
_EXPANDED = re.compile(r"(\w+)_\d+")  # an IN list's item: SQLAlchemy names them <bind>_1, <bind>_2, ...


@dataclass(frozen=True)
class _Form:
    name: str  # the prepared statement's name: a hash of its PREPARE text
    prepare: str  # PREPARE name(types) AS ... with $n parameters
    execute: str  # EXECUTE name(%(a)s, ...) for psycopg2
    constants: tuple[str, ...]  # the parameters inlined as literals (see _prepared_form)


_FORMS: dict[tuple, _Form] = {}


def _constant_names(statement: str, context) -> tuple[str, ...]:
    """The parameters of ``statement`` to inline as literals: constants of the statement itself (not
    values the caller passes; SQLAlchemy binds them without ``required``) that are an IN list (the
    active statuses: a partial index on them is used only when the plan sees the values) or not a
    string (a LIMIT, the 1 of ``attempts + 1``). A string compared with ``=`` (``runs.status =
    'in_progress'``) stays a parameter: seeing it, the generic plan could prove a partial index's
    predicate and scan the whole index (every active run) to find one run by its id; measured with
    6,110 runs in progress, the claim read 1,700 buffers instead of 90. Without it the run is found
    by its primary key, whatever the statistics said when the plan was made."""
    binds = context.compiled.binds
    constants = []
    for name in dict.fromkeys(m.group(1) for m in _BIND.finditer(statement) if m.group(1)):
        bind = binds.get(name)
        if bind is None and (item := _EXPANDED.fullmatch(name)) is not None:
            bind = binds.get(item.group(1))
            bind = bind if bind is not None and bind.expanding else None
        if bind is not None and not bind.required and (bind.expanding or not isinstance(bind.value, str)):
            constants.append(name)
    return tuple(constants)


def _prepared_form(statement: str, parameters: dict, cursor, context, dialect) -> _Form:
    """How to run ``statement`` prepared: the statement's constants are inlined as the literals
    psycopg2 would have sent (so the plan sees them as before: a partial index on the active statuses
    still matches, a LIMIT is known), every other parameter is a typed $n."""
    constant_names = _CONSTANTS.get(statement)
    if constant_names is None:
        constant_names = _CONSTANTS[statement] = _constant_names(statement, context)
    key = (statement, *(parameters[name] for name in constant_names))
    if (form := _FORMS.get(key)) is not None:
        return form
    numbered: dict[str, int] = {}

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return "%"  # pyformat's escaped percent; PREPARE's text is sent without interpolation
        if name in constant_names:
            return cursor.mogrify("%s", (parameters[name],)).decode()
        return f"${numbered.setdefault(name, len(numbered) + 1)}"

    text = _BIND.sub(replace, statement)
    types = ", ".join(_parameter_type(context, name, dialect) for name in numbered)
    name = "tl_" + hashlib.sha1(text.encode()).hexdigest()[:24]
    prepare = f"PREPARE {name}{f'({types})' if numbered else ''} AS {text}"
    arguments = ", ".join(f"%({n})s" for n in numbered)
    form = _FORMS[key] = _Form(name, prepare, f"EXECUTE {name}({arguments})" if numbered else f"EXECUTE {name}",
                               constant_names)
    return form


_CONSTANTS: dict[str, tuple[str, ...]] = {}


def _parameter_type(context, name: str, dialect) -> str:
    """The SQL type of a bind parameter for PREPARE: the one SQLAlchemy knows, else ``unknown`` (the
    server infers it from where the parameter stands, e.g. an untyped limit)."""
    bind = context.compiled.binds.get(name)
    if bind is None:
        return "unknown"
    try:
        return bind.type.compile(dialect=dialect)
    except exc.CompileError:  # NullType: no SQL name
        return "unknown"


def _execute_prepared(conn, cursor, statement, parameters, context, executemany):
    """before_cursor_execute on psycopg2: a statement marked with ``prepared()`` runs as ``EXECUTE
    name(...)``, PREPAREd first on this connection when it is not yet; a statement marked with
    ``led_by()`` carries its lead ahead of it, and in an in-line transaction (``transaction(in_line=
    True)``) the first statement carries the BEGIN and one marked with ``commits()`` the COMMIT: one
    simple-query string each, one round trip (PostgreSQL runs the statements of such a string in
    order, each with a snapshot of its own, and skips the rest of the string after an error)."""
    options = context.execution_options if context is not None else _NO_OPTIONS
    if not executemany and isinstance(parameters, dict) and context is not None and context.compiled is not None:
        if options.get(PREPARED):
            statement = _as_prepared(conn, cursor, statement, parameters, context)
        if (lead := options.get(LEAD)) is not None:
            statement = f"{_lead_text(conn, cursor, lead, parameters)}; {statement}"
    if conn.info.get(IN_LINE):
        if conn.connection.dbapi_connection.info.transaction_status == _IDLE:
            if executemany:
                cursor.execute("BEGIN")
            else:
                statement = f"BEGIN; {statement}"
        if options.get(COMMITS) and not executemany:
            statement = f"{statement}; COMMIT"
    return statement, parameters


_NO_OPTIONS: dict = {}


def _as_prepared(conn, cursor, statement: str, parameters: dict, context) -> str:
    """``statement`` as ``EXECUTE name(...)``, PREPAREd on this connection first when it is not yet.

    The set of prepared names lives in the pool record's info, which belongs to the DBAPI connection
    (a new connection starts empty). A PREPARE that fails leaves the statement to run as plain text
    from then on. Inside a transaction the PREPARE runs under a savepoint, so its failure does not
    abort the caller's transaction; outside one it is a statement of its own. Either way it is one
    extra round trip per connection and statement, once. Prepared statements outlive a rolled-back
    transaction, so the bookkeeping holds."""
    try:
        form = _prepared_form(statement, parameters, cursor, context, conn.dialect)
    except TypeError:  # an unhashable constant: run it as text
        return statement
    if not _prepare(conn, cursor, form):
        return statement
    context.threadline_form = form  # for fetch_prepared's fast path (_Direct)
    return form.execute


def _prepare(conn, cursor, form: _Form) -> bool:
    """PREPARE ``form`` on this connection unless it is already; False when the server refused it."""
    done: set[str] = conn.info.setdefault("threadline_prepared", set())
    if form.name in done:
        return True
    if form.name in _UNPREPARABLE:
        return False
    import psycopg2  # this hook is only registered on psycopg2 engines

    raw = conn.connection.dbapi_connection
    # in a transaction: psycopg2's own (it sends BEGIN before this), or one of ours (autocommit, BEGIN sent)
    in_transaction = not raw.autocommit or raw.info.transaction_status != _IDLE
    try:
        if in_transaction:
            cursor.execute(f"SAVEPOINT {form.name}; {form.prepare}; RELEASE SAVEPOINT {form.name}")
        else:
            cursor.execute(form.prepare)
    except (psycopg2.OperationalError, psycopg2.InterfaceError):
        raise  # the connection failed, not the statement: SQLAlchemy's usual handling (invalidate, retry)
    except psycopg2.Error:  # PostgreSQL refused this PREPARE: the statement runs as before
        if in_transaction:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {form.name}; RELEASE SAVEPOINT {form.name}")
        _UNPREPARABLE.add(form.name)
        log.warning("cannot prepare statement %s; it runs unprepared", form.name, exc_info=True)
        return False
    done.add(form.name)
    return True


_LEADS: dict = {}  # lead statement -> its compiled form (psycopg2)


def _lead_text(conn, cursor, lead, parameters: dict) -> str:
    """The lead's SQL (``EXECUTE name(...)``, or its text when it cannot be prepared), its parameters
    named as in the led statement's (psycopg2 fills both from the one parameter dict)."""
    compiled = _LEADS.get(lead)
    if compiled is None:
        compiled = _LEADS[lead] = lead.compile(dialect=conn.dialect)
    form = _prepared_form(compiled.string, parameters, cursor, _Compiled(compiled), conn.dialect)
    return form.execute if _prepare(conn, cursor, form) else compiled.string


@dataclass(frozen=True)
class _Compiled:
    """What _prepared_form reads of an execution context, for a lead compiled apart."""

    compiled: object


_UNPREPARABLE: set[str] = set()


@dataclass(frozen=True)
class _Direct:
    """How fetch_prepared runs a prepared statement on the raw cursor: its EXECUTE text, where each
    of its parameters comes from, and how a result row is made."""

    form: _Form
    # (name in EXECUTE, the caller's key or None for a constant of the statement, bind processor, constant)
    parameters: tuple[tuple[str, str | None, object, object], ...]
    row: type  # a namedtuple of the result's columns
    processors: tuple  # per column, a result processor or None; () when there is none at all


_DIRECT: dict[object, _Direct] = {}
_EXECUTE_NAMES = re.compile(r"%\((\w+)\)s")


def fetch_prepared(session: Session | Connection, statement, parameters: dict) -> list:
    """Every row of a ``prepared()`` statement (the claim, the finish: every message runs them), as
    named tuples (``row.column``, as SQLAlchemy's rows).

    The first run on a connection goes through SQLAlchemy (which PREPAREs it, _execute_prepared);
    after that, once one run has shown how (``_Direct``), the ``EXECUTE`` goes to the DBAPI cursor
    with the parameters put through the statement's bind processors, and the rows through its result
    processors. That skips, per run, what SQLAlchemy redoes for a statement it has compiled and cached
    already: the execution context, the parameters of every bind (the statement's constants
    included), the expanding IN lists rendered anew into the text (which the EXECUTE does not even
    send), the result's metadata and rows (docs/performance.md, "The worker's run"). Errors are
    SQLAlchemy's as before (wrapped, a lost connection invalidated: the task's retry sees
    ``OperationalError``). Not used while other cursor-execute listeners are on the engine
    (OpenTelemetry's instrumentation, the round-trip counting tests): they see every statement."""
    connection = session if isinstance(session, Connection) else session.connection()
    direct = _DIRECT.get(statement)
    if (direct is not None and direct.form.name in connection.info.get("threadline_prepared", ())
            and len(connection.dispatch.before_cursor_execute) == 1 and not connection.dispatch.after_cursor_execute
            and not connection.info.get(IN_LINE)):  # an in-line transaction's BEGIN/COMMIT ride in the hook
        return _fetch_direct(connection, direct, parameters)
    result = session.execute(statement, parameters)
    rows = result.all()
    form = getattr(result.context, "threadline_form", None)
    if form is not None and statement not in _DIRECT:
        _DIRECT[statement] = _direct(form, result, parameters) or _NOT_DIRECT
    return rows


_NOT_DIRECT = _Direct(_Form("", "", "", ()), (), tuple, ())  # never in a connection's prepared set


def _direct(form: _Form, result, parameters: dict) -> _Direct | None:
    """The _Direct of a statement, from one run through SQLAlchemy; None (the statement always goes
    through SQLAlchemy) unless it reproduces that run's parameters exactly."""
    import collections

    context = result.context
    compiled, sent = context.compiled, context.parameters[0]
    processors = compiled._bind_processors
    plan = []
    for name in dict.fromkeys(_EXECUTE_NAMES.findall(form.execute)):
        bind = compiled.binds.get(name)
        if bind is None:
            return None
        if bind.key in parameters:
            plan.append((name, bind.key, processors.get(name), None))
        else:
            plan.append((name, None, None, sent[name]))
    direct_parameters = tuple(plan)
    if _direct_parameters(direct_parameters, parameters) != {name: sent[name] for name, *_ in plan}:
        return None
    keys = list(result.keys())
    row_processors = tuple(result._metadata._processors or (None,) * len(keys))  # as made for this result's
    if len(row_processors) != len(keys):  # column types (cursor.description), as SQLAlchemy applies them
        return None
    try:
        row = collections.namedtuple("Row", keys)
    except ValueError:  # a column name that is not an identifier
        return None
    return _Direct(form, direct_parameters, row, row_processors if any(row_processors) else ())


def _direct_parameters(plan, parameters: dict) -> dict:
    return {name: (constant if key is None else processor(parameters[key]) if processor else parameters[key])
            for name, key, processor, constant in plan}


def _fetch_direct(connection: Connection, direct: _Direct, parameters: dict) -> list:
    sent = _direct_parameters(direct.parameters, parameters)
    cursor = None
    try:
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute(direct.form.execute, sent)
        rows = cursor.fetchall()
        cursor.close()
    except BaseException as error:  # as Connection._execute_context: SQLAlchemy wraps it, and invalidates
        # a lost connection (or one left mid-statement by an exit exception, e.g. a gevent Timeout)
        connection._handle_dbapi_exception(error, direct.form.execute, sent, cursor, None)
    make, processors = direct.row._make, direct.processors
    if not processors:
        return [make(row) for row in rows]
    return [make([value if process is None or value is None else process(value)
                  for process, value in zip(processors, row)]) for row in rows]


_engine_lock = threading.Lock()


def engine() -> Engine:
    if _bound is not None:
        return _bound.kw["bind"].engine
    global _engine, _factory
    if _engine is None:
        with _engine_lock:  # the first two threads of a process (a worker's pool) must not race here:
            if _engine is None:  # one engine, and its factory set before anyone can see the engine
                made = make_engine(settings.database_url)
                _factory = sessionmaker(made, expire_on_commit=False)
                _engine = made
    return _engine


def dispose() -> None:
    """Forget the engine (after fork, or when tests switch databases)."""
    global _engine, _factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = _factory = None


@contextmanager
def transaction(*, in_line: bool = False) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error, always closed.

    ``in_line=True`` (psycopg2; elsewhere a plain transaction): BEGIN is sent with the first statement
    and COMMIT with the statement marked ``commits()``, not as round trips of their own (see
    _in_line_transaction)."""
    if _bound is not None:
        with _bound() as session, session.begin():  # a SAVEPOINT in the bound connection's transaction
            yield session
        return
    engine()
    assert _factory is not None and _engine is not None
    if in_line and _engine.dialect.driver == "psycopg2":
        with _in_line_transaction() as session:
            yield session
        return
    if _engine.dialect.name != "sqlite":
        with _factory() as session, session.begin():
            yield session
        return
    with _one_writer_per_process(), _factory() as session, session.begin():
        _begin_immediate(session)
        yield session


@contextmanager
def _in_line_transaction() -> Iterator[Session]:
    """A transaction whose BEGIN and COMMIT ride with its statements (issue 14: psycopg2 sends each as
    a round trip of its own; the post was BEGIN · lock · reserve · insert · COMMIT).

    The connection runs in psycopg2's autocommit mode, so psycopg2 sends no BEGIN of its own; the
    before_cursor_execute hook puts ``BEGIN;`` in front of the first statement (while the server has
    no transaction open) and ``; COMMIT`` behind the one marked ``commits()``. Isolation is the
    same READ COMMITTED transaction as before: one BEGIN, the statements in order, each with its own
    snapshot. When the block ends with the transaction still open (no statement marked, ORM changes
    flushed at the end) a COMMIT is sent as before. On an error the server skips the rest of the
    string (the COMMIT too) and the transaction is rolled back here; a connection that cannot be
    rolled back is invalidated, so none goes back to the pool inside a transaction."""
    assert _factory is not None and _engine is not None
    with _engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        raw.autocommit = True
        connection.info[IN_LINE] = True
        try:
            with _factory(bind=connection) as session:
                yield session
                session.commit()  # the ORM's pending changes (a no-op COMMIT for psycopg2 in autocommit)
            if raw.info.transaction_status != _IDLE:
                connection.exec_driver_sql("COMMIT")
        finally:
            connection.info.pop(IN_LINE, None)
            _leave_in_line(connection, raw)


def _leave_in_line(connection: Connection, raw) -> None:
    """Give the connection back as it was taken: no transaction open, autocommit off."""
    if connection.invalidated or raw.closed:
        return  # SQLAlchemy discards it
    try:
        if raw.info.transaction_status != _IDLE:  # an error (or a BaseException) left it open
            with raw.cursor() as cursor:
                cursor.execute("ROLLBACK")
        raw.autocommit = False
    except Exception:  # noqa: BLE001 - a connection we cannot reset must not be reused
        log.warning("could not end an in-line transaction; discarding the connection", exc_info=True)
        connection.invalidate()


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
    if _engine.dialect.driver != "psycopg2":
        with _engine.connect() as connection, _factory(bind=connection) as session:
            yield session
        return
    with _autocommit_connection() as connection, _factory(bind=connection) as session:
        yield session


@contextmanager
def _autocommit_connection() -> Iterator[Connection]:
    """A pooled psycopg2 connection in autocommit (read(), read_rows(), one_statement()), switched by
    psycopg2's own flag, not execution_options(isolation_level=...), which resets the connection with
    an extra "SET default_transaction_isolation" round trip; switched back before the pool gets it."""
    with engine().connect() as connection:
        raw = connection.connection.dbapi_connection
        raw.autocommit = True
        try:
            yield connection
        finally:
            if raw.closed == 0:  # a connection lost mid-statement is invalidated; resetting it would raise
                raw.autocommit = False


@contextmanager
def read_rows() -> Iterator[Connection]:
    """``read()`` without the ORM: a Core connection in autocommit on PostgreSQL, for the per-request
    reads that return plain rows (the token check, the waiter's look at its answer). An ORM Session
    around a Core statement costs its creation, its close and the ORM's execute path (~35% of such a
    read's client CPU, cProfile). Tests bound to a connection (``bind_to``) read from that connection."""
    if _bound is not None:
        yield _bound.kw["bind"]
    elif engine().dialect.driver != "psycopg2":
        with engine().connect() as connection:
            yield connection
    else:
        with _autocommit_connection() as connection:
            yield connection


@contextmanager
def one_statement() -> Iterator[Session | Connection]:
    """Where to run exactly one statement that writes and is atomic on its own (a data-modifying CTE
    on PostgreSQL), with ``fetch_prepared``. On PostgreSQL (psycopg2) a Connection in autocommit:
    the statement is its own transaction, so BEGIN and COMMIT, two round trips, are not sent (issue
    14: a message's hot path counted 23 round trips), and no ORM session is built around it (its
    making and closing cost more CPU than the statement's own execution, docs/performance.md).
    Elsewhere (SQLite, tests bound to a connection) it is a transaction()'s session. Never run a
    second statement in it: the two would commit separately."""
    if _bound is not None or engine().dialect.driver != "psycopg2":
        with transaction() as session:
            yield session
        return
    with _autocommit_connection() as connection:
        yield connection


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
