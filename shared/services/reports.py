"""Reports: a conversation flagged for a human to look at, by the assistant or by the user."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from shared.db import transaction
from shared.errors import NotFound, ValidationFailed
from shared.models import Report, Thread, utcnow

CREATORS = ("assistant", "user")
MAX_REASON = 1000


def report_thread(*, tenant_id: uuid.UUID, user_id: str, thread_id: int, reason: str,
                  created_by: str = "assistant") -> Report:
    """Store a report on the caller's own thread and flag the thread (its first flag time is kept)."""
    if created_by not in CREATORS:
        raise ValueError(f"created_by must be one of {CREATORS}")
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise ValidationFailed("A reason is required.", fields={"reason": ["Must not be empty."]})
    with transaction() as session:
        thread = session.scalar(
            select(Thread)
            .where(Thread.id == thread_id, Thread.tenant_id == tenant_id, Thread.user_id == user_id)
            .with_for_update()
        )
        if thread is None:
            raise NotFound("Thread not found.")
        report = Report(thread_id=thread.id, reason=reason[:MAX_REASON], created_by=created_by)
        session.add(report)
        if thread.flagged_at is None:
            thread.flagged_at = utcnow()
    return report


def list_reports(tenant_id: uuid.UUID, *, thread_id: int | None = None) -> list[Report]:
    """A tenant's reports, newest first (optionally of one thread), for moderators and tests."""
    query = select(Report).join(Thread, Thread.id == Report.thread_id).where(Thread.tenant_id == tenant_id)
    if thread_id is not None:
        query = query.where(Report.thread_id == thread_id)
    with transaction() as session:
        return list(session.scalars(query.order_by(Report.created_at.desc())))
