"""What an answer stream needs from the database: who may attach to which run, and whether it ended.

Attaching is allowed exactly when reading the message is (shared.services.messages.require_readable:
ai_thread_messages.read, or only create for the answer of one's own post; the caller's own thread); the stream itself then only reads the event log and, now and then, the run's
status (shared/events.py says why the stored message, not the log, has the last word), and at the end
the stored answer the terminal event is rendered from (``stored_answer``)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from shared.db import read
from shared.errors import NotFound
from shared.models import ACTIVE_STATUSES, Run
from shared.permissions import Principal
from shared.services import messages
from shared.services.messages import StoredMessage, StoredStep, readable_message


@dataclass(frozen=True)
class StreamTarget:
    message_id: uuid.UUID
    run_id: uuid.UUID | None  # None: a message no run produced (a user message, one created directly)
    attempts: int  # the run's attempts when the client attached: events of earlier attempts are stale


def target(principal: Principal, thread_ref: int | uuid.UUID, message_id: uuid.UUID) -> StreamTarget:
    """The run behind a message the caller may read; NotFound/Forbidden exactly as reading it."""
    with read() as session:
        readable_message(session, principal, thread_ref, message_id)
        run = session.execute(select(Run.id, Run.attempts).where(Run.response_message_id == message_id)).first()
    return StreamTarget(message_id, run.id if run else None, run.attempts if run else 0)


_RUN_STATUS = select(Run.status).where(Run.id == bindparam("run_id"))


def run_ended(run_id: uuid.UUID | None) -> bool:
    """One autocommit read: has the run finished (completed, failed or cancelled)?"""
    if run_id is None:
        return True
    with read() as session:
        status = session.scalar(_RUN_STATUS, {"run_id": run_id})
    return status is None or status not in ACTIVE_STATUSES


def stored_answer(message_id: uuid.UUID) -> tuple[StoredMessage, list[StoredStep]]:
    """The stored message a stream ends with, and its run's steps: one autocommit read (one round
    trip, a prepared statement on PostgreSQL, plain rows: the waiter's read, ``messages.stored_answer``)
    instead of reading the message as GET does (BEGIN, the thread, the message, the steps, COMMIT).
    Who may see it was settled when the stream was attached (the post itself, or ``target``), and the
    stream only ever names that message; NotFound when the message is gone (a ``Thread-Busy:
    rollback`` post deleted it, or its thread was deleted)."""
    found = messages.stored_answer(message_id)
    if found is None:
        raise NotFound("Message not found.")
    message, _run, steps = found
    return message, steps
