"""Helpers the dialects share: timestamp formats, schema fields, error documentation and poll headers.

Input hygiene (NUL characters, unpaired surrogates, nesting depth) is not here: api/hardening.py
checks every JSON body and query string once, with the one limit MAX_JSON_DEPTH, before any schema."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from api.extensions import Blueprint
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared.config import settings


def iso(value: datetime | None, timespec: str = "milliseconds") -> str | None:
    """UTC ISO 8601 with a ``Z``: ``2024-02-04T12:00:00.000Z`` (milliseconds) or microseconds."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


class Timestamp(fields.DateTime):
    """A DateTime that always renders UTC with a ``Z`` and a fixed number of fractional digits.

    Fixed precision matters: v1-threads clients send ``created_at`` back as the ``before`` cursor, so it
    must carry every digit the database keeps (microseconds) to be exact.
    """

    def __init__(self, *, timespec: str = "milliseconds", **kwargs):
        super().__init__(**kwargs)
        self.timespec = timespec

    def _serialize(self, value, attr, obj, **kwargs):
        return iso(value, self.timespec)


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


# What the OpenAPI document says about text, so generated clients send what is accepted: at least one
# character that is not white space (``not_blank``); NUL characters are refused by api/hardening.py.
NOT_BLANK = {"pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"}
NO_NUL = {"pattern": r"^[^\u0000]*$"}


# Free-form JSON (context, state, details, references) as the OpenAPI document states it: any JSON
# whose strings and keys hold no NUL (api/hardening.py refuses them). Served as components by
# create_app; the nesting limit (MAX_JSON_DEPTH) is in the description, JSON Schema cannot say it.
_REF = "#/components/schemas/"
STORABLE_JSON_SCHEMAS = {
    "StorableJson": {
        "description": "Any JSON value without NUL characters in its strings or keys, nested at most "
                       "MAX_JSON_DEPTH (32) levels.",
        "anyOf": [{"type": "string", **NO_NUL}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
                  {"type": "array", "items": {"$ref": _REF + "StorableJson"}}, {"$ref": _REF + "StorableObject"}],
    },
    "StorableObject": {"type": "object", "propertyNames": NO_NUL, "additionalProperties": {"$ref": _REF + "StorableJson"}},
}


def free_form(description: str, **kwargs) -> fields.Dict:
    """A JSON object the client owns (stored and returned as given), documented as StorableObject."""
    shape: dict = {"$ref": _REF + "StorableObject"}
    schema = {"anyOf": [shape, {"type": "null"}]} if kwargs.get("allow_none") else {"allOf": [shape]}
    return fields.Dict(metadata={"description": description, **schema}, **kwargs)


def model_field(**kwargs) -> fields.String:
    """A model id: the registry's ids as an enum in the OpenAPI document (the service still checks it,
    with the dialect's own message). The registry is read once at start-up, like every setting."""
    description = kwargs.pop("description", "A model of the server's registry.")
    enum: list[str | None] = sorted(settings.models)
    if kwargs.get("allow_none"):
        enum.append(None)  # JSON Schema: a null must be in the enum too
    return fields.String(validate=validate.Length(min=1, max=100),
                         metadata={"description": description, "enum": enum}, **kwargs)


def document_errors(blp: Blueprint, statuses: dict[int | str, tuple[type, str]]) -> Callable:
    """Document a route's error responses (status → (schema, description)) in the OpenAPI spec."""

    def decorator(func: Callable) -> Callable:
        for status, (schema, description) in statuses.items():
            func = blp.alt_response(status, schema=schema, description=description)(func)
        return func

    return decorator


def poll_headers(location: str) -> dict[str, str]:
    """What a 201 with a pending answer carries: where to poll, and how soon."""
    return {"Location": location, "Retry-After": "1"}


class AnswerHeaders(Schema):
    """The headers of a post-for-an-answer: documented in OpenAPI, read by api.waiting."""

    class Meta:
        unknown = EXCLUDE  # every other header is none of our business

    idempotency_key = fields.String(
        data_key="Idempotency-Key", load_default=None, validate=validate.Length(min=1, max=255),
        metadata={"description": "Retrying with the same key returns the same messages; never a second answer."},
    )
    thread_busy = fields.String(
        data_key="Thread-Busy", load_default=None,
        metadata={"enum": ["enqueue", "reject", "interrupt", "rollback"],
                  "description": "What to do when the thread is still answering an earlier message: `enqueue` "
                                 "(default: answer after it), `reject` (409), `interrupt` (cancel it, keep its partial "
                                 "answer, answer this one), `rollback` (cancel it and delete its messages and steps, "
                                 "answer this one). The older `If-Thread-Idle: true` is an alias of `reject`; both at "
                                 "once must agree (else 422, 400 in chats). See docs/api.md, Double-texting."},
    )
    prefer = fields.String(
        data_key="Prefer", load_default=None, validate=validate.Length(max=1000),
        metadata={"description": "wait=SECONDS (RFC 7240): how long to wait for the answer before answering "
                                 "201 with a pending response and a Location to poll."},
    )
