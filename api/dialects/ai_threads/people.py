"""The ai-threads dialect's routes about people rather than one thread: a tenant's reports for its
moderators (/api/v1/ai/reports) and a user's own memories (/api/v1/ai/memories). Same conventions as
the thread routes: bearer tokens, the ``{message, code, errors}`` error body, ``page``/``per_page``
pages with ``meta``; the services (shared/services/reports.py, memories.py) check the permissions."""
from __future__ import annotations

import uuid
from dataclasses import asdict

from api.extensions import Blueprint

from api.auth import current_principal
from api.dialects.ai_threads import schemas
from api.dialects.ai_threads.routes import ERRORS, page_meta
from api.dialects.common import document_errors
from shared.services import memories as memory_service
from shared.services import reports as report_service

reports_blp = Blueprint("ai_reports", __name__, url_prefix="/api/v1/ai/reports",
                        description="ai-threads dialect: reports for the tenant's moderators")
memories_blp = Blueprint("ai_memories", __name__, url_prefix="/api/v1/ai/memories",
                         description="ai-threads dialect: what the assistant remembers about you")

_E = schemas.AiThreadsError
REPORT_ERRORS = {**ERRORS, 403: (_E, "Missing permission reports.read (listing) or reports.manage (resolving)"),
                 404: (_E, "No such report in your tenant")}
MEMORY_ERRORS = {**ERRORS, 403: (_E, "Missing permission memories.read (listing) or memories.delete (deleting)"),
                 404: (_E, "You have no memory with this id")}


@reports_blp.route("", methods=["GET"])
@reports_blp.arguments(schemas.ReportQuery, location="query")
@reports_blp.response(200, schemas.ReportList)
@document_errors(reports_blp, REPORT_ERRORS)
def list_reports(query):
    """The tenant's reports, newest first: reason, thread, an excerpt, time and status (permission reports.read)."""
    page, per_page = query["page"], query["per_page"]
    items, total = report_service.moderator_list(current_principal(), status=query["status"], limit=per_page,
                                                 offset=(page - 1) * per_page)
    return {"data": [asdict(r) for r in items], "meta": page_meta(page, per_page, total)}


@reports_blp.route("/<uuid:report_id>/resolve", methods=["POST"])
@reports_blp.arguments(schemas.ReportResolve)
@reports_blp.response(200, schemas.ReportResource)
@document_errors(reports_blp, REPORT_ERRORS)
def resolve_report(body, report_id: uuid.UUID):
    """Resolve a report (permission reports.manage): records when and by whom, with an optional note.

    Resolving a resolved report returns it unchanged (the first resolution is kept)."""
    return asdict(report_service.moderator_resolve(current_principal(), report_id, note=body["note"]))


@memories_blp.route("", methods=["GET"])
@memories_blp.arguments(schemas.Pagination, location="query")
@memories_blp.response(200, schemas.MemoryList)
@document_errors(memories_blp, MEMORY_ERRORS)
def list_memories(query):
    """Your memories, newest first (permission memories.read). Only ever the caller's own."""
    page, per_page = query["page"], query["per_page"]
    items, total = memory_service.list_own(current_principal(), limit=per_page, offset=(page - 1) * per_page)
    return {"data": [asdict(m) for m in items], "meta": page_meta(page, per_page, total)}


@memories_blp.route("/<uuid:memory_id>", methods=["DELETE"])
@memories_blp.response(204)
@document_errors(memories_blp, MEMORY_ERRORS)
def delete_memory(memory_id: uuid.UUID):
    """Forget one of your memories (permission memories.delete); another user's memory id is 404."""
    memory_service.delete_own(current_principal(), memory_id)
    return ""
