"""Reports: a conversation flagged for a human to look at, by the assistant or by the user, and the
moderators who list and resolve them.

Filing a report is the thread owner's act (``report_thread``, from the assistant's tool). Reading
and resolving are the tenant's moderators' (permissions ``reports.read`` and ``reports.manage``):
``moderator_list`` and ``moderator_resolve`` check them; ``list_page`` and ``resolve`` are the same
without a caller, for the operator's command line. A report of another tenant does not exist for
you. Resolving is idempotent: the first resolution (time, moderator, note) is kept.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from shared import permissions
from shared.db import transaction
from shared.errors import NotFound, ValidationFailed
from shared.models import Message, Report, ReportStatus, Thread, utcnow
from shared.permissions import Principal

CREATORS = ("assistant", "user")
MAX_REASON = 1000
MAX_NOTE = 1000
EXCERPT_CHARS = 200


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


@dataclass(frozen=True)
class ReportView:
    """A report as a moderator sees it: what was reported, where, with the user's words that led to it."""

    id: uuid.UUID
    thread_id: int
    thread_uuid: uuid.UUID
    reason: str
    created_by: str
    excerpt: str
    created_at: datetime
    status: ReportStatus
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None


def _excerpt():
    """The thread's last user message at the report's time (its first EXCERPT_CHARS characters)."""
    return (select(func.substr(Message.content, 1, EXCERPT_CHARS))
            .where(Message.thread_id == Report.thread_id, Message.role == "user",
                   Message.created_at <= Report.created_at)
            .order_by(Message.seq.desc()).limit(1).correlate(Report).scalar_subquery())


def _views(session, tenant_id: uuid.UUID, *conditions, limit: int | None = None, offset: int = 0) -> list[ReportView]:
    query = (select(Report, Thread.public_id, _excerpt()).join(Thread, Thread.id == Report.thread_id)
             .where(Thread.tenant_id == tenant_id, *conditions)
             .order_by(Report.created_at.desc(), Report.id).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    return [ReportView(r.id, r.thread_id, public_id, r.reason, r.created_by, excerpt or "", r.created_at,
                       ReportStatus(r.status), r.resolved_at, r.resolved_by, r.resolution_note)
            for r, public_id, excerpt in session.execute(query).all()]


def list_page(tenant_id: uuid.UUID, *, status: ReportStatus | str | None = None, limit: int = 20,
              offset: int = 0) -> tuple[list[ReportView], int]:
    """One page of the tenant's reports, newest first (optionally only open or resolved ones), and the total."""
    conditions = [Report.status == ReportStatus(status)] if status is not None else []
    with transaction() as session:
        total = session.scalar(select(func.count()).select_from(Report).join(Thread, Thread.id == Report.thread_id)
                               .where(Thread.tenant_id == tenant_id, *conditions))
        return _views(session, tenant_id, *conditions, limit=limit, offset=offset), total


def resolve(tenant_id: uuid.UUID, report_id: uuid.UUID | str, *, resolver: str, note: str | None = None) -> ReportView:
    """Mark the tenant's report resolved by ``resolver`` (a user id); NotFound for any other id.
    Resolving a resolved report changes nothing and returns it as it was resolved."""
    try:
        report_id = uuid.UUID(str(report_id))
    except ValueError:
        raise NotFound("Report not found.") from None
    note = (note or "").strip()[:MAX_NOTE] or None
    with transaction() as session:
        report = session.scalar(
            select(Report).join(Thread, Thread.id == Report.thread_id)
            .where(Report.id == report_id, Thread.tenant_id == tenant_id).with_for_update(of=Report)
        )
        if report is None:
            raise NotFound("Report not found.")
        if report.status != ReportStatus.RESOLVED:
            report.status, report.resolved_at = ReportStatus.RESOLVED, utcnow()
            report.resolved_by, report.resolution_note = resolver, note
        session.flush()
        return _views(session, tenant_id, Report.id == report_id)[0]


def moderator_list(principal: Principal, *, status: ReportStatus | str | None = None, limit: int = 20,
                   offset: int = 0) -> tuple[list[ReportView], int]:
    """``list_page`` for a caller holding ``reports.read``, over the caller's tenant."""
    principal.require(permissions.REPORTS_READ)
    return list_page(principal.tenant_id, status=status, limit=limit, offset=offset)


def moderator_resolve(principal: Principal, report_id: uuid.UUID | str, *, note: str | None = None) -> ReportView:
    """``resolve`` for a caller holding ``reports.manage``, in the caller's tenant, recorded as theirs."""
    principal.require(permissions.REPORTS_MANAGE)
    return resolve(principal.tenant_id, report_id, resolver=principal.user_id, note=note)
