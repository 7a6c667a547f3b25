"""The API's operations hooks (docs/operations.md): request ids, HTTP metrics, /metrics, tracing.

All of it hangs off Flask hooks and a Celery publish signal, so no route changes:

- ``before_request`` takes a valid incoming ``X-Request-Id`` or makes one and binds it to the
  request's log context; ``after_request`` echoes it and observes the request in
  ``threadline_http_request_duration_seconds`` (dialect, route *template*, method, status).
- The task publish signal puts the request id and the enqueue time into the task's headers, so the
  worker's log lines for the run carry the id of the POST that started it, and the worker can measure
  time queued.
- ``GET /metrics`` serves every gunicorn worker's series (multiprocess mode). Set ``METRICS_TOKEN`` to
  require ``Authorization: Bearer <METRICS_TOKEN>``; otherwise keep /metrics off the public path at
  the proxy (docs/operations.md).
- ``threadline_clients_waiting`` counts requests parked in ``notify.wait_for_run``.
"""
from __future__ import annotations

import hmac
import time

from celery.signals import before_task_publish
from flask import Blueprint, Flask, Response, g, request

from api.errors import dialect_for
from shared import notify
from shared.config import settings
from shared.observability import context, metrics, tracing

blp = Blueprint("metrics", __name__)
UNMATCHED = "<unmatched>"  # the route label of a request no route matched (a 404): never the raw path


@blp.get("/metrics")
def metrics_endpoint():
    """Prometheus exposition of this API (every gunicorn worker); bearer token when METRICS_TOKEN is set."""
    if settings.metrics_token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.metrics_token}".encode()):
            return Response('{"error": {"code": "unauthorized", "message": "A metrics token is required."}}',
                            status=401, mimetype="application/json", headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _start_request() -> None:
    g.request_started = time.perf_counter()
    g.request_id = context.request_id_from(request.headers.get(context.REQUEST_ID_HEADER))
    g.request_context = context.bind(request_id=g.request_id)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[context.REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    if started is not None:
        dialect = dialect_for(request.path)
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        metrics.HTTP_REQUESTS.labels(dialect.name if dialect else "none", route, request.method,
                                     str(response.status_code)).observe(time.perf_counter() - started)
    return response


def _end_request(_exc) -> None:
    tokens = g.pop("request_context", None)
    if tokens:
        context.unbind(tokens)


def _stamp_task(headers: dict | None = None, **_kwargs) -> None:
    """Publishing a task from a request: the request id and the enqueue time go in its headers."""
    if headers is None:
        return
    headers[context.TIME_HEADER] = time.time()
    if (request_id := context.get("request_id")) is not None:
        headers[context.TASK_HEADER] = request_id


def _count_waiting() -> None:
    """Wrap ``notify.wait_for_run`` (looked up through the module by the message service) so the
    clients-waiting gauge counts the requests inside it; notify itself stays free of metrics."""
    wait = notify.wait_for_run
    if getattr(wait, "counted", False):
        return

    def wait_for_run(*args, **kwargs):
        with metrics.tracking(metrics.CLIENTS_WAITING):
            return wait(*args, **kwargs)

    wait_for_run.counted = True  # type: ignore[attr-defined]
    notify.wait_for_run = wait_for_run


def install(app: Flask) -> None:
    from api.extensions import limiter

    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)  # first: every later hook logs with it
    app.after_request(_finish_request)  # registered early, so it runs last and sees the final status
    app.teardown_request(_end_request)
    limiter.exempt(blp)
    app.register_blueprint(blp)
    before_task_publish.connect(_stamp_task, weak=False)
    _count_waiting()
    tracing.setup("threadline-api", flask_app=app)
