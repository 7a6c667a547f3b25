"""Server-sent events for every dialect: an answer as it is produced, resumable after any disconnect.

Two ways in, the same stream out:
- the post-for-an-answer route of each dialect with ``Accept: text/event-stream``: the stream starts
  with a ``message.created`` event (the body the JSON answer would have had: the user message and
  the pending response), then follows the run from its first event;
- ``GET …/messages/{id}/stream`` on the response message, with ``Last-Event-ID`` (header, or the
  ``last_event_id`` query parameter for clients that cannot set headers): every event after that id,
  then live.

Each event has the run's event id (``id:``), its type (``event:``) and JSON ``data:``. The stream ends
after the terminal event (``message.completed``, ``run.failed``, ``run.cancelled``) whose data the API
renders from the stored message in the dialect's own shape: the stored message is the truth, and if
the log has expired or lost the end, the terminal event is built from it alone (without an ``id:``).
Events an earlier attempt wrote after a newer attempt started are dropped (a worker that lost its
lease may write late). Idle streams get a comment line every STREAM_HEARTBEAT seconds. A disconnect
only ends this generator: the run lives on, and the client resumes with the last id it saw.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from typing import Any, Callable, Iterator

from flask import Response, request, stream_with_context
from marshmallow import EXCLUDE, Schema, fields, validate

from api.errors import FieldError, RequestInvalid
from shared import events
from shared.config import settings
from shared.errors import NotFound
from shared.events import TERMINAL, EventType
from shared.models import Status
from shared.observability import metrics
from shared.services import streams
from shared.services.streams import StreamTarget

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
RETRY_MS = 2000  # the ``retry:`` a browser's EventSource waits before reconnecting
STATUS_CHECK = 5.0  # seconds between looks at the run's row while the log is quiet
LAST_EVENT_ID = re.compile(r"^\d{1,18}$")
# What the stream says when the stored message has this status and the log has no terminal event.
STATUS_EVENT = {Status.FAILED: EventType.RUN_FAILED, Status.CANCELLED: EventType.RUN_CANCELLED}

Render = Callable[[uuid.UUID], dict[str, Any]]  # response message id → the dialect's message resource

DESCRIPTION = (
    "Server-sent events (text/event-stream), one per line group: `id:` (the run's event number; send it "
    "back as `Last-Event-ID` to resume), `event:` and `data:` (JSON). Events: `run.queued` {run_id, "
    "message_id, request_message_id}; `run.started` {run_id, attempt} (drop any partial text: a new "
    "attempt starts over); `step.started` {index, kind, name, arguments}; `step.completed` {index, kind, "
    "name, arguments, status, output}; `message.delta` {text}; then one of `message.completed` (the "
    "message resource of this dialect), `run.failed` {run_id, message_id, error, message} or "
    "`run.cancelled` {run_id, message_id, message}, after which the stream ends. Lines starting with `:` "
    "are heartbeats. See docs/api.md, Streaming."
)


_ID_RULE = dict(validate=validate.Regexp(r"^\d{1,18}$", error="Must be a whole number, 0 or more (the id: of "
                                                                 "the last event seen)."))


class StreamQuery(Schema):
    """Documents (and validates) the query parameter of GET …/stream; read by ``last_event_id``."""

    class Meta:
        unknown = EXCLUDE

    last_event_id = fields.String(load_default=None, **_ID_RULE, metadata={
        "description": "Resume after this event id (for clients that cannot send the Last-Event-ID header)."})


class StreamHeaders(Schema):
    class Meta:
        unknown = EXCLUDE  # every other header is none of our business

    last_event_id = fields.String(data_key="Last-Event-ID", load_default=None, **_ID_RULE, metadata={
        "description": "Resume after this event id: every later event exactly once, then live."})


STREAMS = "x-threadline-streams"  # marks a post-for-an-answer operation: blp.doc(**{STREAMS: True})


def document(spec) -> None:
    """Add the ``text/event-stream`` content to the OpenAPI operations that stream: the stream routes'
    200 and the marked posts' 201, next to their JSON (flask-smorest documents one content type per
    status, and none without a schema). Call once, after every blueprint is registered."""
    schema = {
        "type": "object", "description": DESCRIPTION, "required": ["event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": r"^\d+$",
                   "description": "The run's event number (absent on message.created and on an end built from "
                                  "the stored message)."},
            "event": {"type": "string", "enum": ["message.created", *map(str, EventType), "error"]},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"type": "object"},
                     "description": "The event's JSON payload (see the table in docs/api.md, Streaming)."},
            "retry": {"type": "integer"},
        },
    }
    for path, item in spec._paths.items():  # apispec keeps the registered operations here
        for method, operation in item.items():
            if method == "get" and path.endswith("/stream"):
                status = "200"
            elif method == "post" and operation.get(STREAMS):
                status = "201"
            else:
                continue
            response = operation.setdefault("responses", {}).setdefault(status, {"description": "OK"})
            response.setdefault("content", {})[EVENT_STREAM] = {"schema": schema}


def wanted() -> bool:
    """The client named ``text/event-stream`` in ``Accept`` (not through ``*/*``) and does not prefer JSON."""
    named = {mimetype.lower(): quality for mimetype, quality in request.accept_mimetypes}
    quality = named.get(EVENT_STREAM, 0)
    return quality > 0 and quality >= named.get("application/json", 0)


def last_event_id() -> int:
    """``Last-Event-ID`` header, else ``last_event_id`` query parameter; 0 (from the start) if neither."""
    raw, name = request.headers.get("Last-Event-ID"), "Last-Event-ID"
    if raw is None:
        raw, name = request.args.get("last_event_id"), "last_event_id"
    if raw is None or raw.strip() == "":
        return 0
    if not LAST_EVENT_ID.match(raw.strip()):
        raise RequestInvalid(f"Invalid {name}: it must be the id of an event this stream sent (a whole number).",
                             FieldError(("header" if name == "Last-Event-ID" else "query", name),
                                        "Must be a whole number, 0 or more (the id: of the last event seen)."))
    return int(raw.strip())


def frame(type_: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {type_}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def respond(target: StreamTarget, render: Render, *, after: int = 0, preface: dict[str, Any] | None = None,
            status: int = 200) -> Response:
    """The streaming response (the caller has checked permission: ``streams.target`` or the post)."""
    response = Response(stream_with_context(_open(_stream(target, render, after, preface))), status=status,
                        content_type=f"{EVENT_STREAM}; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx and friends: pass each event on at once
    return response


def _open(events_: Iterator[str]) -> Iterator[str]:
    """Counted in threadline_streams_open while the client is attached (ends on disconnect too)."""
    with metrics.tracking(metrics.STREAMS_OPEN):
        yield from events_


def _render_or_gone(render: Render, message_id: uuid.UUID) -> dict[str, Any] | None:
    """The stored message, or None when a ``Thread-Busy: rollback`` post deleted it (the stream still
    ends, with ``run.cancelled`` and ``message: null``)."""
    try:
        return render(message_id)
    except NotFound:
        return None


def _terminal(type_: str, data: dict[str, Any], render: Render, message_id: uuid.UUID) -> dict[str, Any]:
    message = _render_or_gone(render, message_id)
    if message is None:
        return {**data, "message": None}
    if type_ == EventType.MESSAGE_COMPLETED:
        return message
    return {**data, "message": message}


def _from_stored(target: StreamTarget, render: Render) -> str:
    """The end of a stream whose log has none: built from the stored message alone."""
    message = _render_or_gone(render, target.message_id)
    if message is None:
        return frame(EventType.RUN_CANCELLED, {"run_id": str(target.run_id) if target.run_id else None,
                                               "message_id": str(target.message_id), "message": None})
    type_ = STATUS_EVENT.get(str(message.get("status", "")).lower(), EventType.MESSAGE_COMPLETED)
    if type_ == EventType.MESSAGE_COMPLETED:
        return frame(type_, message)
    data: dict[str, Any] = {"run_id": str(target.run_id) if target.run_id else None,
                            "message_id": str(target.message_id), "message": message}
    if type_ == EventType.RUN_FAILED:
        data["error"] = "The run failed."
    return frame(type_, data)


def _stream(target: StreamTarget, render: Render, after: int, preface: dict[str, Any] | None) -> Iterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    if preface is not None:
        yield frame("message.created", preface)
    if target.run_id is None:  # not an AI answer: nothing will ever be streamed, only the message
        yield _from_stored(target, render)
        return
    try:
        yield from _follow(target, render, after, just_posted=preface is not None)
    except GeneratorExit:
        raise
    except Exception:  # noqa: BLE001 - headers are sent: say so in the stream, the client may resume
        log.exception("stream of run %s failed", target.run_id)
        yield frame("error", {"message": "The stream was interrupted; reconnect with Last-Event-ID to resume."})


def _follow(target: StreamTarget, render: Render, after: int, just_posted: bool = False) -> Iterator[str]:
    """The run's events as frames. The events of one read go out as one write (one chunk, one
    send). ``just_posted``: this request has just queued the run, which is as good as a look at its
    row (it has not ended), so the first look waits STATUS_CHECK like the later ones.

    While the run goes on, its events come from the process's reader (``event_log().follow``: one
    XREAD for every stream of the process, shared/events.py ``StreamReader``); once its row says it
    ended, the client reads the rest of the log itself, from the last event it sent, to the end."""
    event_log = events.event_log()
    floor, last = target.attempts, after
    started = last_write = time.monotonic()
    last_check = started if just_posted else -math.inf
    wait = max(0.05, min(settings.stream_heartbeat, STATUS_CHECK))
    ended = False  # once the row says the run ended, the log only needs reading to its end
    following = None  # the subscription at the reader, from the first read of a run not ended
    try:
        while time.monotonic() - started < settings.stream_max_seconds:
            if not ended and time.monotonic() - last_check >= STATUS_CHECK:
                last_check = time.monotonic()
                ended = streams.run_ended(target.run_id)  # read before the log: nothing can slip between
            try:
                if ended:  # what the reader holds for us is in the log too: read from the last event sent
                    batch = event_log.read(target.run_id, last, timeout=0)
                else:
                    if following is None:
                        following = event_log.follow(target.run_id, last)
                    batch = following.take(wait)
            except Exception:  # noqa: BLE001 - Redis away: the row still says when the run ends
                log.warning("could not read the event log of run %s", target.run_id, exc_info=True)
                batch = []
                if not ended:
                    time.sleep(1.0)
                    last_check = -math.inf
            frames = []
            for event in batch:
                last = event.id
                if 0 < event.attempt < floor:
                    continue  # written late by an attempt that lost its lease
                floor = max(floor, event.attempt)
                if event.type in TERMINAL:
                    frames.append(frame(event.type, _terminal(event.type, event.data, render, target.message_id),
                                        event.id))
                    yield "".join(frames)
                    return
                frames.append(frame(event.type, event.data, event.id))
            if frames:
                yield frames[0] if len(frames) == 1 else "".join(frames)
            if batch:
                last_write = time.monotonic()
                continue
            if ended:  # finished, and the log holds no end (expired, or lost): the stored message is the end
                yield _from_stored(target, render)
                return
            if time.monotonic() - last_write >= settings.stream_heartbeat:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
    finally:
        if following is not None:
            following.close()
