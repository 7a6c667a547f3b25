"""The event log of a run in embedded mode (no Redis): one row per event, numbered per run.

In production the log lives in Redis Streams (shared/events.py) and this table stays empty."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utcnow


class RunEvent(Base):
    __tablename__ = "run_events"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # 1, 2, 3 … per run: the SSE id
    attempt: Mapped[int] = mapped_column(default=0)  # the run attempt that wrote it (0: before any attempt)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
