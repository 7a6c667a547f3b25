"""report_conversation: the assistant flags the current thread for a human (abuse, danger, misuse)."""
from __future__ import annotations

from typing import Any

from shared.services import reports
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.REPORT_CONVERSATION
SCHEMA = {
    "description": "Report this conversation to a human moderator, e.g. for abusive or dangerous content. "
    "Give a short reason.",
    "parameters": {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why the conversation needs a human's attention."}},
        "required": ["reason"],
    },
}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    reason = args.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ToolError("'reason' must be a non-empty string")
    reports.report_thread(tenant_id=ctx.tenant_id, user_id=ctx.user_id, thread_id=ctx.thread_id,
                          reason=reason, created_by="assistant")
    return {"reported": True}
