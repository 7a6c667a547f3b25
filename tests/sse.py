"""A small server-sent-events reader for tests: parses the wire format as a browser's EventSource does
(``id:``, ``event:``, ``data:`` lines, a blank line ends an event, ``:`` lines are comments) and notes
when each event arrived."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx


@dataclass
class SseEvent:
    type: str
    data: Any
    id: int | None = None
    at: float = field(default=0.0, compare=False)  # time.monotonic() when it arrived


def events(response: httpx.Response, comments: list[str] | None = None) -> Iterator[SseEvent]:
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data or fields:
                raw = "\n".join(data)
                yield SseEvent(type=fields.get("event", "message"), data=json.loads(raw) if raw else None,
                               id=int(fields["id"]) if "id" in fields else None, at=time.monotonic())
            fields, data = {}, []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name in ("id", "event", "retry"):
                fields[name] = value
            if name == "retry" and not data:
                fields.pop("retry")  # a bare retry: line is no event


def collect(client: httpx.Client, method: str, url: str, *, limit: int | None = None,
            comments: list[str] | None = None, **kwargs) -> tuple[httpx.Response, list[SseEvent]]:
    """Open a stream, read ``limit`` events (or until the server ends it), then disconnect."""
    headers = {"Accept": "text/event-stream", **kwargs.pop("headers", {})}
    seen: list[SseEvent] = []
    with client.stream(method, url, headers=headers, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for event in events(response, comments):
                seen.append(event)
                if limit is not None and len(seen) >= limit:
                    break
        else:
            response.read()
    return response, seen


def text_of(seen: list[SseEvent]) -> str:
    """The answer text a client shows: deltas since the last run.started."""
    text = ""
    for event in seen:
        if event.type == "run.started":
            text = ""
        elif event.type == "message.delta":
            text += event.data["text"]
    return text
