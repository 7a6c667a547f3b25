"""WSGI app speaking the OpenAI chat-completions wire format, plus a gevent runner.

Plain WSGI (no framework) keeps per-request cost tiny so a single gevent
process can hold thousands of slow/hanging requests during load and fault tests.
Sleeps use gevent.sleep, which is cooperative under gevent and still a plain
blocking sleep when the app is hosted by a threaded server.
"""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict

import gevent
from gevent.pywsgi import WSGIServer

from shared.config import DEFAULT_MODEL_IDS as MODEL_IDS  # the one list: the API accepts exactly what this serves

from . import rules

HANG_SECONDS = 3600.0
ALLOWED_FAIL_STATUSES = (500, 429, 503)
MAX_TRACKED_CONVERSATIONS = 100_000
_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_ERROR_TYPES = {429: "rate_limit_error", 500: "server_error", 503: "server_error"}
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class BadRequest(Exception):
    """Invalid request body; reported as an OpenAI invalid_request_error."""


class ControlState:
    """Runtime fault-injection settings, shared by all requests (lock-protected)."""

    def __init__(self, latency: float = 0.0, token_rate: float = 0.0, first_token_delay: float = 0.0):
        self._lock = threading.Lock()
        self._default_latency = float(latency)
        self._default_token_rate = float(token_rate)
        self._default_first_token_delay = float(first_token_delay)
        self._conversations: OrderedDict[str, int] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.latency = self._default_latency
            self.token_rate = self._default_token_rate
            self.first_token_delay = self._default_first_token_delay
            self.fail_next = 0
            self.fail_status = 500
            self.hang_next = 0
            self._conversations.clear()

    def snapshot(self) -> dict:
        with self._lock:
            return {"latency": self.latency, "fail_next": self.fail_next,
                    "fail_status": self.fail_status, "hang_next": self.hang_next,
                    "token_rate": self.token_rate, "first_token_delay": self.first_token_delay}

    def update(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("control body must be a JSON object")
        if body.get("reset"):
            self.reset()
        latency = body.get("latency")
        if latency is not None and (not _is_number(latency) or latency < 0):
            raise BadRequest("latency must be a non-negative number")
        pacing = {}
        for key in ("token_rate", "first_token_delay"):
            value = body.get(key)
            if value is not None and (not _is_number(value) or value < 0):
                raise BadRequest(f"{key} must be a non-negative number")
            pacing[key] = value
        counts = {}
        for key in ("fail_next", "hang_next"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise BadRequest(f"{key} must be a non-negative integer")
            counts[key] = value
        status = body.get("fail_status")
        if status is not None and status not in ALLOWED_FAIL_STATUSES:
            raise BadRequest("fail_status must be one of 500, 429, 503")
        with self._lock:
            if latency is not None:
                self.latency = float(latency)
            for key, value in pacing.items():
                if value is not None:
                    setattr(self, key, float(value))
            if counts["fail_next"] is not None:
                self.fail_next = counts["fail_next"]
            if counts["hang_next"] is not None:
                self.hang_next = counts["hang_next"]
            if status is not None:
                self.fail_status = status
        return self.snapshot()

    def take_hang(self) -> bool:
        with self._lock:
            if self.hang_next > 0:
                self.hang_next -= 1
                return True
            return False

    def take_failure(self) -> int | None:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status
            return None

    def conversation_should_fail(self, key: str, count: int) -> bool:
        """Count this completion of the conversation; fail while within the first `count`."""
        with self._lock:
            seen = self._conversations.get(key, 0)
            self._conversations[key] = seen + 1
            self._conversations.move_to_end(key)
            while len(self._conversations) > MAX_TRACKED_CONVERSATIONS:
                self._conversations.popitem(last=False)
            return seen < count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------
# Response helpers
# --------------------------------------------------------------------------


def _json_response(start_response, status: int, payload, headers=()):
    body = json.dumps(payload).encode("utf-8")
    start_response(f"{status} {_REASONS.get(status, 'Error')}", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


def _error(start_response, status: int, message: str, err_type: str, headers=()):
    payload = {"error": {"message": message, "type": err_type, "param": None, "code": None}}
    return _json_response(start_response, status, payload, headers)


def _injected_error(start_response, status: int):
    headers = [("retry-after", "0")] if status == 429 else []
    message = f"Scripted failure injected by the development model (HTTP {status})."
    return _error(start_response, status, message, _ERROR_TYPES.get(status, "server_error"), headers)


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _usage(messages: list[dict], reply: rules.Reply) -> dict:
    prompt_chars = sum(len(rules.message_text(m)) for m in messages)
    for m in messages:
        for call in m.get("tool_calls") or []:
            prompt_chars += len(json.dumps(call, default=str))
    if reply.tool_calls:
        completion_chars = sum(len(c.name) + len(json.dumps(c.arguments)) for c in reply.tool_calls)
    else:
        completion_chars = len(reply.content or "")
    prompt, completion = _tokens(prompt_chars), _tokens(completion_chars)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _split(text: str, pieces: int = 4) -> list[str]:
    """Contiguous slices of text (a few stream deltas) that join back exactly."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / pieces))
    return [text[i:i + size] for i in range(0, len(text), size)]


def completion_object(completion_id, created, model, reply, usage) -> dict:
    message = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [c.to_openai() for c in reply.tool_calls]
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": reply.finish_reason}],
        "usage": usage,
    }


_WORD = re.compile(r"\s*\S+\s*$|\s*\S+")


def word_tokens(text: str) -> list[str]:
    """Word-sized slices of text (each with its leading space, trailing space kept on the last) that
    join back exactly: what a paced stream sends one by one."""
    return _WORD.findall(text) if text.strip() else ([text] if text else [])


def stream_chunks(completion_id, created, model, reply, usage, include_usage: bool, by_word: bool = False):
    """chat.completion.chunk dicts in the order the OpenAI API emits them; ``by_word`` sends the answer
    one word-sized token per chunk (for paced streaming), else in four slices."""
    def chunk(delta, finish_reason=None):
        obj = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
               "model": model, "system_fingerprint": None,
               "choices": [{"index": 0, "delta": delta, "logprobs": None,
                            "finish_reason": finish_reason}]}
        if include_usage:
            obj["usage"] = None
        return obj

    yield chunk({"role": "assistant", "content": "" if not reply.tool_calls else None})
    for index, call in enumerate(reply.tool_calls):
        yield chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                     "function": {"name": call.name, "arguments": ""}}]})
        for piece in _split(json.dumps(call.arguments), 2):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    if not reply.tool_calls:
        for piece in (word_tokens if by_word else _split)(reply.content or ""):
            yield chunk({"content": piece})
    yield chunk({}, reply.finish_reason)
    if include_usage:
        yield {"id": completion_id, "object": "chat.completion.chunk", "created": created,
               "model": model, "system_fingerprint": None, "choices": [], "usage": usage}


def _carries_output(obj: dict) -> bool:
    delta = obj["choices"][0]["delta"] if obj.get("choices") else {}
    return bool(delta.get("content") or delta.get("tool_calls"))


def _sse(chunks, token_rate: float = 0.0, first_token_delay: float = 0.0):
    """The chunks as server-sent events. The first chunk with output waits ``first_token_delay``
    seconds; each later one 1/``token_rate`` seconds (a model producing that many tokens a second)."""
    first = True
    for obj in chunks:
        if _carries_output(obj):
            pause = first_token_delay if first else (1.0 / token_rate if token_rate > 0 else 0.0)
            first = False
            if pause > 0:
                gevent.sleep(pause)
        yield b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n"
    yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------


def _read_json(environ):
    stream = environ.get("wsgi.input")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if stream is None:
        raw = b""
    elif length > 0:
        raw = stream.read(length)
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        raw = stream.read()
    else:
        raw = b""
    if not raw.strip():
        raise BadRequest("We could not parse the JSON body of your request: the body is empty.")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from None


def validate_chat_body(body) -> None:
    """Reject bodies the real API would reject, with OpenAI-like messages."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of message objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise BadRequest(f"Invalid message at messages[{i}]: expected an object with a valid 'role'.")
        if m["role"] == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise BadRequest(f"messages[{i}]: tool messages must have a 'tool_call_id'.")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array.")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be a boolean.")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.")


def _chat_completions(state: ControlState, environ, start_response):
    scheme, _, key = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():  # as OpenAI answers a request without a key
        return _error(start_response, 401, "You didn't provide an API key.", "invalid_request_error")
    body = _read_json(environ)
    validate_chat_body(body)
    messages = body["messages"]
    directives = rules.conversation_directives(messages)

    control = state.snapshot()
    delay = control["latency"] + directives.latency
    if delay > 0:
        gevent.sleep(delay)
    if state.take_hang() or directives.hang:
        gevent.sleep(HANG_SECONDS)
    status = state.take_failure()
    if status is not None:
        return _injected_error(start_response, status)
    if directives.fail_status is not None and state.conversation_should_fail(
            rules.conversation_key(messages), directives.fail_count):
        return _injected_error(start_response, directives.fail_status)

    reply = rules.reply(messages, rules.offered_tool_names(body.get("tools"), body.get("tool_choice")))
    completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
    created, model = int(time.time()), body["model"]
    usage = _usage(messages, reply)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"),
                                  ("Cache-Control", "no-cache")])
        rate = control["token_rate"]
        return _sse(stream_chunks(completion_id, created, model, reply, usage, include_usage, by_word=rate > 0),
                    rate, control["first_token_delay"])
    return _json_response(start_response, 200, completion_object(completion_id, created, model, reply, usage))


def create_app(latency: float = 0.0, token_rate: float = 0.0, first_token_delay: float = 0.0):
    """Build the WSGI app; `app.state` is its ControlState (handy for in-process tests)."""
    state = ControlState(latency, token_rate, first_token_delay)
    models = {"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": "threadline-dev"} for m in MODEL_IDS]}

    def app(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        if path.startswith("/v1/"):
            path = path[3:]
        routes = {
            "/healthz": {"GET": lambda: _json_response(start_response, 200, {"status": "ok"})},
            "/models": {"GET": lambda: _json_response(start_response, 200, models)},
            "/chat/completions": {"POST": lambda: _chat_completions(state, environ, start_response)},
            "/_control": {
                "GET": lambda: _json_response(start_response, 200, state.snapshot()),
                "POST": lambda: _json_response(start_response, 200, state.update(_read_json(environ))),
            },
        }
        if path not in routes:
            return _error(start_response, 404, f"Unknown path {path}", "invalid_request_error")
        handler = routes[path].get(method)
        if handler is None:
            return _error(start_response, 405, f"Method {method} not allowed", "invalid_request_error")
        try:
            return handler()
        except BadRequest as exc:
            return _error(start_response, 400, str(exc), "invalid_request_error")
        except Exception as exc:  # a bug here must still look like an API error
            print(f"scripted model error: {exc!r}", file=sys.stderr, flush=True)
            return _error(start_response, 500, f"Internal error: {exc}", "server_error")

    app.state = state
    return app


class NoDelayServer(WSGIServer):
    """pywsgi sends a response's headers and body in separate writes: with Nagle's algorithm on, the
    keep-alive client's delayed ACK then holds every response back by ~40 ms."""

    def handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def serve(host: str = "127.0.0.1", port: int = 8090, latency: float = 0.0, token_rate: float = 0.0,
          first_token_delay: float = 0.0) -> None:
    """Run the app on gevent's pywsgi server until SIGTERM/SIGINT."""
    import signal

    server = NoDelayServer((host, port), create_app(latency, token_rate, first_token_delay), backlog=4096,
                           log=None)
    server.start()

    def stop(signum):
        print(f"scripted model stopping (signal {signum})", file=sys.stderr, flush=True)
        gevent.spawn(server.stop, timeout=2)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    print(f"scripted model listening on http://{host}:{server.server_port}/v1", flush=True)
    server.serve_forever()
