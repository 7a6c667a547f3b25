"""Request and response schemas of the chats dialect (seeds 002 and 003): camelCase, ``{"data": …}``."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.dialects.common import NOT_BLANK, Timestamp, model_field, not_blank
from shared.models import Status
from shared.services.messages import MAX_CONTENT


class LoginRequest(Schema):
    email = fields.String(required=True, validate=[validate.Length(min=1, max=320)])
    password = fields.String(required=True, validate=[validate.Length(min=1, max=1000)],
                             load_only=True)


class ChatsUser(Schema):
    id = fields.String(required=True, metadata={"description": "The user id, e.g. user-123 (send it as userId)."})
    email = fields.String(required=True)
    tenantId = fields.UUID(required=True)


class UserEnvelope(Schema):
    data = fields.Nested(ChatsUser, required=True)


class Me(Schema):
    id = fields.String(required=True, metadata={"description": "The user id (send it as userId)."})
    tenantId = fields.UUID(required=True)


class MeEnvelope(Schema):
    data = fields.Nested(Me, required=True)


class ChatPath(Schema):
    """A chatId that is not a UUID is a 400 (seed 002: "Invalid request body or parameters"), not a 404."""

    chatId = fields.UUID(required=True, metadata={"description": "The chat's unique identifier (UUID)."})


class MessagePath(ChatPath):
    messageId = fields.UUID(required=True, metadata={"description": "The message's identifier (UUID)."})


class ChatCreate(Schema):
    title = fields.String(load_default="", validate=validate.Length(max=200))
    modelId = model_field(load_default=None, allow_none=True, description="Default model for the chat's messages.")
    workflowId = fields.UUID(load_default=None, allow_none=True, metadata={"description": "A workflow of your tenant."})


class Chat(Schema):
    id = fields.UUID(required=True, metadata={"description": "The chat's id (chatId)."})
    title = fields.String(required=True)
    modelId = fields.String(required=True, allow_none=True)
    workflowId = fields.UUID(required=True, allow_none=True)
    userId = fields.String(required=True)
    createdAt = Timestamp(required=True)
    updatedAt = Timestamp(required=True)


class ChatEnvelope(Schema):
    data = fields.Nested(Chat, required=True)


class ChatsPage(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class MessagesPage(ChatsPage):
    """Paging of a chat's messages: ``offset`` pages in conversation order; a page that loads older
    messages on scroll asks ``order=desc`` (newest first) with ``before`` = the oldest message it shows,
    which stays exact while new messages arrive (an offset would shift)."""

    order = fields.String(load_default="asc", validate=validate.OneOf(("asc", "desc")), metadata={
        "description": "asc: conversation order, oldest first (the default); desc: newest first."})
    before = fields.UUID(load_default=None, metadata={
        "description": "Only messages older than this message of the chat (a message id); `meta.total` "
                       "counts those."})


class ChatsPageMeta(Schema):
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class ChatList(Schema):
    data = fields.List(fields.Nested(Chat), required=True)
    meta = fields.Nested(ChatsPageMeta, required=True)


class ChatMessageCreate(Schema):
    """The seed's body: content, modelId and userId required, workflowId optional."""

    content = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_CONTENT), not_blank],
                            metadata={"description": "The message content (not blank).", **NOT_BLANK})
    modelId = model_field(required=True, description="The AI model to use for the response: one of the server's "
                                                     "model registry (GET /openapi.json lists them), e.g. gpt-4.")
    userId = fields.String(required=True, validate=[validate.Length(min=1, max=64)],
                           metadata={"description": "The user sending the message. It must be the caller: the "
                                                    "`data.id` that POST /api/auth/login returned (or the token's "
                                                    "user). Any other value is a 403.",
                                     "example": "user-123"})
    workflowId = fields.UUID(load_default=None, allow_none=True, metadata={
        "description": "Optional workflow to execute: the id of a workflow of your tenant (an unknown id is a 400)."})


class ChatCitation(Schema):
    """Threadline addition: a passage of the knowledge base the answer quotes. The document fields are
    looked up when the message is read (null when the document is gone or not the reader's)."""

    chunkId = fields.String(required=True, metadata={"description": "The cited chunk."})
    quote = fields.String(required=True, metadata={"description": "The verbatim quote (it appears in the content)."})
    offset = fields.Integer(required=True, metadata={"description": "0-based character offset of the quote in the chunk."})
    length = fields.Integer(required=True)
    documentId = fields.UUID(required=True, allow_none=True)
    documentName = fields.String(required=True, allow_none=True)
    documentVersion = fields.Integer(required=True, allow_none=True)
    path = fields.String(required=True, allow_none=True, metadata={
        "description": "/documents/{document path}/versions/{version}/chunks/{chunk index}"})


class ChatMessage(Schema):
    id = fields.UUID(required=True, metadata={"description": "Message identifier."})
    chatId = fields.UUID(required=True, metadata={"description": "Parent chat identifier."})
    role = fields.String(required=True, validate=validate.OneOf(("user", "assistant", "system")))
    content = fields.String(required=True)
    createdAt = Timestamp(required=True, metadata={"description": "ISO 8601, milliseconds, UTC (Z)."})
    status = fields.String(
        required=True, validate=validate.OneOf([status.value for status in Status]),
        metadata={"description": "Threadline addition: completed, or queued / in_progress while the answer is "
                                 "being produced (poll GET /api/chats/{chatId}/messages/{id}), or failed."},
    )
    citations = fields.List(fields.Nested(ChatCitation), required=True, metadata={
        "description": "Threadline addition: the knowledge-base passages the answer quotes (usually empty)."})


class ChatMessageWithResponse(ChatMessage):
    response = fields.Nested(ChatMessage, required=True, metadata={"description": "The assistant's response message."})


class PostedEnvelope(Schema):
    data = fields.Nested(ChatMessageWithResponse, required=True)


class ChatMessageEnvelope(Schema):
    data = fields.Nested(ChatMessage, required=True)


class ChatMessageList(Schema):
    data = fields.List(fields.Nested(ChatMessage), required=True)
    meta = fields.Nested(ChatsPageMeta, required=True)


class Model(Schema):
    id = fields.String(required=True, metadata={"description": "A modelId to send."})
    default = fields.Boolean(required=True, metadata={"description": "The model used when none is named."})


class ModelList(Schema):
    data = fields.List(fields.Nested(Model), required=True)


class Workflow(Schema):
    id = fields.UUID(required=True, metadata={"description": "A workflowId to send."})
    name = fields.String(required=True)
    modelId = fields.String(required=True, allow_none=True, metadata={"description": "The workflow's own model, if any."})


class WorkflowList(Schema):
    data = fields.List(fields.Nested(Workflow), required=True)


class ChatsError(Schema):
    """NestJS-style error body, matching the seed's Status Code | Error | Description table."""

    statusCode = fields.Integer(required=True)
    error = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                          metadata={"description": "Field → messages, for invalid input."})


class CancelConflict(ChatsError):
    """409 of a cancel: the answer already finished; ``data`` is the message as it stands."""

    data = fields.Nested(ChatMessage)


class ChatMemoryPath(Schema):
    memoryId = fields.UUID(required=True, metadata={"description": "The memory's identifier (UUID)."})


class ChatMemory(Schema):
    id = fields.UUID(required=True)
    content = fields.String(required=True)
    chatId = fields.UUID(attribute="source_thread_uuid", allow_none=True,
                         metadata={"description": "The chat it was saved in (null once that chat is deleted)."})
    createdAt = Timestamp(attribute="created_at", required=True)


class ChatMemoryList(Schema):
    data = fields.List(fields.Nested(ChatMemory), required=True)
    meta = fields.Nested(ChatsPageMeta, required=True)
