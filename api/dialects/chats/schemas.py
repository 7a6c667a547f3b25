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


class ChatMessageWithResponse(ChatMessage):
    response = fields.Nested(ChatMessage, required=True, metadata={"description": "The assistant's response message."})


class PostedEnvelope(Schema):
    data = fields.Nested(ChatMessageWithResponse, required=True)


class ChatMessageEnvelope(Schema):
    data = fields.Nested(ChatMessage, required=True)


class ChatMessageList(Schema):
    data = fields.List(fields.Nested(ChatMessage), required=True)
    meta = fields.Nested(ChatsPageMeta, required=True)


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
