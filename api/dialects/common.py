"""Helpers the dialects share: timestamp formats, input hygiene, error documentation and poll headers."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable

from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate


MAX_JSON_DEPTH = 20


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


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise ValidationError(f"{where} must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{where} must be valid Unicode (no lone surrogates).") from None


def safe_text(value: str) -> None:
    """Marshmallow validator: text the database can store (PostgreSQL refuses NUL and lone surrogates)."""
    _check_text(value, "Text")


def safe_json(value: Any) -> None:
    """Marshmallow validator for free-form JSON: storable strings, finite numbers, bounded nesting."""

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(f"Nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(node, str):
            _check_text(node, "Strings")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValidationError("Numbers must be finite.")
        elif isinstance(node, dict):
            for key, item in node.items():
                _check_text(str(key), "Keys")
                walk(item, depth + 1)
        elif isinstance(node, list):
            for item in node:
                walk(item, depth + 1)

    walk(value, 0)


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


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
    prefer = fields.String(
        data_key="Prefer", load_default=None, validate=validate.Length(max=1000),
        metadata={"description": "wait=SECONDS (RFC 7240): how long to wait for the answer before answering "
                                 "201 with a pending response and a Location to poll."},
    )
