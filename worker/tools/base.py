"""What every tool module shares: the context a tool acts in, the error a tool reports, and the shape
of a tool module. Tools import this at the top; it imports nothing from the worker, so ``worker/tools``
never reaches up into ``worker.agent`` or ``worker.tasks``.

Tools get the caller's identity only from ``ToolContext``, never from the model's arguments: that is
what keeps a prompt from reaching another user's data.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.tools import ToolName


@dataclass
class ToolContext:
    """One run's state that tools read and change.

    ``context`` is the client's form state (the ``context``/``state`` object). ``context_changed``
    records that a tool (update_context) changed it during this run. The decision it carries: the
    response's ``updated_context`` always shows the context as it stands after the run (seeds 000/001:
    "you may find the updated context data you initially sent"), but the thread's stored context is
    written back only when ``context_changed`` is set; an unchanged context is already on the thread
    and rewriting it could undo a newer post's context (shared/services/runs.py, _write_answer).
    """

    tenant_id: uuid.UUID
    user_id: str
    thread_id: int
    run_id: uuid.UUID
    context: dict[str, Any] | None
    context_changed: bool = False
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # chunk id -> chunk, for citations
    # The run's permissions and taint state (worker/tools/policy.py, RunGuard): ``dispatch`` refuses a
    # call it does not allow. The agent always sets it; only direct in-process calls (service tests)
    # go without, and then nothing but the arguments is checked.
    guard: Any = None

    @property
    def permissions(self) -> frozenset[str] | None:
        """The run's permissions, or None for a direct call without a guard."""
        return self.guard.permissions if self.guard is not None else None

    def change_context(self, context: dict[str, Any]) -> None:
        self.context = context
        self.context_changed = True


class ToolError(Exception):
    """A failure the model should read (bad arguments, nothing found), not a crash. ``dispatch``
    also turns a service's ``ThreadlineError`` into one, so tools need not catch those."""


class Tool(Protocol):
    """A tool module: its name, its OpenAI function schema (description and JSON-schema parameters)
    and ``run``, which gets arguments already checked against that schema."""

    NAME: ToolName
    SCHEMA: dict[str, Any]

    def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]: ...
