"""Gunicorn settings for the API. The gevent worker holds thousands of waiting requests cheaply;
psycogreen makes psycopg2 yield to other greenlets instead of blocking the whole worker.

Request limits are set here on purpose, not left to gunicorn's defaults. The application answers a
request target (path + query) longer than api.hardening.MAX_TARGET_BYTES (4096) with a JSON 414 in
the dialect's own format; gunicorn's request-line limit sits above it (8190, the most gunicorn allows)
so that every URL the application could refuse reaches the application. Only what gunicorn itself
refuses (a request line over 8190 bytes, more than 100 header fields, a header over 8190 bytes, a
malformed request) is answered by gunicorn — in JSON too (``json_errors``), in the generic
``{"error": {"code", "message"}}`` format because no dialect has looked at the request yet.

Metrics: the workers share Prometheus series through prometheus_client's multiprocess mode. The
directory (``PROMETHEUS_MULTIPROC_DIR``, else a fresh temporary one) is set here, in the master,
before any worker imports prometheus_client; it is emptied when the master starts (no counters from a
previous run) and ``child_exit`` marks each exited worker dead, so its live gauges (clients waiting)
stop counting while its counters stay in the totals.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from http import HTTPStatus
from pathlib import Path

from shared.config import settings

limit_request_line = 8190  # > MAX_TARGET_BYTES + method + version: long URLs get the app's JSON 414
limit_request_fields = 100
limit_request_field_size = 8190


def json_errors() -> None:
    """Make gunicorn's own error responses (414, 431, 400 for a malformed request) JSON, not HTML.

    gunicorn writes them with ``gunicorn.util.write_error`` before the application sees the request;
    replacing that one function is the only hook it offers."""
    from gunicorn import util

    def write_error(sock, status_int, reason, mesg):
        codes = {414: "uri_too_long", 431: "request_header_fields_too_large"}
        body = json.dumps({"error": {"code": codes.get(status_int, HTTPStatus(status_int).name.lower()
                                                       if status_int in HTTPStatus._value2member_map_ else "error"),
                                     "message": f"{reason}: {mesg}"}})
        head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body.encode())}\r\n\r\n")
        util.write_nonblock(sock, head.encode("latin1") + body.encode())

    util.write_error = write_error


def _metrics_dir() -> Path:
    """The multiprocess directory, exported to the workers through the environment (prometheus_client
    reads it there at import); created empty."""
    configured = settings.metrics_multiproc_dir
    folder = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="threadline-metrics-"))
    if configured and folder.exists():
        for stale in folder.glob("*.db"):
            stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


METRICS_DIR = _metrics_dir()

# gunicorn's own lines (start, workers booting and exiting) in the same format as the application's:
# gunicorn merges this into its default logging config, whose handlers all use the "generic" formatter.
if settings.log_format.strip().lower() == "json":
    logconfig_dict = {"formatters": {"generic": {"()": "shared.observability.logs.JsonFormatter"}}}


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(METRICS_DIR))


def on_exit(server) -> None:
    if not settings.metrics_multiproc_dir:  # our temporary directory
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


def post_fork(server, worker) -> None:
    json_errors()
    if worker.__class__.__name__.startswith("Gevent"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    from shared import db

    db.dispose()


def when_ready(server) -> None:
    server.log.info("threadline api ready")


graceful_timeout = 10
timeout = 120  # above WAIT_MAX, so a waiting request is never killed as a hung worker
keepalive = 5
worker_connections = 2000
