"""Every Prometheus series Threadline exports, defined once (docs/operations.md lists them).

Which process moves which series: the API the HTTP and waiting ones, workers the run, model, tool,
lease and sweeper ones, beat the queue gauges. Labels are bounded sets — dialect, route template,
method, status, outcome, registry model id, tool name — never an id.

The API runs under gunicorn with several worker processes, so it uses prometheus_client's
multiprocess mode: gunicorn's config (api/gunicorn_conf.py) sets ``PROMETHEUS_MULTIPROC_DIR`` before
any worker imports this module, and ``exposition()`` merges the processes' files. Workers (thread or
gevent pool, one process) and beat use the ordinary registry and serve it on a port of their own
(``serve``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess, start_http_server

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client itself at import
PORT_TRIES = 16  # a busy metrics port: try the next ones (several workers on one host)

FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLOW = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
TOKENS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)

# -- API -------------------------------------------------------------------------------------------
HTTP_REQUESTS = Histogram(
    "threadline_http_request_duration_seconds", "HTTP requests by dialect, route template, method and status.",
    ["dialect", "route", "method", "status"], buckets=FAST)
CLIENTS_WAITING = Gauge(
    "threadline_clients_waiting", "Requests waiting for a run to finish (?wait / Prefer: wait).",
    multiprocess_mode="livesum")
STREAMS_OPEN = Gauge(
    "threadline_streams_open", "Server-sent event streams open.", multiprocess_mode="livesum")

# -- worker ----------------------------------------------------------------------------------------
RUNS = Counter("threadline_runs_total", "Runs ended, by outcome (completed, failed, cancelled).", ["outcome"])
RUN_QUEUED = Histogram("threadline_run_queued_seconds", "Time from enqueue to claim.", buckets=SLOW)
RUN_DURATION = Histogram("threadline_run_duration_seconds", "Time from claim to the stored answer, by outcome.",
                         ["outcome"], buckets=SLOW)
MODEL_CALLS = Histogram("threadline_model_call_duration_seconds", "Model calls by model id and outcome.",
                        ["model", "outcome"], buckets=SLOW)
MODEL_TOKENS = Counter("threadline_model_tokens_total", "Tokens by model id and kind (prompt, completion).",
                       ["model", "kind"])
TOOL_CALLS = Histogram("threadline_tool_call_duration_seconds", "Tool calls by tool and outcome.",
                       ["tool", "outcome"], buckets=FAST)
LEASE_TAKEOVERS = Counter("threadline_lease_takeovers_total",
                          "Runs claimed on a later attempt: an earlier worker lost or gave up its lease.")
LEASE_LOST = Counter("threadline_lease_lost_total", "Runs this worker stopped because another worker took them.")
SWEEPER_REQUEUED = Counter("threadline_sweeper_requeued_total", "Runs the sweeper enqueued again.")
SWEEPER_FAILED = Counter("threadline_sweeper_failed_total", "Runs the sweeper ended as failed (out of attempts).")

# -- beat (one per deployment, so its gauges are the deployment's) ----------------------------------
QUEUE_DEPTH = Gauge("threadline_queue_depth", "Runs queued (database), as beat last counted them.",
                    multiprocess_mode="max")
RUNS_IN_PROGRESS = Gauge("threadline_runs_in_progress", "Runs in progress (database), as beat last counted them.",
                         multiprocess_mode="max")
OLDEST_QUEUED = Gauge("threadline_oldest_queued_run_age_seconds", "Age of the oldest queued run (0: none).",
                      multiprocess_mode="max")
QUEUE_OBSERVED = Gauge("threadline_queue_observed_timestamp_seconds", "When beat last counted the queue.",
                       multiprocess_mode="max")


@contextmanager
def tracking(gauge: Gauge) -> Iterator[None]:
    """``gauge`` counts the code inside this block while it runs (clients waiting, streams open)."""
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition() -> tuple[bytes, str]:
    """This process's series, or every gunicorn worker's merged in multiprocess mode."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


_served: int | None = None
_serve_lock = threading.Lock()


def serve(port: int, addr: str) -> int | None:
    """Serve /metrics on ``port`` (or the next free one of PORT_TRIES); the port, or None when off or
    every port is busy — a worker without its metrics port still works, so this never raises."""
    global _served
    with _serve_lock:
        if _served is not None or port <= 0:
            return _served
        for candidate in range(port, port + PORT_TRIES):
            try:
                start_http_server(candidate, addr=addr)
            except OSError:
                continue
            _served = candidate
            if candidate != port:
                log.warning("metrics port %d is busy; serving /metrics on %s:%d", port, addr, candidate)
            else:
                log.info("serving /metrics on %s:%d", addr, candidate)
            return candidate
        log.warning("no free metrics port in %d-%d; this process exports no metrics", port, port + PORT_TRIES - 1)
        return None


def since(started: float) -> float:
    return max(0.0, time.time() - started)
