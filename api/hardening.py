"""Request guards that run before any dialect sees a request, so every dialect gets them for free.

Credentials come first: a request without them is a 401 before its body is looked at (every dialect).
Hostile or broken input must end in a clear 4xx in the dialect's own format, never in a 500:
- bodies over MAX_REQUEST_BYTES → 413 (Flask's MAX_CONTENT_LENGTH; the message is made clear in
  api/errors.py);
- JSON bodies that are not UTF-8, not JSON, nested deeper than MAX_JSON_DEPTH, or that carry
  NaN/Infinity (PostgreSQL's json type rejects them) → 400/422;
- strings with NUL characters or unpaired surrogates anywhere in the body (keys too) or the query
  string → 422 (PostgreSQL cannot store ``\\x00`` in text, and a lone surrogate cannot be encoded as
  UTF-8). This is the only place that checks them: the dialects' schemas rely on it;
- a ``context``/``state`` object larger than MAX_CONTEXT_BYTES → 422;
- a non-empty body that is not ``application/json`` → 415 (every route of every dialect takes JSON).

It also adds the IETF draft ``RateLimit-*`` headers for the rate limit that applied. (The
``If-Thread-Idle`` precondition is read by the posting routes, api/waiting.py, and passed to the
message service as an argument.)
"""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from flask import Flask, Response, request

from api.auth import require_credentials
from api.errors import FieldError, InvalidJson, Loc, RequestInvalid
from shared.config import settings

BODY_METHODS = ("POST", "PUT", "PATCH")
CONTEXT_FIELDS = ("context", "state")
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _problem_with(value: str) -> str:
    if "\x00" in value:
        return "Must not contain NUL characters (\\u0000)."
    return "Must be valid Unicode text (it contains an unpaired surrogate)."


def parse_json_body(raw: bytes) -> Any:
    """Decode and parse strictly; every failure is a clear 400 (ai-threads renders it as 422)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("The request body is not valid UTF-8.") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidJson(f"The JSON body is nested too deeply (at most {settings.max_json_depth} levels).") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, out-of-range numbers, huge integers
        detail = f" ({exc.msg} at position {exc.pos})" if isinstance(exc, json.JSONDecodeError) else f" ({exc})"
        raise InvalidJson("The request body is not valid JSON" + detail + ".") from None


def check_value(body: Any) -> None:
    """Walk the parsed body once (iteratively): depth, unstorable strings and keys; name the first bad
    field. The one place these are checked (schemas do not repeat it), with the one limit MAX_JSON_DEPTH."""
    limit = settings.max_json_depth
    stack: list[tuple[Any, Loc, int]] = [(body, ("body",), 1)]
    while stack:
        value, loc, depth = stack.pop()
        if depth > limit:
            raise RequestInvalid("The JSON body is nested too deeply.",
                                 FieldError(loc, f"At most {limit} levels of nesting."))
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                error = FieldError(loc, _problem_with(value))
                raise RequestInvalid(f"{error.name}: {error.msg}", error)
        elif isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    raise RequestInvalid(f"A field name is invalid: {_problem_with(key)}",
                                         FieldError(loc, f"Field name: {_problem_with(key)}"))
                stack.append((item, (*loc, key), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, (*loc, i), depth + 1) for i, item in enumerate(value))


def check_context_size(body: Any) -> None:
    if not isinstance(body, dict):
        return
    for name in CONTEXT_FIELDS:
        value = body.get(name)
        if isinstance(value, (dict, list)):
            size = len(json.dumps(value, ensure_ascii=False).encode())
            if size > settings.max_context_bytes:
                raise RequestInvalid(f"{name} is too large.", FieldError(
                    ("body", name), f"At most {settings.max_context_bytes} bytes of JSON (got {size})."))


def guard_body() -> None:
    if request.method not in BODY_METHODS:
        return
    raw = request.get_data(cache=True)  # 413 here when over MAX_CONTENT_LENGTH
    if not request.is_json:
        if raw:  # every body the dialects take is JSON: a form or text body would otherwise read as {}
            message = "The request body must be JSON (send 'Content-Type: application/json')."
            raise RequestInvalid(message, FieldError(("header", "Content-Type"), message, "unsupported_media_type"),
                                 status=415, code="unsupported_media_type")
        return
    if not raw:
        return
    body = parse_json_body(raw)
    check_value(body)
    check_context_size(body)


def guard_query() -> None:
    for key, values in request.args.lists():
        for value in (key, *values):
            if UNSTORABLE.search(value):
                raise RequestInvalid(f"{key!r}: {_problem_with(value)}", FieldError(("query", key), _problem_with(value)))


# The longest request target (path and query string, in bytes) the API reads: longer is a 414 in the
# dialect's format. gunicorn's own request-line limit is set above it (api/gunicorn_conf.py).
MAX_TARGET_BYTES = 4096


def guard_target() -> None:
    target = request.environ.get("RAW_URI") or request.full_path
    if len(target.encode("latin-1", "replace")) > MAX_TARGET_BYTES:
        raise RequestInvalid(f"The URL is too long (at most {MAX_TARGET_BYTES} bytes of path and query).",
                             status=414, code="uri_too_long")


def guard_request() -> None:
    guard_target()
    if request.routing_exception is not None:  # no such route: let it answer 404/405 as usual
        return
    require_credentials()  # 401 before anything looks at the body or the query
    guard_query()
    guard_body()


def rate_limit_headers(response: Response) -> Response:
    """The IETF draft RateLimit-* fields next to flask-limiter's X-RateLimit-* ones (copied, so no
    second trip to the limiter's storage; RateLimit-Reset is in seconds, X-RateLimit-Reset a time)."""
    headers = response.headers
    if "X-RateLimit-Limit" in headers:
        headers["RateLimit-Limit"] = headers["X-RateLimit-Limit"]
        headers["RateLimit-Remaining"] = headers.get("X-RateLimit-Remaining", "0")
        try:
            reset = max(0, math.ceil(float(headers["X-RateLimit-Reset"]) - time.time()))
        except (KeyError, ValueError):
            reset = 0
        headers["RateLimit-Reset"] = str(reset)
    return response


def install(app: Flask) -> None:
    app.before_request(guard_request)
    # after_request functions run in reverse order of registration: first in the list runs last,
    # after flask-limiter has added its headers.
    app.after_request_funcs.setdefault(None, []).insert(0, rate_limit_headers)
