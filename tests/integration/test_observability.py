"""Operations through the real stack (docs/operations.md): Prometheus series on the API, a worker and
beat move when a message is answered; the request id of the POST reaches every log line of its run;
logs carry no message content and no token; the spans of one message form one connected trace.

The stack here is one of its own (not the session's), because it needs known metrics ports, JSON
logs, a metrics token and an OTLP endpoint (a tiny OTLP/HTTP receiver in this process, decoding the
protobuf requests with the OTel proto package); it is started once for the module.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from devtools.stack import Stack, free_port, wait_until

METRICS_TOKEN = "scrape-" + uuid.uuid4().hex
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: every span the stack's processes export, decoded."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict] = []
        lock, spans = threading.Lock(), self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for resource in request.resource_spans:
                        service = next(a.value.string_value for a in resource.resource.attributes
                                       if a.key == "service.name")
                        for scope in resource.scope_spans:
                            spans.extend({"service": service, "name": span.name, "trace": span.trace_id.hex(),
                                          "id": span.span_id.hex(), "parent": span.parent_span_id.hex()}
                                         for span in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[dict]:
        return [span for span in list(self.spans) if span["trace"] == trace_id]


@pytest.fixture(scope="module")
def otlp():
    receiver = OtlpReceiver()
    yield receiver
    receiver.httpd.shutdown()


@pytest.fixture(scope="module")
def ops_stack(stack, otlp):  # after the session stack: its environment is the base of this one's
    ops = Stack(WORKER_METRICS_PORT=str(free_port()), BEAT_METRICS_PORT=str(free_port()), METRICS_ADDR="127.0.0.1",
                QUEUE_METRICS_INTERVAL="0.5", LOG_FORMAT="json", METRICS_TOKEN=METRICS_TOKEN,
                OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="100")
    ops.start()
    try:
        ops.token = ops.demo_token()
        yield ops
    finally:
        ops.stop()


def scrape(url: str, token: str | None = None) -> dict[tuple[str, frozenset], float]:
    """A /metrics page as {(name, labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=5)
    response.raise_for_status()
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not (match := SAMPLE.match(line)):
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples, name: str, **labels: str) -> float:
    """The sum of the series ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def api_metrics(ops):
    return scrape(f"{ops.api_url}/metrics", METRICS_TOKEN)


def worker_metrics(ops):
    return scrape(f"http://127.0.0.1:{ops.env['WORKER_METRICS_PORT']}/metrics")


def beat_metrics(ops):
    return scrape(f"http://127.0.0.1:{ops.env['BEAT_METRICS_PORT']}/metrics")


def post(ops, client: httpx.Client, content: str, wait: float = 20, **headers: str) -> httpx.Response:
    thread = client.post("/api/v1/ai/threads", json={"title": "ops"}).json()["id"]
    return client.post(f"/api/v1/ai/threads/{thread}/messages?wait={wait:g}", json={"content": content,
                       "context": {"form": {"name": ""}}}, headers=headers)


@pytest.fixture
def client(ops_stack):
    with httpx.Client(base_url=ops_stack.api_url, headers={"Authorization": f"Bearer {ops_stack.token}"},
                      timeout=40) as client:
        yield client


def test_metrics_move_when_a_message_is_answered(ops_stack, client):
    route = "/api/v1/ai/threads/<int:thread_id>/messages"
    api_before, worker_before = api_metrics(ops_stack), worker_metrics(ops_stack)

    response = post(ops_stack, client, "set the field name to Ada")
    assert response.status_code == 201 and response.json()["responseMessage"]["status"] == "completed"

    api_after = api_metrics(ops_stack)
    count = "threadline_http_request_duration_seconds_count"
    assert value(api_after, count, dialect="ai-threads", route=route, method="POST", status="201") == \
        value(api_before, count, dialect="ai-threads", route=route, method="POST", status="201") + 1
    assert value(api_after, count, route="/api/v1/ai/threads", status="201") >= 1
    assert ("threadline_clients_waiting", frozenset()) in api_after  # a live gauge, merged over gunicorn workers

    def moved(name: str, **labels: str) -> float:
        return value(worker_metrics(ops_stack), name, **labels) - value(worker_before, name, **labels)

    # The worker counts after it stored the answer, which the waiting POST may see a moment earlier.
    wait_until(lambda: moved("threadline_runs_total", outcome="completed") == 1, what="run counted")
    assert moved("threadline_run_queued_seconds_count") == 1
    assert moved("threadline_run_duration_seconds_count", outcome="completed") == 1
    assert moved("threadline_model_call_duration_seconds_count", model="threadline-dev", outcome="completed") == 2
    assert moved("threadline_model_tokens_total", model="threadline-dev", kind="prompt") > 0
    assert moved("threadline_model_tokens_total", model="threadline-dev", kind="completion") > 0
    assert moved("threadline_tool_call_duration_seconds_count", tool="update_context", outcome="completed") == 1

    samples = {**api_after, **worker_metrics(ops_stack)}
    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|[0-9a-f]{32}")
    assert not [labels for (_, labels) in samples for (_, v) in labels if ids.search(v)], "an id in a label"


def test_beat_counts_the_queue(ops_stack, client):
    """With the worker stopped a posted run waits: beat's gauges show it, then show it gone."""
    ops_stack.processes["worker"].stop()
    try:
        response = post(ops_stack, client, "hello while nobody works", wait=0)
        assert response.json()["responseMessage"]["status"] == "queued"
        wait_until(lambda: value(beat_metrics(ops_stack), "threadline_queue_depth") >= 1, what="queue depth")
        wait_until(lambda: value(beat_metrics(ops_stack), "threadline_oldest_queued_run_age_seconds") >= 0.5,
                   what="oldest queued age")
    finally:
        ops_stack.start_worker()
    wait_until(lambda: value(beat_metrics(ops_stack), "threadline_queue_depth") == 0, timeout=30, what="queue drained")
    assert value(beat_metrics(ops_stack), "threadline_oldest_queued_run_age_seconds") == 0


def test_metrics_want_the_token(ops_stack):
    assert httpx.get(f"{ops_stack.api_url}/metrics").status_code == 401
    assert httpx.get(f"{ops_stack.api_url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(f"{ops_stack.api_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")


def test_request_ids_are_echoed_validated_or_made(ops_stack, client):
    assert client.get("/healthz", headers={"X-Request-Id": "edge-42.a:b"}).headers["X-Request-Id"] == "edge-42.a:b"
    for bad in ("has space", "x" * 200, "<script>"):
        made = client.get("/healthz", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/api/v1/ai/threads/999999").headers["X-Request-Id"])
    assert client.get("/no/such/route").headers["X-Request-Id"]
    # A path no route matched is labelled <unmatched>, never with the path itself.
    samples = api_metrics(ops_stack)
    assert value(samples, "threadline_http_request_duration_seconds_count", route="<unmatched>", status="404") >= 1
    assert not [ls for (_, ls) in samples if ("route", "/no/such/route") in ls]


def json_lines(process) -> list[dict]:
    lines = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_a_runs_log_lines_carry_the_request_id_and_no_content(ops_stack, client):
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    secret = f"secret-content-{uuid.uuid4().hex[:8]}"
    response = post(ops_stack, client, f"remember that my locker code is {secret}", **{"X-Request-Id": request_id})
    assert response.status_code == 201 and response.headers["X-Request-Id"] == request_id

    worker = ops_stack.processes["worker"]
    ours = wait_until(lambda: [l for l in json_lines(worker) if l.get("request_id") == request_id],
                      what="worker log lines with the request id")
    run_ids = {line["run_id"] for line in ours}
    assert len(run_ids) == 1
    run_lines = [line for line in json_lines(worker) if line.get("run_id") in run_ids]
    assert run_lines and all(line.get("request_id") == request_id for line in run_lines)
    assert all({"time", "level", "logger", "message", "thread_id", "tenant_id"} <= line.keys()
               for line in run_lines if line["logger"].startswith(("worker", "shared")))
    # gunicorn's own lines are JSON too; the sweeper's routine lines (every second here) are DEBUG, not shown.
    assert any(line["message"] == "threadline api ready" for line in json_lines(ops_stack.processes["api"]))
    for name in ("worker", "beat"):
        assert not [line for line in json_lines(ops_stack.processes[name]) if "sweep_stale_runs" in line["message"]]
    for process in ops_stack.processes.values():
        text = process.log_path.read_text(errors="replace")
        assert secret not in text, f"message content in the {process.name} log"
        assert ops_stack.token not in text, f"a token in the {process.name} log"


def test_one_message_is_one_trace(ops_stack, client, otlp):
    """POST → publish → task → model calls and the tool's queries: one trace, every span's parent in it."""
    response = post(ops_stack, client, "how many threads do I have?")
    assert response.status_code == 201 and response.json()["responseMessage"]["status"] == "completed"
    route = "/api/v1/ai/threads/<int:thread_id>/messages"
    root = wait_until(lambda: next(s for s in otlp.spans if s["service"] == "threadline-api"
                                   and s["name"] == f"POST {route}"), what="the POST's span")

    def complete():
        spans = otlp.trace(root["trace"])
        names = {(s["service"], s["name"]) for s in spans}
        ids = {s["id"] for s in spans}
        ready = (("threadline-worker", "run/threadline.execute_run") in names
                 and sum(1 for s in spans if s["service"] == "threadline-worker" and s["name"] == "POST") >= 2
                 and all(s["parent"] in ids for s in spans if s is not root and s["id"] != root["id"]))
        return spans if ready else None

    spans = wait_until(complete, what="the whole trace")
    assert [s for s in spans if not s["parent"]] == [root]  # one root: the HTTP request
    services = {s["service"] for s in spans}
    assert services == {"threadline-api", "threadline-worker"}
    assert ("threadline-api", "apply_async/threadline.execute_run") in {(s["service"], s["name"]) for s in spans}
    # The claim and the finish (one WITH statement each on PostgreSQL) and query_data, which runs in the
    # agent's tool thread: their SQL spans are children inside the same trace.
    worker_sql = [s for s in spans if s["service"] == "threadline-worker" and s["name"].split()[0] in
                  {"SELECT", "UPDATE", "INSERT", "WITH", "BEGIN", "connect"}]
    assert len(worker_sql) >= 3


def test_a_takeover_after_a_crash_is_counted(ops_stack, client):
    """A worker killed mid-run: the sweeper re-enqueues the run and the next worker takes it over on
    attempt 2 — both counted by the new worker, which then completes the run."""
    request_id = f"crash-{uuid.uuid4().hex[:8]}"
    response = post(ops_stack, client, "[[latency: 4]] slow hello", wait=0, **{"X-Request-Id": request_id})
    assert response.json()["responseMessage"]["status"] in ("queued", "in_progress")
    worker = ops_stack.processes["worker"]
    wait_until(lambda: any(line.get("request_id") == request_id and line["message"].startswith("run claimed")
                           for line in json_lines(worker)), what="the run claimed")
    worker.kill()
    ops_stack.start_worker()

    def counted(name: str, **labels: str) -> float:
        return value(worker_metrics(ops_stack), name, **labels)

    wait_until(lambda: counted("threadline_runs_total", outcome="completed") == 1, timeout=60, what="run completed")
    assert counted("threadline_sweeper_requeued_total") >= 1
    assert counted("threadline_lease_takeovers_total") == 1
    # The sweeper's re-enqueue carries no request id; the run's stored one is on the new worker's lines.
    retaken = ops_stack.processes["worker"]
    assert any(line.get("request_id") == request_id and line["message"].startswith("run claimed: attempt 2")
               for line in json_lines(retaken))


def test_open_streams_are_counted_while_attached(ops_stack, client):
    """threadline_streams_open counts an SSE client while it is attached and drops when the stream ends
    (a slow first token keeps the stream open long enough to scrape)."""
    httpx.post(f"{ops_stack.model_url}/_control", json={"first_token_delay": 3})
    try:
        thread = client.post("/api/v1/ai/threads", json={"title": "ops"}).json()["id"]
        with client.stream("POST", f"/api/v1/ai/threads/{thread}/messages", json={"content": "Stream this"},
                           headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 201
            lines = response.iter_lines()
            assert any(line.startswith("event: message.created") for line in lines)
            wait_until(lambda: value(api_metrics(ops_stack), "threadline_streams_open") >= 1, what="stream counted")
            assert any(line.startswith("event: message.completed") for line in lines)
        wait_until(lambda: value(api_metrics(ops_stack), "threadline_streams_open") == 0, what="stream uncounted")
    finally:
        httpx.post(f"{ops_stack.model_url}/_control", json={"first_token_delay": 0})
