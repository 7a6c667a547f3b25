"""End-to-end tests: the scripted model as a real subprocess, driven by the openai SDK."""

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from shared.config import DEFAULT_MODEL_IDS

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL = "(Threadline development model) "

TOOLS = [
    {"type": "function", "function": {
        "name": name, "description": name,
        "parameters": {"type": "object", "properties": {}, "additionalProperties": True}}}
    for name in ("search_docs", "web_search", "read_web_page")
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server():
    port = _free_port()
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripted_model", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            out.seek(0)
            pytest.fail(f"scripted model exited early ({proc.returncode}): {out.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port, out
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("scripted model did not become healthy in time")
        time.sleep(0.05)


def _stop_server(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


@pytest.fixture(scope="module")
def server():
    proc, port, out = _start_server()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_server(proc)
        out.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)


def unique(text: str) -> str:
    """Prefix with a unique tag so per-conversation directive counters never collide."""
    return f"[{uuid.uuid4().hex[:8]}] {text}"


def _reassemble(stream):
    content, calls, finish, usage, role = "", {}, None, None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            role = role or delta.role
            content += delta.content or ""
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = choice.finish_reason or finish
    return role, content, [calls[i] for i in sorted(calls)], finish, usage


def test_healthz_and_models(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    data = httpx.get(f"{server}/v1/models").json()
    assert data["object"] == "list"
    ids = [m["id"] for m in data["data"]]
    assert ids == list(DEFAULT_MODEL_IDS)  # the registry the API validates modelId against
    assert all(m["owned_by"] == "threadline-dev" and m["object"] == "model" for m in data["data"])


def test_sdk_lists_models(client):
    assert "threadline-dev" in [m.id for m in client.models.list()]


def test_plain_answer(client):
    resp = client.chat.completions.create(
        model="threadline-dev", messages=[{"role": "user", "content": "Good morning"}])
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content.startswith(LABEL + 'You said: "Good morning"')
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0


def test_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "How do I invite a teammate in Threadline?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "search_docs"
    assert json.loads(call.function.arguments) == {"query": "invite a teammate in Threadline"}

    content = "Invite teammates from Settings > Members. They get an email."
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"results": [
            {"chunk_id": "c-42", "document_name": "Team guide", "path": "team.md", "content": content}]})},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == (
        LABEL + 'According to the documentation (Team guide): '
        '<cite chunk="c-42">Invite teammates from Settings > Members.</cite>')


@pytest.mark.parametrize("text", [
    "search the web for gevent and read https://www.gevent.org/",  # parallel tool calls
    "Tell me a story about streaming",  # plain content
])
def test_streaming_matches_non_streaming(client, text):
    kwargs = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": text}], tools=TOOLS)
    plain = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    role, content, calls, finish, usage = _reassemble(stream)
    message = plain.choices[0].message
    assert role == "assistant"
    assert finish == plain.choices[0].finish_reason
    assert content == (message.content or "")
    expected_calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                      for c in message.tool_calls or []]
    assert calls == expected_calls
    assert usage is not None and usage.total_tokens == plain.usage.total_tokens
    if message.tool_calls:
        assert [c["name"] for c in calls] == ["web_search", "read_web_page"]
    else:
        assert content.startswith(LABEL)


def test_streaming_without_usage(client):
    stream = client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hi"}], stream=True)
    role, content, calls, finish, usage = _reassemble(stream)
    assert content.startswith(LABEL) and finish == "stop" and usage is None and calls == []


def test_fail_directive_fails_once_then_succeeds(client):
    messages = [{"role": "user", "content": unique("hello [[fail:500x1]]")}]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4", messages=messages)
    assert err.value.status_code == 500
    ok = client.chat.completions.create(model="gpt-4", messages=messages)
    assert ok.choices[0].message.content.startswith(LABEL)


KEY = {"Authorization": "Bearer test-key"}


def test_fail_429_has_retry_after(server):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": unique("x [[fail:429x1]]")}]}
    resp = httpx.post(f"{server}/v1/chat/completions", json=body, headers=KEY)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "0"
    assert resp.json()["error"]["message"]
    assert httpx.post(f"{server}/v1/chat/completions", json=body, headers=KEY).status_code == 200


def test_a_request_without_an_api_key_is_refused_like_openai_does(server):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hello"}]}
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
        resp = httpx.post(f"{server}/v1/chat/completions", json=body, headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "invalid_request_error"


def test_bad_request_body(server, client):
    resp = httpx.post(f"{server}/v1/chat/completions", content=b"{not json",
                      headers={"content-type": "application/json", **KEY})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] is None and error["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4", messages=[])


def test_control_round_trip(server):
    try:
        resp = httpx.post(f"{server}/_control", json={"latency": 0.25, "fail_status": 503})
        assert resp.status_code == 200
        current = httpx.get(f"{server}/_control").json()
        assert current["latency"] == 0.25 and current["fail_status"] == 503
        assert httpx.post(f"{server}/_control", json={"fail_status": 418}).status_code == 400
    finally:
        httpx.post(f"{server}/_control", json={"reset": True})
    assert httpx.get(f"{server}/_control").json() == {
        "latency": 0.0, "fail_next": 0, "fail_status": 500, "hang_next": 0, "token_rate": 0.0,
        "first_token_delay": 0.0}


def test_control_fail_next(server, client):
    try:
        httpx.post(f"{server}/_control", json={"fail_next": 1, "fail_status": 503})
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "a"}])
        assert err.value.status_code == 503
        assert httpx.get(f"{server}/_control").json()["fail_next"] == 0
    finally:
        httpx.post(f"{server}/_control", json={"reset": True})


def test_hang_directive_times_out(client):
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": unique("wait [[hang]]")}])


def test_concurrent_slow_requests(server):
    n = 50
    http = httpx.Client(limits=httpx.Limits(max_connections=n))
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, http_client=http)

    def one(i):
        resp = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": f"request {i} [[latency:0.5]]"}])
        return resp.choices[0].message.content

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(one, range(n)))
    elapsed = time.monotonic() - started
    http.close()
    assert all(f'"request {i}"' in a for i, a in enumerate(answers))
    assert 0.5 <= elapsed < 5, elapsed


def test_sigterm_exits_cleanly():
    proc, port, out = _start_server()
    try:
        # an in-flight hanging request must not block shutdown
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(httpx.post, f"http://127.0.0.1:{port}/v1/chat/completions", timeout=5, headers=KEY,
                                  json={"model": "x", "messages": [{"role": "user", "content": "z [[hang]]"}]})
            time.sleep(0.2)  # let the request reach the server before stopping it
            assert _stop_server(proc) == 0
            with pytest.raises(httpx.HTTPError):
                pending.result()
        out.seek(0)
        assert f"scripted model listening on http://127.0.0.1:{port}/v1" in out.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
