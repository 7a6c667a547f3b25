"""What a posting request asks for besides its body: how long to wait for the answer (``?wait=SECONDS``
or ``Prefer: wait=SECONDS``, RFC 7240), its ``Idempotency-Key`` and its ``If-Thread-Idle`` precondition.
The routes read these and pass them to the message service as arguments."""
from __future__ import annotations

import re

from flask import request

from api.errors import FieldError, RequestInvalid
from shared.config import settings

TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*\"?([^\s;,\"]+)", re.IGNORECASE)


def requested_wait() -> float:
    """Seconds to wait, clamped to [0, WAIT_MAX]; the query parameter wins over the header."""
    raw = request.args.get("wait")
    source = ("query", "wait")
    if raw is None and (match := PREFER_WAIT.search(request.headers.get("Prefer", ""))):
        raw, source = match.group(1), ("header", "Prefer")
    if raw is None:
        return settings.wait_default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise RequestInvalid("Invalid wait.", FieldError(source, "Must be a number of seconds, 0 or more."))
    return min(seconds, settings.wait_max)


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise RequestInvalid("Invalid Idempotency-Key.", FieldError(("header", "Idempotency-Key"), "1 to 255 characters."))
    return key


def thread_idle_required() -> bool:
    """``If-Thread-Idle: true`` asks for 409 instead of queueing behind the thread's active run."""
    raw = request.headers.get("If-Thread-Idle")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value not in TRUE | FALSE:
        raise RequestInvalid("Invalid If-Thread-Idle header.", FieldError(("header", "If-Thread-Idle"), "Use true or false."))
    return value in TRUE
