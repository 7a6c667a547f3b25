"""Threads and their messages: what clients read and write."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, BigId, utcnow
from shared.models.status import Status, StatusText


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (Index("ix_threads_owner", "tenant_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[uuid.UUID] = mapped_column(unique=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="")
    model_id: Mapped[str | None] = mapped_column(String(100))
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workflows.id", ondelete="SET NULL"))
    context: Mapped[dict[str, Any] | None] = mapped_column()
    last_seq: Mapped[int] = mapped_column(default=0)
    flagged_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


WITH_CONTEXT_KEY = text("context_key IS NOT NULL")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("thread_id", "seq", name="uq_messages_thread_seq"),
        UniqueConstraint("thread_id", "client_message_id", name="uq_messages_thread_client_id"),
        Index("ix_messages_thread_created", "thread_id", "created_at"),
        # The post's last context key (migration 0013): only the messages that have one, so the
        # look-up is one probe instead of a walk through a thread whose client never sent a key.
        Index("ix_messages_context_key", "thread_id", "seq", postgresql_where=WITH_CONTEXT_KEY,
              sqlite_where=WITH_CONTEXT_KEY),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column()
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    context_key: Mapped[str | None] = mapped_column(String(16))
    context: Mapped[dict[str, Any] | None] = mapped_column()
    updated_context: Mapped[dict[str, Any] | None] = mapped_column()
    citations: Mapped[list[Any]] = mapped_column(default=list)
    references: Mapped[list[Any]] = mapped_column(default=list)
    details: Mapped[dict[str, Any] | None] = mapped_column()
    is_error: Mapped[bool] = mapped_column(default=False)
    status: Mapped[Status] = mapped_column(StatusText(Status), default=Status.COMPLETED)
    client_message_id: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def finished(self) -> bool:
        return Status(self.status).finished
