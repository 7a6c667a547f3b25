"""Posting, reading, waiting for and cancelling messages. Posting stores the user message and the queued
response message, and has ``shared.services.runs`` admit and insert the run that will answer it (after
applying the thread-busy policy: enqueue, reject, interrupt or rollback), all in one transaction; then
it enqueues the run: nothing is lost if the broker is down. Cancelling (``cancel_message``) lets
``shared.services.runs`` change the run's state and announces the change after the commit."""
from __future__ import annotations

import hashlib
import json
import uuid
from types import SimpleNamespace
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, insert, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import events, notify, permissions
from shared.config import settings
from shared.db import commits, execute_led, led_by, prepared, read, read_rows, transaction
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Message, Run, RunStep, Status, Thread, utcnow
from shared.permissions import Principal
from shared.queue import enqueue_queued_run, enqueue_run
from shared.services import runs
from shared.services.threads import MAX_THREAD_ID, check_model, check_workflow, owned_thread

MAX_CONTENT = 5000
CREATED_AT_STEP = timedelta(microseconds=1)


@dataclass
class Exchange:
    """A user message and the assistant message that answers it."""

    request: Message
    response: Message
    run_id: uuid.UUID
    replayed: bool = False
    steps: list[RunStep] | None = None
    # after await_response: the answer's run and every step of it (v1-threads' ``details``), read with
    # the answer; None when not read (or no run produced the message)
    run: Any = None
    run_steps: list | None = None


def _request_hash(**fields: Any) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _replay(session: Session, thread_id: int, client_message_id: str, request_hash: str) -> Exchange | None:
    request = session.scalar(
        select(Message).where(Message.thread_id == thread_id, Message.client_message_id == client_message_id)
    )
    if request is None:
        return None
    if request.request_hash != request_hash:
        raise Conflict("This idempotency key was already used with a different request body.")
    run = runs.run_for_request(session, request.id)
    if run is None:
        raise Conflict("This idempotency key belongs to a message that was not posted for an answer.")
    response = session.get(Message, run.response_message_id)
    return Exchange(request=request, response=response, run_id=run.id, replayed=True)


# Every post runs these: Core statements on the tables, built once (see shared/services/runs.py).
MESSAGES, THREADS = Message.__table__, Thread.__table__
_INSERT_MESSAGES = insert(MESSAGES)


# The name (context or state) the thread's client last used; walks the thread's messages newest first.
_LAST_CONTEXT_KEY = (
    select(MESSAGES.c.context_key)
    .where(MESSAGES.c.thread_id == bindparam("thread_id"), MESSAGES.c.context_key.is_not(None))
    .order_by(MESSAGES.c.seq.desc()).limit(1)
)


def _last_created(thread_id):
    return select(func.max(MESSAGES.c.created_at)).where(MESSAGES.c.thread_id == thread_id).scalar_subquery()


def _last_key(thread_id):
    return (select(MESSAGES.c.context_key)
            .where(MESSAGES.c.thread_id == thread_id, MESSAGES.c.context_key.is_not(None))
            .order_by(MESSAGES.c.seq.desc()).limit(1).scalar_subquery())


@lru_cache(maxsize=16)
def _reserve_statement(by_public_id: bool, with_context: bool, for_post: bool = False, subqueries: bool = True):
    """The thread's row lock and seq reservation, returning what the caller needs. A post
    (``for_post``) also gets, in the same round trip, the user's active runs (the cap: the user row
    is locked before this statement starts, so its count sees every run committed before) and the
    context key the thread's client last used. A post's reservation is led by the user's lock
    (runs.LOCK_OWNER, shared.db.led_by): on psycopg2 the lock and this statement are one round trip,
    two statements, the count's snapshot taken after the lock was granted.

    ``subqueries=False`` (SQLite) returns the thread's own columns only: SQLAlchemy renders SQLite's
    RETURNING unqualified, so a correlated subquery there compares the subquery's own columns
    (``thread_id = id``, ``user_id = user_id``) and answers for every thread and user; _reserve_seqs
    reads those values with separate statements instead (in process: no round trips to save)."""
    values: dict[str, Any] = {"last_seq": THREADS.c.last_seq + bindparam("count"),
                              "updated_at": bindparam("now", type_=THREADS.c.updated_at.type)}
    if with_context:
        values["context"] = bindparam("new_context", type_=THREADS.c.context.type)
    returned = [THREADS.c.id, THREADS.c.last_seq, THREADS.c.model_id, THREADS.c.workflow_id, THREADS.c.user_id]
    if subqueries:
        returned.append(_last_created(THREADS.c.id).label("last_created"))
        if for_post:
            returned += [runs.active_runs_of_user(THREADS.c.user_id).label("active_runs"),
                         _last_key(THREADS.c.id).label("last_context_key")]
    statement = prepared(
        update(THREADS)
        .where(THREADS.c.public_id == bindparam("ref") if by_public_id else THREADS.c.id == bindparam("ref"),
               THREADS.c.tenant_id == bindparam("owner_tenant_id"), THREADS.c.user_id == bindparam("owner_user_id"))
        .values(values)
        .returning(*returned)
    )
    return led_by(statement, runs.LOCK_OWNER) if for_post else statement


_EXTRAS_OF_POST = select(_last_created(bindparam("thread_id")).label("last_created"),
                         runs.active_runs_of_user(bindparam("user_id")).label("active_runs"),
                         _last_key(bindparam("thread_id")).label("last_context_key"))


def _reserve_seqs(session: Session, principal: Principal, thread_ref: int | uuid.UUID, count: int,
                  context: dict[str, Any] | None = None, *, for_post: bool = False):
    """Lock the caller's thread and take the next ``count`` seqs, in one statement that also returns
    what the post needs (the thread's model, workflow and last message time; for a post also the
    user's active runs and the last context key). Unknown threads and other users' threads fall back
    to owned_thread for the precise 404/403 (after the cap, which a post checks first)."""
    if isinstance(thread_ref, int) and not 0 < thread_ref <= MAX_THREAD_ID:
        raise NotFound("Thread not found.")
    subqueries = session.get_bind().dialect.name == "postgresql"
    statement = _reserve_statement(not isinstance(thread_ref, int), context is not None, for_post, subqueries)
    parameters = {"ref": thread_ref, "owner_tenant_id": principal.tenant_id, "owner_user_id": principal.user_id,
                  "count": count, "now": utcnow(), "new_context": context}
    if for_post:  # the user's lock first (the cap), in the same round trip on psycopg2
        row = execute_led(session, statement, runs.LOCK_OWNER, parameters).first()
    else:
        row = session.execute(statement, parameters).first()
    if row is None:
        if for_post:
            runs.check_capacity(session, principal.user_id)  # a post over the cap is refused first, as before
        owned_thread(session, principal, thread_ref)  # raises NotFound or Forbidden
        raise NotFound("Thread not found.")
    if subqueries:
        return row
    extras = session.execute(_EXTRAS_OF_POST, {"thread_id": row.id, "user_id": row.user_id}).one()
    return SimpleNamespace(**row._asdict(), **extras._asdict())


def _after(last: datetime | None) -> datetime:
    """A creation time later than every message of the thread; call it with the thread row locked.

    The messages of an exchange are written in one transaction and API hosts' clocks differ: without
    this, messages could share a ``created_at`` (or go back in time) and a ``before`` cursor would skip
    some of them. With it, ``created_at`` order is ``seq`` order and every value is unique.
    """
    now = utcnow()
    return max(now, last + CREATED_AT_STEP) if last is not None else now


def post_user_message(
    principal: Principal,
    thread_ref: int | uuid.UUID,
    *,
    content: str,
    context: dict[str, Any] | None = None,
    context_key: str | None = None,
    client_message_id: str | None = None,
    model_id: str | None = None,
    workflow_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    busy_policy: runs.BusyPolicy = runs.BusyPolicy.ENQUEUE,
) -> Exchange:
    """Store the message and its pending answer, then hand the run to the workers.

    ``message_id`` is a caller-chosen id for the user message (v1-threads); pass it as
    ``client_message_id`` too when it should make the post idempotent. ``busy_policy`` (the
    ``Thread-Busy`` header) says what to do when the thread is still answering: queue behind it,
    refuse with Conflict, interrupt it (its partial answer stays) or roll it back (its messages and
    steps are deleted and the thread's later seqs close up, see runs._delete_and_close_gaps). A replay
    of an idempotent post returns the stored exchange before any of these checks.
    """
    principal.require(permissions.MESSAGES_CREATE)
    if not content or not content.strip():
        raise ValidationFailed("Content is required.", fields={"content": ["Content must not be empty."]})
    if len(content) > MAX_CONTENT:
        raise ValidationFailed("Content is too long.", fields={"content": [f"At most {MAX_CONTENT} characters."]})
    check_model(model_id)
    fingerprint = _request_hash(content=content, context=context, model=model_id, workflow=workflow_id)
    try:
        # In line (psycopg2): BEGIN goes with the first statement, COMMIT with the insert (_post_insert),
        # so the usual post is two round trips: BEGIN; lock the user; reserve · insert; COMMIT.
        with transaction(in_line=True) as session:
            if client_message_id:
                thread_id = owned_thread(session, principal, thread_ref).id
                if replay := _replay(session, thread_id, client_message_id, fingerprint):
                    return replay
            # the user row locked (the cap), then the thread's seqs with the user's active runs counted
            thread = _reserve_seqs(session, principal, thread_ref, 2, context, for_post=True)
            cancels, freed = runs.apply_busy_policy(session, thread.id, busy_policy)  # the thread row is locked
            runs.refuse_over_capacity(thread.active_runs, cancels)  # raising rolls the cancels back too
            last_seq = thread.last_seq - freed
            if context_key is None:  # a follow-up without context/state keeps the thread's word for it (seed 001)
                context_key = (thread.last_context_key if not freed  # a rollback may have deleted it: look again
                               else session.scalar(_LAST_CONTEXT_KEY, {"thread_id": thread.id}))
            workflow = check_workflow(session, principal, workflow_id or thread.workflow_id)
            now = _after(thread.last_created)  # the thread row is locked now: strictly increasing
            answer_at = now + CREATED_AT_STEP
            chosen_model = model_id or (workflow.model_id if workflow else None) or thread.model_id
            common = dict(thread_id=thread.id, context_key=context_key, updated_context=None, citations=[],
                          references=[], details=None, is_error=False)
            request = Message(
                id=message_id or uuid.uuid4(), seq=last_seq - 1, role="user", content=content,
                context=context, client_message_id=client_message_id, request_hash=fingerprint,
                status=Status.COMPLETED, model_id=None, created_at=now, updated_at=now, **common,
            )
            response = Message(
                id=uuid.uuid4(), seq=last_seq, role="assistant", content="", context=None,
                client_message_id=None, request_hash=None, status=Status.QUEUED, model_id=chosen_model,
                created_at=answer_at, updated_at=answer_at, **common,
            )
            # Core inserts of plain rows: the ORM unit of work costs more CPU than the round trips it
            # would save. On PostgreSQL both messages and the run are one statement (_post_insert).
            run = runs.new_run(
                thread_id=thread.id, user_id=principal.user_id, request_message_id=request.id,
                response_message_id=response.id, model_id=chosen_model,
                workflow_id=workflow.id if workflow else None, queued_at=now, permissions=principal.permissions,
            )
            if session.get_bind().dialect.name == "postgresql":
                session.execute(_post_insert(), {**_row(request, "req_"), **_row(response, "res_"),
                                                 **runs.run_params(run)})
                logged = False
            else:  # SQLite has no data-modifying CTEs (and no round trips to save)
                session.execute(_INSERT_MESSAGES, [_row(request), _row(response)])
                runs.insert_run(session, run)
                # Embedded mode: run.queued in this transaction, not in a SQLite write of its own (issue 10)
                logged = events.in_table() and events.insert_in(
                    session, run["id"], [events.queued(run["id"], response.id, request.id)], 0)
            run_id = run["id"]
            exchange = Exchange(request=request, response=response, run_id=run_id)
    except IntegrityError:
        if not client_message_id:
            raise
        with transaction() as session:  # a concurrent retry with the same key won the race
            thread = owned_thread(session, principal, thread_ref)
            replay = _replay(session, thread.id, client_message_id, fingerprint)
            if replay is None:  # the id is taken elsewhere (another thread): not this request's to reuse
                raise Conflict("This message id is already in use.") from None
            return replay
    _announce(cancels, rolled_back=busy_policy == runs.BusyPolicy.ROLLBACK)
    if busy_policy == runs.BusyPolicy.INTERRUPT:
        if not logged:
            events.run_queued(exchange.run_id, exchange.response.id, exchange.request.id)  # before the worker's run.started
        for cancel in cancels:  # the new answer waits for these to end: make sure they do, promptly
            if cancel.effect == runs.CancelEffect.REQUESTED:
                _stop_within_grace(cancel.run_id, cancel.response_message_id, CANCEL_GRACE)
        enqueue_run(exchange.run_id)
    elif logged:  # embedded mode: run.queued went in with the post's own transaction
        enqueue_run(exchange.run_id)
    else:  # run.queued, then the task (in that order, one Redis round trip in production)
        enqueue_queued_run(exchange.run_id, exchange.response.id, exchange.request.id)
    return exchange


def _announce(cancels: list[runs.Cancel], *, rolled_back: bool = False) -> None:
    """After the commit: end the event logs of runs cancelled while queued and wake their waiters,
    start the runs queued behind them, and tell the workers holding runs in progress to stop."""
    for cancel in cancels:
        if rolled_back and settings.redis_url:  # end its open streams now (run.cancelled, message: null)
            events.run_cancelled(cancel.run_id, cancel.attempt, cancel.response_message_id)
        if cancel.effect == runs.CancelEffect.CANCELLED:
            if not rolled_back:  # (embedded: a rolled-back run's log rows went with it; readers end from the row)
                events.run_cancelled(cancel.run_id, cancel.attempt, cancel.response_message_id)
            notify.publish_run_finished(str(cancel.run_id))
            if cancel.next_run is not None and not rolled_back:
                enqueue_run(cancel.next_run)
        elif cancel.effect == runs.CancelEffect.REQUESTED:
            notify.publish_cancel(cancel.run_id)
            if rolled_back:
                notify.publish_run_finished(str(cancel.run_id))


# Seconds a cancel waits for the worker holding the run to store the partial answer before it ends
# the run itself (runs.end_cancelled): the worker stops at its next stream chunk (tens of ms at any
# model's token rate), but a model silent before its first token or a slow tool would keep it longer.
CANCEL_GRACE = 0.3


def cancel_message(principal: Principal, thread_ref: int | uuid.UUID, message_id: uuid.UUID,
                   wait: float = CANCEL_GRACE) -> Message:
    """Cancel the answer being produced into ``message_id`` (the response message of a post; its user
    message names the same answer) and return the response message as it then stands.

    Allowed to the thread's owner with ai_thread_messages.create. A queued run is cancelled here and
    never starts; for a run in progress its worker is told and this waits (up to ``wait`` seconds,
    woken by the worker's run-finished notification) for it to store the partial text as
    ``cancelled``, and then, if it has not, ends the run itself with the text streamed so far (the
    worker's late finish only adds its steps). ``wait=0`` leaves it to the worker (and the sweeper).
    Cancelling a cancelled answer returns it again; a finished one (or a message no run produces) is
    ``AlreadyFinished`` (409) carrying the message; unknown ids are NotFound.
    """
    principal.require(permissions.MESSAGES_CREATE)
    with transaction() as session:
        thread = owned_thread(session, principal, thread_ref)
        message = session.get(Message, message_id)
        if message is None or message.thread_id != thread.id:
            raise NotFound("Message not found.")
        run = session.scalar(select(Run).where(
            (Run.response_message_id == message.id) | (Run.request_message_id == message.id)))
        cancel = runs.cancel_run(session, run.id, run.response_message_id) if run is not None else None
        response_id = run.response_message_id if run is not None else message.id
    if cancel is not None:
        _announce([cancel])
        if cancel.effect == runs.CancelEffect.REQUESTED and wait > 0:
            _stop_within_grace(cancel.run_id, response_id, wait)
    with read() as session:  # read after the commit: the message as it stands, loaded for the caller
        response = session.get(Message, response_id)
    if response is None:  # rolled back meanwhile by a post with Thread-Busy: rollback
        raise NotFound("Message not found.")
    if cancel is None:  # a user message posted without an answer, or a direct v1 message
        raise AlreadyFinished("This message is not an answer being produced; there is nothing to cancel.", response)
    if cancel.effect == runs.CancelEffect.FINISHED and response.status != Status.CANCELLED:
        raise AlreadyFinished(f"This answer has already ended ({response.status}); it cannot be cancelled.", response)
    return response


def _stop_within_grace(run_id: uuid.UUID, response_id: uuid.UUID, grace: float) -> None:
    """Wait up to ``grace`` seconds for the worker to store the cancelled answer, else end it here."""
    if not notify.wait_for_run(str(run_id), grace, lambda: _status(response_id).finished):
        if (ended := runs.end_cancelled(run_id)) is not None:
            _announce([ended])


def _status(message_id: uuid.UUID) -> Status:
    with read() as session:
        return session.scalar(select(Message.status).where(Message.id == message_id)) or Status.CANCELLED


class AlreadyFinished(Conflict):
    """409: the answer has ended (completed or failed) before the cancel; ``resource`` is the message,
    which the dialects render into the error body."""

    def __init__(self, text: str, resource: Message):
        super().__init__(text)
        self.resource = resource


_MESSAGE_COLUMNS = [column.key for column in Message.__table__.columns]


def _row(message: Message, prefix: str = "") -> dict[str, Any]:
    return {prefix + key: getattr(message, key) for key in _MESSAGE_COLUMNS}


@lru_cache(maxsize=1)
def _post_insert():
    """PostgreSQL: the post's two messages and its run in one INSERT (runs.insert_run_after), built
    once; the messages' parameters are named ``req_<column>`` and ``res_<column>``. The post's last
    statement: the COMMIT of its in-line transaction goes with it (shared.db.commits)."""
    rows = [select(*(bindparam(prefix + key, type_=MESSAGES.c[key].type).label(key) for key in _MESSAGE_COLUMNS))
            for prefix in ("req_", "res_")]
    # INSERT ... SELECT ... UNION ALL SELECT rather than a multi-row VALUES: SQLAlchemy does not cache
    # the compiled form of a multi-row VALUES, and compiling it on every post showed in the profile.
    both = insert(MESSAGES).from_select(_MESSAGE_COLUMNS, union_all(*rows))
    return commits(prepared(runs.insert_run_after(both.cte("posted_messages"))))


def await_response(exchange: Exchange, timeout: float) -> Exchange:
    """Wait up to ``timeout`` seconds for the answer, then return the exchange as it stands.

    Each look is one autocommit read of the response message with its run's steps (``stored_answer``);
    a wake-up names this run, so the look after it usually finds the answer and no separate status
    check is needed. The answer and its steps come back as plain rows (``StoredMessage``,
    ``StoredStep``), not ORM objects: they are only rendered."""
    response_id = exchange.response.id
    latest = exchange.response

    def load():
        """The response as it is now, with its steps once it has finished: one snapshot for both."""
        nonlocal latest
        found = stored_answer(response_id)
        if found is None:  # deleted meanwhile (a Thread-Busy: rollback post): report it as last seen
            exchange.steps = []
            return latest
        message, run, steps = found
        exchange.steps = steps if message.finished else []
        exchange.run, exchange.run_steps = run, steps
        latest = message
        return message

    def finished() -> bool:
        return load().finished

    exchange.steps = []
    if latest.finished:  # a replayed post whose answer is already there
        load()
    elif timeout > 0 and not notify.wait_for_run(str(exchange.run_id), timeout, finished):
        load()  # still running: report its current status
    exchange.response = latest
    return exchange


class StoredMessage(SimpleNamespace):
    """A message read as a plain row, with ``Message``'s attribute names (its columns) and ``finished``.
    Loading ORM entities costs the ORM's execute and loading path, and building a ``Message`` alone
    ~20 µs of CPU (instrumented attributes, instance state) against 0.2 µs; the waiter's answer is only
    rendered, never changed or flushed."""

    @property
    def finished(self) -> bool:
        return Status(self.status).finished


class StoredStep(SimpleNamespace):
    """A run step read as a plain row, with ``RunStep``'s attribute names (its columns)."""


class StoredRun(SimpleNamespace):
    """The answer's run as v1-threads' ``details`` shows it (``id, status, attempts, model_id, usage``)."""


RUNS, RUN_STEPS = Run.__table__, RunStep.__table__
_STEP_COLUMNS = [column.key for column in RUN_STEPS.columns]
_RUN_COLUMNS = ["id", "status", "attempts", "model_id", "usage"]
_ANSWER = prepared(  # a Core statement, built once, prepared on PostgreSQL: every waited answer runs it
    select(*(MESSAGES.c[key] for key in _MESSAGE_COLUMNS),
           *(RUNS.c[key].label(f"run_{key}") for key in _RUN_COLUMNS),
           *(RUN_STEPS.c[key].label(f"step_{key}") for key in _STEP_COLUMNS))
    .select_from(MESSAGES.outerjoin(RUNS, RUNS.c.response_message_id == MESSAGES.c.id)
                 .outerjoin(RUN_STEPS, RUN_STEPS.c.run_id == RUNS.c.id))
    .where(MESSAGES.c.id == bindparam("response_id"))
    .order_by(RUN_STEPS.c.attempt, RUN_STEPS.c.index)
)
_RUN_AT = len(_MESSAGE_COLUMNS)
_STEP_AT = _RUN_AT + len(_RUN_COLUMNS)


def stored_answer(response_id: uuid.UUID) -> tuple[StoredMessage, StoredRun | None, list[StoredStep]] | None:
    """One response message, the run that produced it and that run's steps in order (every attempt's),
    in one autocommit statement (one snapshot for all), as plain rows; None when there is no such
    message, run None when no run produced it."""
    with read_rows() as connection:
        rows = connection.execute(_ANSWER, {"response_id": response_id}).fetchall()
    if not rows:
        return None
    first = rows[0]
    message = StoredMessage(**dict(zip(_MESSAGE_COLUMNS, first[:_RUN_AT])))
    run = StoredRun(**dict(zip(_RUN_COLUMNS, first[_RUN_AT:_STEP_AT]))) if first[_RUN_AT] is not None else None
    steps = [StoredStep(**dict(zip(_STEP_COLUMNS, row[_STEP_AT:]))) for row in rows
             if row[_STEP_AT] is not None]  # the step's id: None on the outer join's empty row
    return message, run, steps


def steps_by_message(session: Session, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[RunStep]]:
    """The run steps behind each assistant message, in one query."""
    if not message_ids:
        return {}
    rows = session.execute(
        select(Run.response_message_id, RunStep)
        .join(RunStep, RunStep.run_id == Run.id)
        .where(Run.response_message_id.in_(message_ids))
        .order_by(RunStep.attempt, RunStep.index)
    )
    grouped: dict[uuid.UUID, list[RunStep]] = {}
    for message_id, step in rows:
        grouped.setdefault(message_id, []).append(step)
    return grouped


def require_readable(session: Session, principal: Principal, message: Message) -> None:
    """May the caller read this one message of its own thread?

    With ``ai_thread_messages.read``: yes. With only ``ai_thread_messages.create`` (the seed's one
    permission for posting): only the two messages of a post the user made for an answer — its own
    message and the response it polls (or streams) for — never any other message of the thread, and
    no listing. Anything else is the missing-permission 403 it always was."""
    if permissions.MESSAGES_READ in principal.permissions:
        return
    if permissions.MESSAGES_CREATE in principal.permissions and session.scalar(
        select(Run.id).where(
            (Run.request_message_id == message.id) | (Run.response_message_id == message.id),
            Run.thread_id == message.thread_id, Run.user_id == principal.user_id,
        ).limit(1)
    ) is not None:
        return
    principal.require(permissions.MESSAGES_READ)  # raises Forbidden


def get_message(
    principal: Principal, thread_ref: int | uuid.UUID, message_id: uuid.UUID
) -> tuple[Message, list[RunStep]]:
    if not {permissions.MESSAGES_READ, permissions.MESSAGES_CREATE} & principal.permissions:
        principal.require(permissions.MESSAGES_READ)
    with transaction() as session:
        message = readable_message(session, principal, thread_ref, message_id)
        return message, steps_by_message(session, [message.id]).get(message.id, [])


def readable_message(session: Session, principal: Principal, thread_ref: int | uuid.UUID,
                     message_id: uuid.UUID) -> Message:
    """A message of the caller's own thread that the caller may read (require_readable); NotFound for a
    message of another thread, so ids cannot be probed across threads. Reading and streaming share it."""
    thread = owned_thread(session, principal, thread_ref)
    message = session.get(Message, message_id)
    if message is None or message.thread_id != thread.id:
        raise NotFound("Message not found.")
    require_readable(session, principal, message)
    return message


def list_messages(
    principal: Principal,
    thread_ref: int | uuid.UUID,
    *,
    limit: int = 20,
    offset: int = 0,
    before: datetime | None = None,
    newest_first: bool = False,
    with_steps: bool = True,
) -> tuple[list[Message], int, dict[uuid.UUID, list[RunStep]]]:
    """A page of a thread's messages, the total count, and the steps of the assistant messages."""
    principal.require(permissions.MESSAGES_READ)
    with transaction() as session:
        thread = owned_thread(session, principal, thread_ref)
        where = [Message.thread_id == thread.id]
        if before is not None:
            where.append(Message.created_at < before)
        total = session.scalar(select(func.count()).select_from(Message).where(*where)) or 0
        order = Message.seq.desc() if newest_first else Message.seq.asc()
        messages = list(session.scalars(select(Message).where(*where).order_by(order).limit(limit).offset(offset)))
        steps = steps_by_message(session, [m.id for m in messages if m.role == "assistant"]) if with_steps else {}
        return messages, total, steps


# -- direct messages and run details (v1-threads) --------------------------------------------------

MAX_DIRECT_CONTENT = 50_000


def create_message(
    principal: Principal,
    thread_ref: int | uuid.UUID,
    *,
    role: str,
    content: str,
    citations: list[dict[str, Any]] | None = None,
    references: list[Any] | None = None,
    is_error: bool = False,
    details: dict[str, Any] | None = None,
    message_id: uuid.UUID | None = None,
) -> tuple[Message, bool]:
    """Store a finished message without asking the AI (history imports, system notes, outside agents).

    Returns (message, created). ``message_id`` makes it idempotent (seed 004: "submitting the same
    message_id twice returns the existing message without creating a duplicate"): the same id in the
    same thread returns the stored message with created=False, whatever the body; an id taken in
    another thread is a Conflict.
    """
    principal.require(permissions.MESSAGES_CREATE)
    if role not in ("user", "assistant", "system"):
        raise ValidationFailed("Unknown role.", fields={"role": ["One of user, assistant, system."]})
    if len(content) > MAX_DIRECT_CONTENT:
        raise ValidationFailed("Content is too long.", fields={"content": [f"At most {MAX_DIRECT_CONTENT} characters."]})
    fingerprint = _request_hash(kind="direct", role=role, content=content, citations=citations or [],
                                references=references or [], is_error=is_error, details=details)

    def stored(session: Session, thread_id: int) -> Message | None:
        found = session.get(Message, message_id)
        if found is not None and found.thread_id != thread_id:
            raise Conflict("This message_id is already used by a message of another thread.")
        return found

    try:
        with transaction() as session:
            if message_id and (found := stored(session, owned_thread(session, principal, thread_ref).id)):
                return found, False
            thread = _reserve_seqs(session, principal, thread_ref, 1)
            now = _after(thread.last_created)
            message = Message(
                id=message_id or uuid.uuid4(), thread_id=thread.id, seq=thread.last_seq, role=role, content=content,
                citations=citations or [], references=references or [], details=details, is_error=is_error,
                status=Status.COMPLETED, client_message_id=str(message_id) if message_id else None,
                request_hash=fingerprint, created_at=now, updated_at=now,
            )
            session.add(message)
        return message, True
    except IntegrityError:
        if message_id is None:
            raise
        with transaction() as session:  # a concurrent request with the same id won the race
            found = stored(session, owned_thread(session, principal, thread_ref).id)
            if found is None:
                raise Conflict("This message_id is already in use.") from None
            return found, False


def run_details(messages: list[Message]) -> dict[uuid.UUID, tuple[Run, list[RunStep]]]:
    """The run behind each assistant message a run produced, with its steps (every attempt's)."""
    ids = [m.id for m in messages if m.role == "assistant"]
    if not ids:
        return {}
    thread_ids = {m.thread_id for m in messages}
    with transaction() as session:
        found = session.scalars(select(Run).where(Run.response_message_id.in_(ids), Run.thread_id.in_(thread_ids)))
        steps = steps_by_message(session, ids)
        return {run.response_message_id: (run, steps.get(run.response_message_id, [])) for run in found}
