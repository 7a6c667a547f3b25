"""Every error becomes a JSON response in the format of the dialect the request spoke.

Services raise shared.errors; webargs/marshmallow, werkzeug (404, 405, 413), the rate limiter and the
database raise their own. All of them are normalised to (status, code, message, fields) here and
handed to the dialect's renderer. No stack trace ever reaches a client.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from flask import Flask, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from shared.errors import ThreadlineError

log = logging.getLogger(__name__)


@dataclass
class Problem:
    status: int
    code: str
    message: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


Renderer = Callable[[Problem], dict]
_renderers: list[tuple[str, Renderer, Callable[[Problem], Problem]]] = []


def register(prefix: str, renderer: Renderer, adapt: Callable[[Problem], Problem] = lambda p: p) -> None:
    """A dialect claims a URL prefix: its renderer builds the body, ``adapt`` may change the status."""
    _renderers.append((prefix, renderer, adapt))
    _renderers.sort(key=lambda item: -len(item[0]))


def generic(problem: Problem) -> dict:
    body: dict = {"error": {"code": problem.code, "message": problem.message}}
    if problem.fields:
        body["error"]["fields"] = problem.fields
    return body


CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_failed",
         429: "rate_limited", 500: "internal_error", 503: "unavailable"}


def _flatten(messages) -> dict[str, list[str]]:
    """webargs nests errors by location ({"json": {"content": [...]}}); clients want field → messages."""
    flat: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            flat.setdefault(prefix or "body", []).extend(value)
        else:
            flat.setdefault(prefix or "body", []).append(str(value))

    if isinstance(messages, dict):
        for location, errors in messages.items():
            if location in ("json", "query", "headers", "form", "view_args", "path") and isinstance(errors, dict):
                walk("", errors)
            elif location in ("json", "query", "headers"):
                walk("body" if location == "json" else location, errors)
            else:
                walk(str(location), errors)
    else:
        walk("", messages)
    return flat


def _seconds_until_reset() -> int:
    import time

    from api.extensions import limiter

    current = limiter.current_limit
    return max(1, int(current.reset_at - time.time()) + 1) if current else 60


def to_problem(exc: Exception) -> Problem:
    if isinstance(exc, ThreadlineError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return Problem(exc.status, exc.code, exc.message, dict(exc.fields), headers)
    if isinstance(exc, RateLimitExceeded):
        return Problem(429, "rate_limited", f"Too many requests: the limit is {exc.description}.",
                       headers={"Retry-After": str(_seconds_until_reset())})
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        fields = _flatten(data["messages"]) if "messages" in data else {}
        if status == 400 and fields.get("body") == ["Invalid JSON body."]:
            return Problem(400, "invalid_json", "The request body is not valid JSON.", fields)
        if status == 413:
            from flask import current_app

            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            return Problem(413, "payload_too_large", f"The request body is too large (at most {limit} bytes).")
        message = "The request is invalid." if fields else (exc.description or exc.name)
        if fields:
            first = next(iter(fields.items()))
            message = f"{first[0]}: {first[1][0]}"
        return Problem(status, CODES.get(status, "error"), message, fields)
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
    problem = to_problem(exc)
    renderer, adapt = generic, (lambda p: p)
    for prefix, candidate, candidate_adapt in _renderers:
        if request.path.startswith(prefix):
            renderer, adapt = candidate, candidate_adapt
            break
    problem = adapt(problem)
    response = jsonify(renderer(problem))
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
