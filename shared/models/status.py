"""Statuses as ``StrEnum``s, used by every layer instead of literals.

``Status`` is the status of a run and of a message: a response message moves through the same states
as the run that produces it (the answer and the run row are written in one transaction with the same
value), and a message created without a run (a user message, a direct v1-threads message) is simply
``completed``. ``cancelled`` is the state a cancelled run and its partial answer end in.

The columns stay ``VARCHAR(16)`` (no database enum type to migrate when a state is added); the
``StatusText`` column type hands values back as the enum, on PostgreSQL and SQLite alike.
"""
from __future__ import annotations

from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.types import TypeDecorator


class Status(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in ACTIVE_STATUSES


class StepStatus(StrEnum):
    """A run step (one model call or tool call) either did its work or failed."""

    COMPLETED = "completed"
    FAILED = "failed"


# A run in one of these still holds its thread's turn and counts against its owner's cap; the partial
# indexes ix_runs_thread_active and ix_runs_user_active cover exactly these rows.
ACTIVE_STATUSES = (Status.QUEUED, Status.IN_PROGRESS)


class StatusText(TypeDecorator):
    """A status column: stored as text, read back as the given ``StrEnum``."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[StrEnum]):
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value, dialect):
        return None if value is None else str(self.enum(value))

    def process_result_value(self, value, dialect):
        return None if value is None else self.enum(value)
