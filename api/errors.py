"""One error pipeline: every error becomes a ``Problem``, and the dialect the request spoke renders it.

Services raise shared.errors (field names in the core's words: ``model_id``, ``workflow_id``);
request guards raise ``RequestInvalid`` with each bad field's location; webargs/marshmallow,
werkzeug (404, 405, 413), the rate limiter and the database raise their own. ``to_problem`` turns
each into a Problem whose field errors carry where they are (``("body", "content", "text")``,
``("query", "wait")``, ``("header", "Prefer")``, ``("path", "thread_id")``). A dialect is data kept on
the app (``app.extensions``): its URL prefixes, its renderer, its status mapping (400 vs 422) and its
names for core fields. No stack trace ever reaches a client.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from flask import Flask, current_app, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from shared.errors import BadRequest, ThreadlineError, ValidationFailed

log = logging.getLogger(__name__)

Loc = tuple[str | int, ...]
LOCATIONS = ("body", "query", "header", "path")
EXTENSION = "threadline.dialects"


@dataclass(frozen=True)
class FieldError:
    """One bad input: where it is (``loc[0]`` is one of LOCATIONS), what is wrong, which kind."""

    loc: Loc
    msg: str
    type: str = "value_error"

    @property
    def name(self) -> str:
        """The field's dotted name without its location (``content.text``), or the location itself."""
        return ".".join(str(part) for part in self.loc[1:]) or str(self.loc[0])


@dataclass
class Problem:
    status: int
    code: str
    message: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    # Members added to the dialect's error body: a route that knows the resource the error is about
    # sets ``exc.extra`` (a cancel refused with 409 carries the finished message as ``data``).
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, list[str]]:
        """Field name → messages: the flat form the ai-threads and chats dialects render."""
        flat: dict[str, list[str]] = {}
        for error in self.errors:
            flat.setdefault(error.name, []).append(error.msg)
        return flat


class RequestInvalid(ValidationFailed):
    """Raised by the API's own request checks, which know where the bad input is."""

    def __init__(self, message: str, *errors: FieldError, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.errors = list(errors)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidJson(RequestInvalid, BadRequest):
    status, code = 400, "invalid_json"

    def __init__(self, message: str):
        super().__init__(message, FieldError(("body",), message, "json_invalid"))


Renderer = Callable[[Problem], dict]


@dataclass(frozen=True)
class Dialect:
    """What the error pipeline and the request guards need to know about one API dialect."""

    name: str
    prefixes: tuple[str, ...]
    render: Renderer
    statuses: Mapping[int, int] = field(default_factory=dict)  # e.g. {400: 422}: FastAPI answers 422
    field_names: Mapping[str, str] = field(default_factory=dict)  # core name → the dialect's (model_id → modelId)
    public_endpoints: frozenset[str] = frozenset()  # endpoints that need no credentials (login)
    missing_credentials: str = "Authentication required: send 'Authorization: Bearer <token>'."

    def adapt(self, problem: Problem) -> Problem:
        errors = [replace(e, loc=(e.loc[0], self.field_names.get(str(e.loc[1]), e.loc[1]), *e.loc[2:]))
                  if e.loc[0] == "body" and len(e.loc) > 1 else e for e in problem.errors]
        return replace(problem, status=self.statuses.get(problem.status, problem.status), errors=errors)


def register(app: Flask, dialect: Dialect) -> None:
    """A dialect claims its URL prefixes on this app (no module-level state: one list per app)."""
    dialects: list[tuple[str, Dialect]] = app.extensions.setdefault(EXTENSION, [])
    dialects.extend((prefix, dialect) for prefix in dialect.prefixes)
    dialects.sort(key=lambda item: -len(item[0]))


def dialect_for(path: str) -> Dialect | None:
    for prefix, dialect in current_app.extensions.get(EXTENSION, []):
        if path.startswith(prefix):
            return dialect
    return None


def generic(problem: Problem) -> dict:
    body: dict = {"error": {"code": problem.code, "message": problem.message}}
    if problem.errors:
        body["error"]["fields"] = problem.fields()
    return body


GENERIC = Dialect("generic", (), generic)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
         422: "validation_failed", 429: "rate_limited", 500: "internal_error", 503: "unavailable"}

# marshmallow's messages → FastAPI-style error types (v1-threads shows them; the others ignore them)
TYPES = {"Missing data for required field.": "missing", "Unknown field.": "extra_forbidden",
         "Field may not be null.": "none_forbidden", "Not a valid UUID.": "uuid_parsing",
         "Not a valid integer.": "int_parsing", "Not a valid string.": "string_type",
         "Not a valid boolean.": "bool_parsing", "Invalid input type.": "type_error",
         "Invalid JSON body.": "json_invalid"}
WEBARGS_LOCATIONS = {"json": "body", "form": "body", "query": "query", "querystring": "query", "headers": "header",
                     "view_args": "path", "path": "path"}


def from_webargs(messages: Any) -> list[FieldError]:
    """webargs nests errors by location ({"json": {"content": {"text": [...]}}}): keep where they are."""
    found: list[FieldError] = []

    def walk(loc: Loc, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(loc if key == "_schema" else (*loc, key if isinstance(key, int) else str(key)), sub)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            found.extend(FieldError(loc, message, TYPES.get(message, "value_error")) for message in value)
        else:
            found.append(FieldError(loc, str(value)))

    if isinstance(messages, dict):
        for location, value in messages.items():
            walk((WEBARGS_LOCATIONS.get(location, str(location)),), value)
    else:
        walk(("body",), messages)
    return found


def from_fields(fields: Mapping[str, list[str]]) -> list[FieldError]:
    """A service names body fields in the core's words (``model_id``, ``content``)."""
    return [FieldError(("body", *name.split(".")) if name != "body" else ("body",), message)
            for name, messages in fields.items() for message in messages]


def _seconds_until_reset() -> int:
    from api.extensions import limiter

    current = limiter.current_limit
    return max(1, int(current.reset_at - time.time()) + 1) if current else 60


def to_problem(exc: Exception) -> Problem:
    if isinstance(exc, ThreadlineError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        errors = exc.errors if isinstance(exc, RequestInvalid) else from_fields(exc.fields)
        return Problem(exc.status, exc.code, exc.message, errors, headers, dict(getattr(exc, "extra", None) or {}))
    if isinstance(exc, RateLimitExceeded):
        return Problem(429, "rate_limited", f"Too many requests: the limit is {exc.description}.",
                       headers={"Retry-After": str(_seconds_until_reset())})
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        errors = from_webargs(data["messages"]) if "messages" in data else []
        if any(e.type == "json_invalid" for e in errors):
            return Problem(400, "invalid_json", "The request body is not valid JSON.", errors)
        if status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            return Problem(413, "payload_too_large", f"The request body is too large (at most {limit} bytes).")
        message = f"{errors[0].name}: {errors[0].msg}" if errors else (exc.description or exc.name)
        return Problem(status, CODES.get(status, "error"), message, errors)
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        log.error("database unavailable: %s", exc.__class__.__name__)
        return Problem(503, "unavailable", "The service is temporarily unavailable; please retry shortly.",
                       headers={"Retry-After": "5"})
    if isinstance(exc, DataError):  # a value PostgreSQL refuses (out of range, bad encoding): the caller's input
        log.warning("database refused a value: %s", str(exc.orig).splitlines()[0] if exc.orig else exc)
        return Problem(422, "validation_failed", "A value in the request is out of range or not storable.")
    log.exception("unhandled error")
    return Problem(500, "internal_error", "An unexpected error occurred. It has been logged.")


def respond(exc: Exception):
    dialect = dialect_for(request.path) or GENERIC
    problem = dialect.adapt(to_problem(exc))
    body = dialect.render(problem)
    if problem.extra and isinstance(body, dict):
        body = {**body, **problem.extra}
    response = jsonify(body)
    response.status_code = problem.status
    if isinstance(exc, HTTPException) and exc.code in (401, 405, 429):
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
    for key, value in problem.headers.items():
        response.headers[key] = value
    if problem.status == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="threadline"')
    return response


def install(app: Flask) -> None:
    app.register_error_handler(Exception, respond)
    app.register_error_handler(HTTPException, respond)
