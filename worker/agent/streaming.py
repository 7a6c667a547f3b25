"""A streamed model answer, put back together, and the run's events written while it arrives.

- ``MessageAssembler`` turns the streamed chunks (``chat.completion.chunk`` objects as JSON dicts, see
  worker/llm.py for why not the SDK's typed models) into one assistant message: the text deltas
  joined, the tool-call deltas merged by index (id and name from the first, arguments concatenated),
  the usage from the last chunk.
- ``RunEvents`` is the agent's pen on the run's event log (shared/events.py): ``run.started``, the
  steps, and the text as ``message.delta``s, coalesced so a fast model cannot flood the log (the first
  piece at once, for the first-token latency; then one event once STREAM_COALESCE_SECONDS have passed
  since the last, or once STREAM_COALESCE_CHARS are waiting). Every delta is a Redis round trip here
  and a wake-up, a read and a write for every client streaming the run: 0.15 s instead of 0.05 s
  halved the events of a word-by-word answer and cut ~10-20% of the CPU per streamed answer in the
  API and the worker each (docs/performance.md, "The streamed answer"). It stops writing as soon as
  the run's lease is lost, and after the first failed append (Redis away: the run goes on, clients
  fall back to the stored message). In embedded mode (the ``run_events`` table on SQLite, one writer
  at a time) it batches: events wait and are written together in one transaction once the oldest has
  waited STREAM_TABLE_FLUSH_SECONDS (by the run's own thread at its next event, or by the process's
  ``_Flusher`` while the run waits on a slow tool or a silent model), and what is still waiting when
  the run ends goes into the finish's transaction (``take_pending``; shared/services/runs.finish). A
  run shorter than the interval writes no event of its own.
- ``CiteFilter`` drops the ``<cite chunk="…">…</cite>`` markers from the streamed text, as
  worker/agent/citations.py does from the stored answer, so the deltas add up to the stored content.
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from shared import events
from shared.config import settings
from shared.events import EventType


@dataclass
class AssembledCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model sent it


@dataclass
class Assembled:
    """One model call's answer: its text (None if it sent none) or its tool calls, and the usage."""

    content: str | None
    tool_calls: list[AssembledCall] = field(default_factory=list)
    usage: dict[str, Any] | None = None

    def as_message(self) -> dict[str, Any]:
        """The assistant turn for the next request's history (what the model asked for, verbatim)."""
        message: dict[str, Any] = {"role": "assistant"}
        if self.content is not None:
            message["content"] = self.content
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.tool_calls]
        return message


class MessageAssembler:
    def __init__(self) -> None:
        self._text: list[str] = []
        self._saw_text = False
        self._calls: dict[int, AssembledCall] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return the text it adds (may be empty)."""
        if usage := chunk.get("usage"):
            self.usage = dict(usage)
        text = ""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if (content := delta.get("content")) is not None:
                self._saw_text = True
                text += content
            for call in delta.get("tool_calls") or ():
                slot = self._calls.setdefault(call.get("index", 0), AssembledCall(id="", name="", arguments=""))
                if call.get("id"):
                    slot.id = call["id"]
                function = call.get("function") or {}
                slot.name += function.get("name") or ""
                slot.arguments += function.get("arguments") or ""
        if text:
            self._text.append(text)
        return text

    def result(self) -> Assembled:
        calls = [self._calls[i] for i in sorted(self._calls)]
        content = "".join(self._text) if self._saw_text else None
        return Assembled(content=content if (content or not calls) else None, tool_calls=calls, usage=self.usage)


_CITE_TAG = re.compile(r'<cite\s+chunk="[^"]+">|</cite>')
LONGEST_TAG = 300


class CiteFilter:
    """Removes citation markers from text that arrives in pieces; holds back a ``<`` that may still
    become one."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> str:
        if not self._pending and "<" not in text:
            return text  # nearly every piece: nothing held back, no marker can start in it
        pending, out = self._pending + text, []
        while (start := pending.find("<")) >= 0:
            out.append(pending[:start])
            rest = pending[start:]
            if tag := _CITE_TAG.match(rest):
                pending = rest[tag.end():]
            elif self._may_become_tag(rest):
                self._pending = rest
                return "".join(out)
            else:
                out.append("<")
                pending = rest[1:]
        self._pending = ""
        out.append(pending)
        return "".join(out)

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return rest

    @staticmethod
    def _may_become_tag(rest: str) -> bool:
        if ">" in rest or len(rest) > LONGEST_TAG:
            return False
        return "</cite>".startswith(rest) or "<cite".startswith(rest) or rest.startswith("<cite")


def bounded(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "…"


class _Flusher:
    """One daemon thread per process (embedded mode): writes the events of runs that have waited long
    enough while their own thread is blocked (a slow tool, a model silent before its next token), so a
    streaming client still sees ``step.started`` of a tool that takes a minute."""

    def __init__(self) -> None:
        self._runs: weakref.WeakSet[RunEvents] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, run: "RunEvents") -> None:
        with self._lock:
            self._runs.add(run)
            if self._thread is None or not self._thread.is_alive():  # (a forked worker starts its own)
                self._thread = threading.Thread(target=self._loop, daemon=True, name="run-events-flusher")
                self._thread.start()

    def discard(self, run: "RunEvents") -> None:
        with self._lock:
            self._runs.discard(run)

    def _loop(self) -> None:
        while True:
            time.sleep(max(0.01, settings.stream_table_flush_seconds / 4))
            with self._lock:
                runs = list(self._runs)
            for run in runs:
                try:
                    run.write_if_due()
                except Exception:  # noqa: BLE001 - appends never raise; this is a safety net for the thread
                    pass


_flusher = _Flusher()


class RunEvents:
    """Writes one run attempt's events (see the module docstring), in as few round trips as keep them
    live: events that follow each other with no wait in between go out together (``run.started``
    with the first step's ``step.started``; the text still waiting with the ``step.*`` event that
    follows it), and the log's TTL is refreshed with the attempt's first write, then only once half
    of STREAM_ACTIVE_TTL has passed (the terminal event sets the retention, shared/events.py).
    Whatever is still waiting is written by ``close()`` or handed to the finish by ``take_pending()``.

    In embedded mode (``batch_seconds``) what would be written waits in ``_pending`` and goes out in
    one transaction once the oldest has waited the interval (by the run's own thread, or the process's
    ``_Flusher`` while the run is blocked)."""

    def __init__(self, run_id, attempt: int, still_ours: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic,
                 append: Callable[..., list[int] | None] = events.append_all,
                 batch_seconds: float | None = None):
        """``batch_seconds``: None writes at once (Redis) unless the log is the table with the default
        ``append`` (then STREAM_TABLE_FLUSH_SECONDS, with the flusher); a number batches through ``append``."""
        self.run_id, self.attempt = run_id, attempt
        self.still_ours = still_ours
        self._clock, self._append_to_log = clock, append
        flusher = batch_seconds is None and events.in_table() and append is events.append_all
        if flusher:
            batch_seconds = settings.stream_table_flush_seconds
        self._batch_seconds = batch_seconds
        self._waiting: list[tuple[EventType, dict[str, Any]]] = []  # written with the next event
        self._pending: list[tuple[EventType, dict[str, Any]]] = []  # batched mode: not written yet
        self._pending_since = math.inf
        self._writing = threading.Lock()  # the run's thread and the flusher: one write at a time, in order
        self._buffer: list[str] = []
        self._buffered = 0
        self._last_flush = -math.inf
        self._refresh_ttl_at = -math.inf
        self._filter = CiteFilter()
        self._broken = False
        if flusher:
            _flusher.add(self)

    def _write(self, items: list[tuple[EventType, dict[str, Any]]]) -> None:
        items, self._waiting = self._waiting + items, []
        if not items:
            return
        if self._batch_seconds is not None:
            with self._writing:
                if self._broken or not self.still_ours():  # a worker that lost its lease stops writing
                    self._pending = []
                    return
                if not self._pending:
                    self._pending_since = self._clock()
                self._pending.extend(items)
            self.write_if_due()
            return
        if self._broken or not self.still_ours():
            return
        now = self._clock()
        expire = now >= self._refresh_ttl_at
        if self._append_to_log(self.run_id, items, self.attempt, expire=expire) is None:
            self._broken = True
        elif expire:
            self._refresh_ttl_at = now + settings.stream_active_ttl / 2

    def write_if_due(self) -> None:
        """Batched mode: write the waiting events once the oldest has waited the interval."""
        if self._pending and self._clock() - self._pending_since >= self._batch_seconds:
            self.write_pending()

    def write_pending(self) -> None:
        """Batched mode: write the events waiting in one go, if the lease still holds."""
        with self._writing:  # held across the write: a later batch never overtakes an earlier one
            if not self._pending:
                return
            pending, self._pending, self._pending_since = self._pending, [], math.inf
            if self._broken or not self.still_ours():
                return
            if self._append_to_log(self.run_id, pending, self.attempt) is None:
                self._broken = True

    def take_pending(self) -> list[tuple[EventType, dict[str, Any]]]:
        """The attempt is over. Batched mode: the events still waiting, handed to the finish, which
        inserts them in its own transaction before the terminal event (and only if it stores the
        answer, i.e. the lease still holds). With Redis they are written now and the list is empty.
        Writes nothing more afterwards."""
        if self._batch_seconds is None:
            self.close()
            self._broken = True
            return []
        self._end_filter()
        tail, self._waiting = self._waiting + self._text_event(), []
        _flusher.discard(self)
        with self._writing:
            pending, self._pending, self._pending_since = self._pending + tail, [], math.inf
            self._broken = True  # this attempt's log is the finish's now
        return pending

    def started(self) -> None:
        """``run.started``: clients drop any partial text they have and start over. Written with the
        first step's event (the agent's set-up in between does no I/O), or by ``close()``."""
        self._waiting.append((EventType.RUN_STARTED, {"run_id": str(self.run_id), "attempt": self.attempt}))

    def step_started(self, index: int, kind: str, name: str, arguments: dict[str, Any] | None) -> None:
        self._write([*self._text_event(), (EventType.STEP_STARTED,
                                           {"index": index, "kind": kind, "name": name, "arguments": arguments})])

    def step_completed(self, step) -> None:
        """Also ends the text of the step (a model call's): what is still waiting goes out with it."""
        self._end_filter()
        self._write([*self._text_event(), (EventType.STEP_COMPLETED, {
            "index": step.index, "kind": step.kind, "name": step.name, "arguments": step.arguments,
            "status": step.status, "output": bounded(step.output, settings.stream_step_output_chars),
        })])

    def text(self, piece: str) -> None:
        piece = self._filter.feed(piece)
        if piece:
            self._buffer.append(piece)
            self._buffered += len(piece)
        if not self._buffered:
            return
        now = self._clock()
        if self._buffered >= settings.stream_coalesce_chars or now - self._last_flush >= settings.stream_coalesce_seconds:
            self.flush(now)

    def end_text(self) -> None:
        """The text is complete: write what is still waiting."""
        self._end_filter()
        self.flush()

    def flush(self, now: float | None = None) -> None:
        self._write(self._text_event(now))

    def close(self) -> None:
        """Write whatever is still waiting (the attempt is over, or the agent stopped early)."""
        self._end_filter()
        self.flush()  # with run.started, if no step wrote it
        if self._batch_seconds is not None:
            _flusher.discard(self)
            self.write_pending()

    def _end_filter(self) -> None:
        if tail := self._filter.finish():
            self._buffer.append(tail)
            self._buffered += len(tail)

    def _text_event(self, now: float | None = None) -> list[tuple[EventType, dict[str, Any]]]:
        if not self._buffered:
            return []
        text = "".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._last_flush = self._clock() if now is None else now
        return [(EventType.MESSAGE_DELTA, {"text": text})]


def parse_arguments(arguments: str | None) -> dict[str, Any] | None:
    """A tool call's arguments for a ``step.started`` event (None when they are not a JSON object)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
