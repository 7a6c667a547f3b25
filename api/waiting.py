"""What a posting request asks for besides its body: how long to wait for the answer (``?wait=SECONDS``
or ``Prefer: wait=SECONDS``, RFC 7240), its ``Idempotency-Key`` and its thread-busy policy
(``Thread-Busy: enqueue | reject | interrupt | rollback``; ``If-Thread-Idle: true`` is an alias of
reject). The routes read these and pass them to the message service as arguments."""
from __future__ import annotations

import re

from flask import request

from api.errors import FieldError, RequestInvalid
from shared.config import settings
from shared.services.runs import BusyPolicy

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


POLICIES = " | ".join(p.value for p in BusyPolicy)


def busy_policy() -> BusyPolicy:
    """The post's thread-busy policy: ``Thread-Busy``, else ``If-Thread-Idle: true`` (reject), else enqueue.

    Both headers at once must agree (``If-Thread-Idle: true`` with ``Thread-Busy: reject``, or
    ``If-Thread-Idle: false`` with anything but reject); anything else is a located 422 (400 in the
    chats dialect), never a silent pick of one of them."""
    raw_idle, raw_busy = request.headers.get("If-Thread-Idle"), request.headers.get("Thread-Busy")
    idle = None
    if raw_idle is not None:
        value = raw_idle.strip().lower()
        if value not in TRUE | FALSE:
            raise RequestInvalid("Invalid If-Thread-Idle header.",
                                 FieldError(("header", "If-Thread-Idle"), "Use true or false."))
        idle = value in TRUE
    if raw_busy is None:
        return BusyPolicy.REJECT if idle else BusyPolicy.ENQUEUE
    try:
        policy = BusyPolicy(raw_busy.strip().lower())
    except ValueError:
        raise RequestInvalid("Invalid Thread-Busy header.",
                             FieldError(("header", "Thread-Busy"), f"Use one of {POLICIES}.")) from None
    if idle is not None and idle != (policy == BusyPolicy.REJECT):
        raise RequestInvalid("Conflicting Thread-Busy and If-Thread-Idle headers.",
                             FieldError(("header", "Thread-Busy"),
                                        f"If-Thread-Idle: {raw_idle.strip()} contradicts Thread-Busy: {policy}; "
                                        "send only Thread-Busy."))
    return policy
