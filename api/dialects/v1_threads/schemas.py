"""Request and response schemas of the v1-threads dialect (seed 004): snake_case, FastAPI-style."""
from __future__ import annotations

from datetime import timezone

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.dialects.common import NO_NUL, NOT_BLANK, Timestamp, free_form, model_field, not_blank
from shared.models import Status
from shared.services.messages import MAX_CONTENT, MAX_DIRECT_CONTENT

ROLES = ("USER", "ASSISTANT", "SYSTEM")
MAX_CITATIONS = 100
MAX_INDEX = 10**9


def micro(**kwargs) -> Timestamp:
    """Microsecond timestamps: send ``created_at`` back unchanged as ``before`` and nothing is skipped."""
    return Timestamp(timespec="microseconds", **kwargs)


class ThreadPath(Schema):
    thread_id = fields.UUID(required=True, metadata={"description": "The thread's UUID."})


class MessagePath(ThreadPath):
    message_id = fields.UUID(required=True, metadata={"description": "The message's UUID."})


class CreateThreadRequest(Schema):
    title = fields.String(load_default="", validate=validate.Length(max=200))
    model_id = model_field(load_default=None, allow_none=True)
    workflow_id = fields.UUID(load_default=None, allow_none=True)


class ThreadResponse(Schema):
    id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    user_id = fields.String(required=True)
    title = fields.String(required=True)
    model_id = fields.String(required=True, allow_none=True)
    workflow_id = fields.UUID(required=True, allow_none=True)
    created_at = micro(required=True)
    updated_at = micro(required=True)


class ThreadListResponse(Schema):
    data = fields.List(fields.Nested(ThreadResponse), required=True)


class ThreadListQuery(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class CitationRequest(Schema):
    """A citation as the caller states it: ``length`` must be the number of characters of ``quote``
    (the document says so in its description: JSON Schema cannot compare two fields)."""

    chunk_id = fields.UUID(required=True, metadata={"description": "UUID of the source chunk."})
    quote = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_DIRECT_CONTENT)],
                          metadata={"description": "The verbatim quoted text.", **NO_NUL})
    offset = fields.Integer(required=True, validate=validate.Range(min=0, max=MAX_INDEX),
                            metadata={"description": "0-based character offset of the quote in the chunk."})
    length = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=MAX_INDEX),
                            metadata={"description": "Character length of the quote. Omit it (or send null): it is "
                                                     "the quote's length, and any other value is refused (422)."})

    @validates_schema
    def length_is_the_quote(self, data, **_kwargs):
        if data.get("length") is not None and "quote" in data and data["length"] != len(data["quote"]):
            raise ValidationError("Must equal the number of characters in quote.", "length")


class ThreadMessageContentIn(Schema):
    text = fields.String(required=True, validate=validate.Length(max=MAX_DIRECT_CONTENT),
                         metadata={"description": "The message text.", **NO_NUL})
    citations = fields.List(fields.Nested(CitationRequest), load_default=list, validate=validate.Length(max=MAX_CITATIONS))
    is_error = fields.Boolean(load_default=False)
    references = fields.List(free_form("A reference, stored and returned as given."), load_default=list,
                             validate=validate.Length(max=MAX_CITATIONS),
                             metadata={"description": "Inline references, stored and returned as given."})


class CreateThreadMessageRequest(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES), metadata={"description": "See MessageRole."})
    content = fields.Nested(ThreadMessageContentIn, required=True)
    message_id = fields.UUID(load_default=None, allow_none=True,
                             metadata={"description": "Caller-chosen id: the same id twice returns the existing message."})
    details = free_form("Execution step data for assistant messages (e.g. tool call traces).",
                        load_default=None, allow_none=True)


class UserMessageContent(Schema):
    text = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_CONTENT), not_blank],
                         metadata={"description": "The user's message (not blank).", **NOT_BLANK})


class UserMessageRequest(Schema):
    content = fields.Nested(UserMessageContent, required=True)
    message_id = fields.UUID(load_default=None, allow_none=True,
                             metadata={"description": "Caller-chosen id of the user message; makes the post idempotent."})
    model_id = model_field(load_default=None, allow_none=True)


class V1WaitQuery(Schema):
    wait = fields.Float(load_default=None, validate=validate.Range(min=0, max=3600),
                        metadata={"description": "Seconds to wait for the answer (or header Prefer: wait=N)."})


class DetailsQuery(Schema):
    with_details = fields.Boolean(load_default=True, metadata={"description": "Include execution step data."})


class ThreadMessagesQuery(DetailsQuery):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100), metadata={"description": "1–100."})
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))
    before = fields.AwareDateTime(
        load_default=None, default_timezone=timezone.utc,
        metadata={"description": "Keyset cursor: only messages created before this ISO 8601 time. Pass a "
                                 "message's created_at unchanged (microseconds) to page without skipping."},
    )


class EnrichedCitation(Schema):
    chunk_id = fields.String(required=True)
    quote = fields.String(required=True)
    offset = fields.Integer(required=True)
    length = fields.Integer(required=True)
    document_id = fields.UUID(required=True, allow_none=True)
    document_version_id = fields.UUID(required=True, allow_none=True)
    document_name = fields.String(required=True, allow_none=True)
    document_version = fields.Integer(required=True, allow_none=True)
    path_part_id = fields.UUID(required=True, allow_none=True)
    path = fields.String(required=True, allow_none=True)


class EnrichedThreadMessageContent(Schema):
    text = fields.String(required=True)
    is_error = fields.Boolean(required=True)
    citations = fields.List(fields.Nested(EnrichedCitation), required=True)
    references = fields.List(fields.Dict(), required=True)


class ThreadMessageResponse(Schema):
    id = fields.UUID(required=True)
    thread_id = fields.UUID(required=True)
    path_part_id = fields.UUID(required=True, metadata={"description": "Equals the message id."})
    sequence_number = fields.Integer(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = fields.Nested(EnrichedThreadMessageContent, required=True)
    details = fields.Dict(required=True, allow_none=True)
    parent_path_id = fields.UUID(required=True, metadata={"description": "Equals thread_id."})
    path = fields.String(required=True, metadata={"description": "/threads/{thread_id}/messages/{sequence_number}"})
    tenant_id = fields.UUID(required=True)
    created_at = micro(required=True)
    updated_at = micro(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf([status.value for status in Status]),
        metadata={"description": "Threadline addition: queued / in_progress while an answer is being produced."},
    )


class ThreadMessageList(Schema):
    data = fields.List(fields.Nested(ThreadMessageResponse), required=True)


class UserMessageResponse(Schema):
    user_message = fields.Nested(ThreadMessageResponse, required=True)
    assistant_message = fields.Nested(ThreadMessageResponse, required=True)


class ValidationErrorItem(Schema):
    loc = fields.List(fields.Raw(metadata={"anyOf": [{"type": "string"}, {"type": "integer"}]}), required=True)
    msg = fields.String(required=True)
    type = fields.String(required=True)


class HTTPValidationError(Schema):
    detail = fields.List(fields.Nested(ValidationErrorItem), required=True)


class HTTPError(Schema):
    detail = fields.String(required=True)


class CancelConflict(HTTPError):
    """409 of a cancel: the answer already finished; ``data`` is the message as it stands."""

    data = fields.Nested(ThreadMessageResponse)


# -- memories: /v1/memories ---------------------------------------------------------------------------

class MemoryPath(Schema):
    memory_id = fields.UUID(required=True, metadata={"description": "The memory's UUID."})


class MemoryResponse(Schema):
    id = fields.UUID(required=True)
    content = fields.String(required=True)
    thread_id = fields.UUID(attribute="source_thread_uuid", allow_none=True,
                            metadata={"description": "The thread it was saved in (null once that thread is deleted)."})
    created_at = micro(required=True)


class MemoryListResponse(Schema):
    data = fields.List(fields.Nested(MemoryResponse), required=True)
