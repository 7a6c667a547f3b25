"""Reports: a conversation flagged for a human, by the assistant or by the user, until a moderator
resolves it."""
from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, BigId, utcnow
from shared.models.status import StatusText


class ReportStatus(StrEnum):
    OPEN = "open"  # waiting for a moderator
    RESOLVED = "resolved"  # a moderator looked at it (resolved_at, resolved_by say when and who)


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_thread", "thread_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    thread_id: Mapped[int] = mapped_column(BigId, ForeignKey("threads.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(16), default="assistant")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[ReportStatus] = mapped_column(StatusText(ReportStatus), default=ReportStatus.OPEN,
                                                 server_default=ReportStatus.OPEN.value)
    resolved_at: Mapped[datetime | None] = mapped_column()
    # The moderator's user id, kept as text (no foreign key): deleting the moderator keeps the record.
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolution_note: Mapped[str | None] = mapped_column(Text)
