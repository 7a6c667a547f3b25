"""Posting, reading and waiting for messages. Posting stores the user message, the queued response
message and its run in one transaction, then enqueues the run: nothing is lost if the broker is down."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import notify, permissions
from shared.db import transaction
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Message, Run, RunStep, Thread, utcnow
from shared.permissions import Principal
from shared.queue import enqueue_run
from shared.services.threads import check_model, check_workflow, owned_thread

MAX_CONTENT = 5000
FINISHED = ("completed", "failed", "cancelled")


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
) -> Exchange:
    """Store the message and its pending answer, then hand the run to the workers."""
    principal.require(permissions.MESSAGES_CREATE)
    if not content or not content.strip():
        raise ValidationFailed("Content is required.", fields={"content": ["Content must not be empty."]})
    if len(content) > MAX_CONTENT:
        raise ValidationFailed("Content is too long.", fields={"content": [f"At most {MAX_CONTENT} characters."]})
    check_model(model_id)
    fingerprint = _request_hash(content=content, context=context, model=model_id, workflow=workflow_id)
    try:
        with transaction() as session:
            thread = owned_thread(session, principal, thread_ref)
            if client_message_id and (replay := _replay(session, thread.id, client_message_id, fingerprint)):
                return replay
            workflow = check_workflow(session, principal, workflow_id or thread.workflow_id)
            now = utcnow()
            values: dict[str, Any] = {"last_seq": Thread.last_seq + 2, "updated_at": now}
            if context is not None:
                values["context"] = context
            seq = session.execute(
                update(Thread).where(Thread.id == thread.id).values(**values).returning(Thread.last_seq)
            ).scalar_one()
            chosen_model = model_id or (workflow.model_id if workflow else None) or thread.model_id
            request = Message(
                thread_id=thread.id, seq=seq - 1, role="user", content=content, context=context,
                context_key=context_key, client_message_id=client_message_id, request_hash=fingerprint,
                status="completed", created_at=now, updated_at=now,
            )
            response = Message(
                thread_id=thread.id, seq=seq, role="assistant", content="", context_key=context_key,
                status="queued", model_id=chosen_model, created_at=now, updated_at=now,
            )
            session.add_all([request, response])
            session.flush()
            run = Run(
                thread_id=thread.id, request_message_id=request.id, response_message_id=response.id,
                model_id=chosen_model, workflow_id=workflow.id if workflow else None, queued_at=now,
            )
            session.add(run)
            session.flush()
            exchange = Exchange(request=request, response=response, run_id=run.id)
    except IntegrityError:
        if not client_message_id:
            raise
        with transaction() as session:  # a concurrent retry with the same key won the race
            thread = owned_thread(session, principal, thread_ref)
            replay = _replay(session, thread.id, client_message_id, fingerprint)
            if replay is None:
                raise
            return replay
    enqueue_run(exchange.run_id)
    return exchange


def await_response(exchange: Exchange, timeout: float) -> Exchange:
    """Wait up to ``timeout`` seconds for the answer, then return the exchange as it stands."""
    response_id = exchange.response.id

    def finished() -> bool:
        with transaction() as session:
            return session.scalar(select(Message.status).where(Message.id == response_id)) in FINISHED

    if not exchange.response.finished:
        notify.wait_for_run(str(exchange.run_id), timeout, finished)
    with transaction() as session:
        exchange.response = session.get(Message, response_id) or exchange.response
        exchange.steps = steps_by_message(session, [response_id]).get(response_id, [])
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
