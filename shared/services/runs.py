"""The run lifecycle as the worker and the sweeper drive it.

Every state change is one conditional UPDATE, so duplicate deliveries, expired leases and racing
workers resolve in the database: a run is claimed by one worker at a time and answered once.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update

from shared.config import settings
from shared.db import transaction
from shared.models import Message, Run, RunStep, Thread, Workflow, utcnow

ACTIVE = ("queued", "in_progress")
FAILED_TEXT = "Sorry, I could not produce an answer this time. Please try again."


@dataclass
class RunJob:
    """Everything the agent needs, read in one short transaction at claim time."""

    run_id: uuid.UUID
    attempt: int
    owner: str
    thread_id: int
    tenant_id: uuid.UUID
    user_id: str
    model_id: str | None
    request_message_id: uuid.UUID
    response_message_id: uuid.UUID
    content: str
    context: dict[str, Any] | None
    context_key: str | None
    history: list[dict[str, str]]
    system_prompt: str | None = None
    allowed_tools: list[str] | None = None


@dataclass
class StepRecord:
    index: int
    kind: str
    name: str
    arguments: dict[str, Any] | None
    output: str | None
    status: str
    started_at: datetime
    finished_at: datetime
    usage: dict[str, Any] | None = None


@dataclass
class Outcome:
    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    updated_context: dict[str, Any] | None = None
    steps: list[StepRecord] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    is_error: bool = False
    error: str | None = None


def _predecessor_active(session, thread_id: int, seq: int) -> bool:
    """An earlier message of the same thread is still being answered: answer in order."""
    earlier = (
        select(Run.id)
        .join(Message, Message.id == Run.request_message_id)
        .where(Run.thread_id == thread_id, Run.status.in_(ACTIVE), Message.seq < seq)
        .limit(1)
    )
    return session.scalar(earlier) is not None


def claim(run_id: uuid.UUID, owner: str) -> RunJob | None:
    """Take the run if it is queued (or its lease expired) and its turn has come; None otherwise."""
    now = utcnow()
    with transaction() as session:
        row = session.execute(
            select(Run, Message, Thread)
            .join(Message, Message.id == Run.request_message_id)
            .join(Thread, Thread.id == Run.thread_id)
            .where(Run.id == run_id)
        ).first()
        if row is None:
            return None
        run, request, thread = row
        if run.status not in ACTIVE or _predecessor_active(session, run.thread_id, request.seq):
            return None
        if run.status == "in_progress" and run.lease_expires_at is not None and run.lease_expires_at >= now:
            return None  # a duplicate delivery while a worker holds a live lease: not ours to touch
        if run.attempts >= settings.run_max_attempts:
            _finish(session, run, Outcome(content=FAILED_TEXT, is_error=True, error="too many attempts"), "failed")
            return None
        attempt = session.execute(
            update(Run)
            .where(
                Run.id == run_id,
                or_(Run.status == "queued", and_(Run.status == "in_progress", Run.lease_expires_at < now)),
            )
            .values(
                status="in_progress", attempts=Run.attempts + 1, lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=settings.lease_seconds), started_at=now,
            )
            .returning(Run.attempts)
            .execution_options(synchronize_session=False)
        ).scalar()
        if attempt is None:
            return None
        session.execute(
            update(Message).where(Message.id == run.response_message_id).values(status="in_progress", updated_at=now)
        )
        workflow = session.get(Workflow, run.workflow_id) if run.workflow_id else None
        history_rows = session.execute(
            select(Message.role, Message.content)
            .where(Message.thread_id == run.thread_id, Message.seq < request.seq, Message.status == "completed")
            .order_by(Message.seq.desc())
            .limit(50)
        ).all()
        return RunJob(
            run_id=run.id, attempt=attempt, owner=owner, thread_id=thread.id, tenant_id=thread.tenant_id,
            user_id=thread.user_id, model_id=run.model_id, request_message_id=request.id,
            response_message_id=run.response_message_id, content=request.content,
            context=request.context if request.context is not None else thread.context,
            context_key=request.context_key,
            history=[{"role": role, "content": text} for role, text in reversed(history_rows) if text],
            system_prompt=workflow.system_prompt if workflow else None,
            allowed_tools=list(workflow.tools) if workflow and workflow.tools is not None else None,
        )


def renew_lease(run_id: uuid.UUID, owner: str) -> bool:
    """Extend the lease; False means another worker took the run over and this one must stop."""
    now = utcnow()
    with transaction() as session:
        return session.execute(
            update(Run)
            .where(Run.id == run_id, Run.lease_owner == owner, Run.status == "in_progress")
            .values(lease_expires_at=now + timedelta(seconds=settings.lease_seconds))
        ).rowcount == 1


def _finish(session, run: Run, outcome: Outcome, status: str) -> None:
    now = utcnow()
    session.execute(
        update(Message)
        .where(Message.id == run.response_message_id)
        .values(
            content=outcome.content, citations=outcome.citations, updated_context=outcome.updated_context,
            is_error=outcome.is_error, status=status, updated_at=now,
        )
    )
    if outcome.updated_context is not None:
        session.execute(update(Thread).where(Thread.id == run.thread_id).values(context=outcome.updated_context))
    if outcome.steps:
        session.execute(
            insert(RunStep),
            [
                dict(run_id=run.id, attempt=run.attempts, index=s.index, kind=s.kind, name=s.name,
                     arguments=s.arguments, output=s.output, status=s.status, usage=s.usage,
                     started_at=s.started_at, finished_at=s.finished_at)
                for s in outcome.steps
            ],
        )
    session.execute(
        update(Run)
        .where(Run.id == run.id)
        .values(status=status, finished_at=now, lease_expires_at=None, usage=outcome.usage, error=outcome.error)
    )


def finish(job: RunJob, outcome: Outcome) -> bool:
    """Store the answer if this worker still holds the lease. False: someone else owns the run now."""
    status = "failed" if outcome.is_error else "completed"
    with transaction() as session:
        run = session.scalar(
            select(Run).where(Run.id == job.run_id, Run.lease_owner == job.owner, Run.status == "in_progress")
            .with_for_update()
        )
        if run is None:
            return False
        _finish(session, run, outcome, status)
    return True


def next_queued_run(thread_id: int) -> uuid.UUID | None:
    """The thread's next message waiting for its turn, so the worker can enqueue it right away."""
    with transaction() as session:
        return session.scalar(
            select(Run.id)
            .join(Message, Message.id == Run.request_message_id)
            .where(Run.thread_id == thread_id, Run.status == "queued")
            .order_by(Message.seq)
            .limit(1)
        )


def sweep() -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Find runs a worker lost (expired lease) or the broker lost (queued too long).

    Returns (runs to enqueue again, runs ended as failed). Runs out of attempts fail with an
    is_error answer; the others are marked queued and touched so one sweep does not repeat them.
    """
    now = utcnow()
    stale_queued = now - timedelta(seconds=settings.queued_stale_seconds)
    requeue: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    with transaction() as session:
        lost = session.scalars(
            select(Run)
            .where(
                or_(
                    and_(Run.status == "in_progress", Run.lease_expires_at < now),
                    and_(Run.status == "queued", Run.queued_at < stale_queued),
                )
            )
            .order_by(Run.queued_at)
            .limit(500)
            .with_for_update(skip_locked=True)
        ).all()
        for run in lost:
            if run.attempts >= settings.run_max_attempts:
                _finish(session, run, Outcome(content=FAILED_TEXT, is_error=True, error="worker lost too often"), "failed")
                failed.append(run.id)
            else:
                run.status, run.lease_owner, run.lease_expires_at, run.queued_at = "queued", None, None, now
                requeue.append(run.id)
    return requeue, failed
