"""Posting, reading and waiting for messages. Posting stores the user message, the queued response
message and its run in one transaction, then enqueues the run: nothing is lost if the broker is down."""
from __future__ import annotations

import hashlib
import json
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import events, notify, permissions
from shared.db import read, transaction
from shared.config import settings
from shared.errors import Conflict, NotFound, RateLimited, ValidationFailed
from shared.models import Message, Run, RunStep, Thread, User, utcnow
from shared.permissions import Principal
from shared.queue import enqueue_run
from shared.services.threads import MAX_THREAD_ID, check_model, check_workflow, owned_thread

MAX_CONTENT = 5000
FINISHED = ("completed", "failed", "cancelled")
CREATED_AT_STEP = timedelta(microseconds=1)


@dataclass
class Exchange:
    """A user message and the assistant message that answers it."""

    request: Message
    response: Message
    run_id: uuid.UUID
    replayed: bool = False
    steps: list[RunStep] | None = None


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
    run = session.scalar(select(Run).where(Run.request_message_id == request.id))
    if run is None:
        raise Conflict("This idempotency key belongs to a message that was not posted for an answer.")
    response = session.get(Message, run.response_message_id)
    return Exchange(request=request, response=response, run_id=run.id, replayed=True)


# Set per request by the API (header ``If-Thread-Idle: true``, api/hardening.py) so every dialect
# honours it: refuse with 409 instead of queueing behind the thread's active run.
REQUIRE_IDLE: ContextVar[bool] = ContextVar("threadline_require_idle", default=False)
ACTIVE_RUNS = ("queued", "in_progress")


# Every post runs these: Core statements on the tables, built once (see shared/services/runs.py).
RUNS, MESSAGES, THREADS, USERS = Run.__table__, Message.__table__, Thread.__table__, User.__table__
_LOCK_USER = select(USERS.c.id).where(USERS.c.id == bindparam("user_id")).with_for_update()
_ACTIVE_RUNS_OF_USER = (  # reads only the user's active runs (ix_runs_user_active)
    select(func.count()).select_from(RUNS).where(RUNS.c.user_id == bindparam("user_id"), RUNS.c.status.in_(ACTIVE_RUNS))
)


def _check_capacity(session: Session, principal: Principal) -> None:
    """Refuse a post that would let one user fill the queue (more than MAX_ACTIVE_RUNS_PER_USER
    answers pending). Locking the user row serialises one user's posts, so the check cannot be
    raced past by concurrent requests."""
    session.execute(_LOCK_USER, {"user_id": principal.user_id})
    cap = settings.max_active_runs_per_user
    if cap > 0:
        active = session.scalar(_ACTIVE_RUNS_OF_USER, {"user_id": principal.user_id}) or 0
        if active >= cap:
            raise RateLimited(f"You already have {active} answers in progress (the limit is {cap}); "
                              "wait for some to finish before sending more.", retry_after=5)


def _check_idle(session: Session, thread_id: int) -> None:
    """The caller asked (If-Thread-Idle) to be refused rather than queued behind an active run."""
    if REQUIRE_IDLE.get() and session.scalar(
        select(Run.id).where(Run.thread_id == thread_id, Run.status.in_(ACTIVE_RUNS)).limit(1)
    ) is not None:
        raise Conflict("The thread is still answering an earlier message; retry when it is idle "
                       "(or send the message without If-Thread-Idle to queue it).", retry_after=1)


@lru_cache(maxsize=4)
def _reserve_statement(by_public_id: bool, with_context: bool):
    last_created = (
        select(func.max(MESSAGES.c.created_at)).where(MESSAGES.c.thread_id == THREADS.c.id).scalar_subquery()
    )
    values: dict[str, Any] = {"last_seq": THREADS.c.last_seq + bindparam("count"),
                              "updated_at": bindparam("now", type_=THREADS.c.updated_at.type)}
    if with_context:
        values["context"] = bindparam("new_context", type_=THREADS.c.context.type)
    return (
        update(THREADS)
        .where(THREADS.c.public_id == bindparam("ref") if by_public_id else THREADS.c.id == bindparam("ref"),
               THREADS.c.tenant_id == bindparam("owner_tenant_id"), THREADS.c.user_id == bindparam("owner_user_id"))
        .values(values)
        .returning(THREADS.c.id, THREADS.c.last_seq, THREADS.c.model_id, THREADS.c.workflow_id,
                   last_created.label("last_created"))
    )


def _reserve_seqs(session: Session, principal: Principal, thread_ref: int | uuid.UUID, count: int,
                  context: dict[str, Any] | None = None):
    """Lock the caller's thread and take the next ``count`` seqs, in one statement that also returns
    what the post needs (the thread's model, workflow and last message time). Unknown threads and
    other users' threads fall back to owned_thread for the precise 404/403."""
    if isinstance(thread_ref, int) and not 0 < thread_ref <= MAX_THREAD_ID:
        raise NotFound("Thread not found.")
    statement = _reserve_statement(not isinstance(thread_ref, int), context is not None)
    row = session.execute(statement, {
        "ref": thread_ref, "owner_tenant_id": principal.tenant_id, "owner_user_id": principal.user_id, "count": count,
        "now": utcnow(), "new_context": context,
    }).first()
    if row is None:
        owned_thread(session, principal, thread_ref)  # raises NotFound or Forbidden
        raise NotFound("Thread not found.")
    return row


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
) -> Exchange:
    """Store the message and its pending answer, then hand the run to the workers.

    ``message_id`` is a caller-chosen id for the user message (v1-threads); pass it as
    ``client_message_id`` too when it should make the post idempotent.
    """
    principal.require(permissions.MESSAGES_CREATE)
    if not content or not content.strip():
        raise ValidationFailed("Content is required.", fields={"content": ["Content must not be empty."]})
    if len(content) > MAX_CONTENT:
        raise ValidationFailed("Content is too long.", fields={"content": [f"At most {MAX_CONTENT} characters."]})
    check_model(model_id)
    fingerprint = _request_hash(content=content, context=context, model=model_id, workflow=workflow_id)
    try:
        with transaction() as session:
            if client_message_id:
                thread_id = owned_thread(session, principal, thread_ref).id
                if replay := _replay(session, thread_id, client_message_id, fingerprint):
                    return replay
            _check_capacity(session, principal)
            thread = _reserve_seqs(session, principal, thread_ref, 2, context)
            _check_idle(session, thread.id)
            workflow = check_workflow(session, principal, workflow_id or thread.workflow_id)
            now = _after(thread.last_created)  # the thread row is locked now: strictly increasing
            answer_at = now + CREATED_AT_STEP
            chosen_model = model_id or (workflow.model_id if workflow else None) or thread.model_id
            common = dict(thread_id=thread.id, context_key=context_key, updated_context=None, citations=[],
                          references=[], details=None, is_error=False)
            request = Message(
                id=message_id or uuid.uuid4(), seq=thread.last_seq - 1, role="user", content=content,
                context=context, client_message_id=client_message_id, request_hash=fingerprint,
                status="completed", model_id=None, created_at=now, updated_at=now, **common,
            )
            response = Message(
                id=uuid.uuid4(), seq=thread.last_seq, role="assistant", content="", context=None,
                client_message_id=None, request_hash=None, status="queued", model_id=chosen_model,
                created_at=answer_at, updated_at=answer_at, **common,
            )
            run_id = uuid.uuid4()
            # Core inserts of plain rows (one statement for both messages): the ORM unit of work
            # costs more CPU than the round trips it would save.
            session.execute(insert(MESSAGES), [_row(request), _row(response)])
            session.execute(insert(RUNS), {
                "id": run_id, "thread_id": thread.id, "user_id": principal.user_id, "request_message_id": request.id,
                "response_message_id": response.id, "status": "queued", "attempts": 0, "model_id": chosen_model,
                "workflow_id": workflow.id if workflow else None, "queued_at": now,
            })
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
    events.run_queued(exchange.run_id, exchange.response.id, exchange.request.id)  # before the worker's run.started
    enqueue_run(exchange.run_id)
    return exchange


_MESSAGE_COLUMNS = [column.key for column in Message.__table__.columns]


def _row(message: Message) -> dict[str, Any]:
    return {key: getattr(message, key) for key in _MESSAGE_COLUMNS}


def await_response(exchange: Exchange, timeout: float) -> Exchange:
    """Wait up to ``timeout`` seconds for the answer, then return the exchange as it stands.

    Each look is one autocommit read of the response message; a wake-up names this run, so the look
    after it usually finds the answer and no separate status check is needed."""
    response_id = exchange.response.id
    latest = exchange.response

    def load() -> Message:
        """The response as it is now, with its steps once it has finished (one session, no transaction)."""
        with read() as session:
            message = session.get(Message, response_id) or latest
            exchange.steps = steps_by_message(session, [response_id]).get(response_id, []) if message.finished else []
            return message

    def finished() -> bool:
        nonlocal latest
        latest = load()
        return latest.finished

    exchange.steps = []
    if latest.finished:  # a replayed post whose answer is already there
        latest = load()
    elif timeout > 0 and not notify.wait_for_run(str(exchange.run_id), timeout, finished):
        latest = load()  # still running: report its current status
    exchange.response = latest
    return exchange


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


def get_message(
    principal: Principal, thread_ref: int | uuid.UUID, message_id: uuid.UUID
) -> tuple[Message, list[RunStep]]:
    principal.require(permissions.MESSAGES_READ)
    with transaction() as session:
        thread = owned_thread(session, principal, thread_ref)
        message = session.get(Message, message_id)
        if message is None or message.thread_id != thread.id:
            raise NotFound("Message not found.")
        return message, steps_by_message(session, [message.id]).get(message.id, [])


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

    Returns (message, created). ``message_id`` makes it idempotent: the same id with the same body
    returns the stored message with created=False; the id with another body, or in another thread,
    is a Conflict.
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
        if found is not None and (found.thread_id != thread_id or found.request_hash != fingerprint):
            raise Conflict("This message_id is already used by a different message.")
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
                status="completed", client_message_id=str(message_id) if message_id else None,
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
        runs = session.scalars(select(Run).where(Run.response_message_id.in_(ids), Run.thread_id.in_(thread_ids)))
        steps = steps_by_message(session, ids)
        return {run.response_message_id: (run, steps.get(run.response_message_id, [])) for run in runs}
