"""Runs (one AI answer being produced) and their steps (each model call and tool call)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, BigId, utcnow
from shared.models.status import ACTIVE_STATUSES, Status, StatusText, StepStatus

# The partial indexes' predicate (the same text as in migrations 0004 and 0005).
ACTIVE_FILTER = text("status IN ({})".format(", ".join(f"'{status}'" for status in ACTIVE_STATUSES)))
# One status each (migration 0013): what the sweeper and the queue gauges ask for.
QUEUED_FILTER = text(f"status = '{Status.QUEUED}'")
IN_PROGRESS_FILTER = text(f"status = '{Status.IN_PROGRESS}'")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # Partial (migration 0013): every claim and finish changes the status, so no run UPDATE is HOT
        # and each one adds an entry to every index whose predicate the new row meets; a finished run
        # is in none of these four. The sweeper's two halves and the queue gauges read these two.
        Index("ix_runs_queued", "queued_at", postgresql_where=QUEUED_FILTER, sqlite_where=QUEUED_FILTER),
        Index("ix_runs_leased", "lease_expires_at", postgresql_where=IN_PROGRESS_FILTER,
              sqlite_where=IN_PROGRESS_FILTER),
        Index("ix_runs_thread", "thread_id", "queued_at"),
        # The few runs still queued or in progress, by thread (migration 0004 says which queries use it).
        Index("ix_runs_thread_active", "thread_id", postgresql_where=ACTIVE_FILTER, sqlite_where=ACTIVE_FILTER),
        # The active runs of one user, for the per-user cap (migration 0005).
        Index("ix_runs_user_active", "user_id", postgresql_where=ACTIVE_FILTER, sqlite_where=ACTIVE_FILTER),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))  # the thread's owner
    request_message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    response_message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[Status] = mapped_column(StatusText(Status), default=Status.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    model_id: Mapped[str | None] = mapped_column(String(100))
    workflow_id: Mapped[uuid.UUID | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[dict[str, Any] | None] = mapped_column()
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    request_id: Mapped[str | None] = mapped_column(String(128))  # X-Request-Id of the POST (migration 0008)
    # Set by a cancel while a worker holds the run (migration 0009); the worker ends it as cancelled.
    cancel_requested_at: Mapped[datetime | None] = mapped_column()
    # The permissions of the credential that posted the message (migration 0010): the tools the agent
    # may use (shared/tools.py, TOOL_PERMISSIONS). NULL on runs stored before: only the post's own.
    permissions: Mapped[list[Any] | None] = mapped_column()


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (Index("ix_run_steps_run", "run_id", "attempt", "index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(default=1)
    index: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    arguments: Mapped[dict[str, Any] | None] = mapped_column()
    output: Mapped[str | None] = mapped_column(Text)
    status: Mapped[StepStatus] = mapped_column(StatusText(StepStatus), default=StepStatus.COMPLETED)
    usage: Mapped[dict[str, Any] | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
