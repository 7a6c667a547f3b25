"""Request and response schemas of the ai-threads dialect (seeds 000 and 001)."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.dialects.common import NO_NUL, NOT_BLANK, free_form, model_field, not_blank
from shared.models import ReportStatus, Status
from shared.services.messages import MAX_CONTENT


class ThreadCreate(Schema):
    title = fields.String(load_default="", validate=validate.Length(max=200))
    model_id = model_field(load_default=None, allow_none=True)
    workflow_id = fields.UUID(load_default=None, allow_none=True, metadata={"description": "Run with this workflow."})
    context = free_form("The client's context (e.g. page and form fields).", load_default=None, allow_none=True)


class Pagination(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10**6))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class MessageCreate(Schema):
    content = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_CONTENT), not_blank],
                            metadata={"description": "The message (not blank, at most 5000 characters).", **NOT_BLANK})
    context = free_form("Client context, e.g. page and form fields.", load_default=None, allow_none=True)
    state = free_form("The same as context (seed 001 name). {} is an empty state, kept as such; the answer carries "
                      "updated_state, also on later posts to the thread that send no state.",
                      load_default=None, allow_none=True)
    model_id = model_field(load_default=None, allow_none=True)
    workflow_id = fields.UUID(load_default=None, allow_none=True, metadata={"description": "Run with this workflow (default: the thread's)."})

    @validates_schema
    def one_of_context_or_state(self, data, **_kwargs):
        if data.get("context") is not None and data.get("state") is not None:
            raise ValidationError("Send either context or state, not both.", "state")


class WaitQuery(Schema):
    wait = fields.Float(load_default=None, metadata={"description": "Seconds to wait for the answer (or header Prefer: wait=N)."})


class Step(Schema):
    index = fields.Integer()
    kind = fields.String()
    name = fields.String()
    arguments = fields.Dict(allow_none=True)
    output = fields.String(allow_none=True)
    status = fields.String()
    usage = fields.Dict(allow_none=True)
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class Citation(Schema):
    chunk_id = fields.String()
    quote = fields.String()
    offset = fields.Integer()
    length = fields.Integer()
    document_id = fields.String(allow_none=True)
    document_version_id = fields.String(allow_none=True)
    document_name = fields.String(allow_none=True)
    document_version = fields.Integer(allow_none=True)
    path = fields.String(allow_none=True)


class MessageResource(Schema):
    id = fields.UUID()
    thread_id = fields.Integer()
    seq = fields.Integer()
    role = fields.String()
    content = fields.String()
    status = fields.String(metadata={"description": " | ".join(Status)})
    context = fields.Dict(allow_none=True)
    updated_context = fields.Dict(allow_none=True)
    state = fields.Dict(allow_none=True)
    updated_state = fields.Dict(allow_none=True)
    citations = fields.List(fields.Nested(Citation))
    is_error = fields.Boolean()
    steps = fields.List(fields.Nested(Step))
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class MessagePair(Schema):
    createdMessage = fields.Nested(MessageResource)
    responseMessage = fields.Nested(MessageResource)


class ThreadResource(Schema):
    id = fields.Integer()
    uuid = fields.UUID(metadata={"description": "The same thread's id in the chats and v1-threads dialects."})
    title = fields.String()
    model_id = fields.String(allow_none=True)
    context = fields.Dict(allow_none=True)
    user_id = fields.String()
    flagged = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PageMeta(Schema):
    current_page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()
    last_page = fields.Integer()


class ThreadList(Schema):
    data = fields.List(fields.Nested(ThreadResource))
    meta = fields.Nested(PageMeta)


class MessageList(Schema):
    data = fields.List(fields.Nested(MessageResource))
    meta = fields.Nested(PageMeta)


class AiThreadsError(Schema):
    message = fields.String()
    code = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class CancelConflict(AiThreadsError):
    """409 of a cancel: the answer already finished; ``data`` is the message as it stands."""

    data = fields.Nested(MessageResource)


# -- reports (moderators) and memories (their owner) ------------------------------------------------------

class ReportQuery(Pagination):
    status = fields.String(load_default=None, validate=validate.OneOf([str(s) for s in ReportStatus]),
                           metadata={"description": "Only open or only resolved reports (default: both)."})


class ReportResolve(Schema):
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000),
                         metadata={"description": "What the moderator did or found (kept with the resolution).", **NO_NUL})


class ReportResource(Schema):
    id = fields.UUID()
    thread_id = fields.Integer()
    thread_uuid = fields.UUID(metadata={"description": "The same thread's id in the chats and v1-threads dialects."})
    reason = fields.String()
    created_by = fields.String(metadata={"description": "assistant | user"})
    excerpt = fields.String(metadata={"description": "The start of the user's message the report followed (200 characters)."})
    created_at = fields.DateTime()
    status = fields.String(metadata={"description": " | ".join(ReportStatus)})
    resolved_at = fields.DateTime(allow_none=True)
    resolved_by = fields.String(allow_none=True, metadata={"description": "The moderator's user id."})
    resolution_note = fields.String(allow_none=True)


class ReportList(Schema):
    data = fields.List(fields.Nested(ReportResource))
    meta = fields.Nested(PageMeta)


class MemoryResource(Schema):
    id = fields.UUID()
    content = fields.String()
    source_thread_id = fields.Integer(allow_none=True, metadata={"description": "The thread it was saved in (null once deleted)."})
    created_at = fields.DateTime()


class MemoryList(Schema):
    data = fields.List(fields.Nested(MemoryResource))
    meta = fields.Nested(PageMeta)
