"""The identity of the work in hand — request id, run id, thread id, tenant — as contextvars.

The API binds the request id per HTTP request (api/observability.py); the publisher puts it in the
Celery task's headers; the worker binds it again with the run's ids for the task's duration
(worker/observability.py). Log records get these fields from ``logs.ContextFilter``.

Ids only, never content: this is what logs, metrics exemplars and traces may carry.
"""
from __future__ import annotations

import contextvars
import functools
import re
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

FIELDS = ("request_id", "run_id", "thread_id", "tenant_id")
_vars = {name: contextvars.ContextVar(f"threadline_{name}", default=None) for name in FIELDS}

# An incoming X-Request-Id is kept only if it is short and plain, so it can be logged, echoed and put in
# a header without escaping (a proxy's uuid, a trace id, "req-123" …); anything else gets a new one.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
REQUEST_ID_HEADER = "X-Request-Id"
TASK_HEADER = "threadline_request_id"  # the Celery message header that carries it to the worker
TIME_HEADER = "threadline_enqueued_at"  # the Celery message header with the enqueue time (Unix seconds)


def request_id_from(incoming: str | None) -> str:
    """The incoming id when it is valid, else a new one (32 hex digits)."""
    if incoming and VALID_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def get(name: str) -> str | None:
    return _vars[name].get()


def current() -> dict[str, str]:
    """The fields that are set, as strings (for a log line)."""
    return {name: str(value) for name in FIELDS if (value := _vars[name].get()) is not None}


def bind(**values: Any) -> list[contextvars.Token]:
    """Set fields (None leaves a field as it is); returns tokens for ``unbind``."""
    return [_vars[name].set(str(value)) for name, value in values.items() if value is not None]


def unbind(tokens: list[contextvars.Token]) -> None:
    for token in reversed(tokens):
        token.var.reset(token)


def clear() -> None:
    """Forget every field (a worker thread between tasks)."""
    for var in _vars.values():
        var.set(None)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    tokens = bind(**values)
    try:
        yield
    finally:
        unbind(tokens)


def carry(fn: Callable) -> Callable:
    """``fn`` to run in another thread with the caller's context (ids and the OpenTelemetry span).

    A ThreadPoolExecutor starts its threads with an empty context; the agent runs its tools through
    one, and without this their log lines would lose the run id and their spans the run's trace. Each
    call runs in a fresh copy, because one Context cannot be entered by two threads at once."""
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def in_context(*args, **kwargs):
        return captured.copy().run(fn, *args, **kwargs)

    return in_context
