"""The worker's and beat's operations hooks (docs/operations.md), all on Celery signals plus two
calls from worker/tasks.py (``run_claimed`` and ``run_ended``):

- ``worker_init``: serve /metrics on WORKER_METRICS_PORT (the next free port if busy) and start
  tracing. ``beat_init``: serve /metrics on BEAT_METRICS_PORT and count the queue every
  QUEUE_METRICS_INTERVAL seconds (depth, runs in progress, age of the oldest queued run) — one query
  per interval for the whole deployment, instead of one per scrape per process.
- ``task_prerun`` binds the task's request id (from the header the API put in) and run id to the log
  context; ``run_claimed`` adds the thread and tenant (and the request id stored on the run, when a
  re-enqueued task has none in its header) and measures time queued; ``run_ended`` turns
  the run's steps into model and tool metrics; ``task_postrun`` counts the outcome and the duration,
  lease losses and the sweeper's work, then clears the context for the pool thread's next task.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import before_task_publish, beat_init, task_postrun, task_prerun, worker_init, worker_shutdown
from sqlalchemy import func, select

from shared.config import settings
from shared.models import Run, Status, utcnow
from shared.observability import context, logs, metrics, tracing
from shared.queue import EXECUTE_RUN, SWEEP
from shared.tools import ToolName

log = logging.getLogger(__name__)

TOOL_NAMES = frozenset(str(name) for name in ToolName)
ENDED = {str(status) for status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)}
LEASE_LOST = "lease-lost"  # what execute_run returns when another worker took the run

_task = threading.local()  # per pool thread (greenlet under gevent): the running task's timings


def configure_logging() -> None:
    logs.configure()


# -- publishing (the sweeper and the next run of a thread): the enqueue time, never a request id ------

@before_task_publish.connect(weak=False)
def _stamp_task(headers: dict | None = None, **_kwargs) -> None:
    """Only the enqueue time: a run re-enqueued here is not the request of the task that sends it."""
    if headers is not None:
        headers[context.TIME_HEADER] = time.time()
        headers.pop(context.TASK_HEADER, None)


# -- processes --------------------------------------------------------------------------------------

@worker_init.connect(weak=False)
def _worker_started(**_kwargs) -> None:
    metrics.serve(settings.worker_metrics_port, settings.metrics_addr)
    tracing.setup("threadline-worker")


@worker_shutdown.connect(weak=False)
def _worker_stopping(**_kwargs) -> None:
    tracing.shutdown()


@beat_init.connect(weak=False)
def _beat_started(**_kwargs) -> None:
    metrics.serve(settings.beat_metrics_port, settings.metrics_addr)
    tracing.setup("threadline-beat")
    threading.Thread(target=_observe_queue_forever, name="queue-metrics", daemon=True).start()


_QUEUED = select(func.count(), func.min(Run.queued_at)).where(Run.status == Status.QUEUED)
_IN_PROGRESS = select(func.count()).select_from(Run).where(Run.status == Status.IN_PROGRESS)


def observe_queue() -> None:
    """Count queued and running runs and the age of the oldest queued one (ix_runs_queued, ix_runs_leased)."""
    from shared.db import transaction

    with transaction() as session:
        queued, oldest = session.execute(_QUEUED).one()
        in_progress = session.scalar(_IN_PROGRESS) or 0
    metrics.QUEUE_DEPTH.set(queued)
    metrics.RUNS_IN_PROGRESS.set(in_progress)
    if oldest is not None and oldest.tzinfo is None:  # SQLite hands back naive UTC
        from datetime import timezone

        oldest = oldest.replace(tzinfo=timezone.utc)
    metrics.OLDEST_QUEUED.set((utcnow() - oldest).total_seconds() if oldest is not None else 0)
    metrics.QUEUE_OBSERVED.set_to_current_time()


def _observe_queue_forever() -> None:
    while True:
        try:
            observe_queue()
        except Exception as exc:  # noqa: BLE001 - a database blip: the gauges keep their last value
            log.debug("queue metrics: %s", type(exc).__name__)
        time.sleep(settings.queue_metrics_interval)


# -- tasks ------------------------------------------------------------------------------------------

@task_prerun.connect(weak=False)
def _task_started(task=None, args=None, **_kwargs) -> None:
    context.clear()
    _task.started = time.time()
    _task.claimed = None
    if task is None or task.name != EXECUTE_RUN:
        return
    request = task.request
    _task.enqueued_at = _number(request.get(context.TIME_HEADER))
    context.bind(request_id=request.get(context.TASK_HEADER), run_id=(args or [None])[0])


def run_claimed(job) -> None:
    """Called by execute_run once it holds the run: thread and tenant join the log context; time queued."""
    context.bind(thread_id=job.thread_id, tenant_id=job.tenant_id)
    if context.get("request_id") is None:  # re-enqueued by the sweeper or after the previous answer
        context.bind(request_id=_stored_request_id(job.run_id))
    _task.claimed = time.time()
    enqueued = getattr(_task, "enqueued_at", None)
    queued = max(0.0, _task.claimed - enqueued) if enqueued is not None else None
    if queued is not None:
        metrics.RUN_QUEUED.observe(queued)
    log.info("run claimed: attempt %d, model %s, queued %s", job.attempt, job.model_id or "default",
             f"{queued:.3f}s" if queued is not None else "unknown")
    if job.attempt > 1:
        metrics.LEASE_TAKEOVERS.inc()


def _stored_request_id(run_id) -> str | None:
    from shared.db import transaction

    try:
        with transaction() as session:
            return session.scalar(select(Run.request_id).where(Run.id == run_id))
    except Exception:  # noqa: BLE001 - only a log field: never fail the run for it
        return None


def run_ended(job, outcome) -> None:
    """Called by execute_run with the run's outcome: each model call and tool call becomes metrics."""
    try:
        from worker import llm

        model = llm.model_entry(job.model_id).id
        for step in outcome.steps:
            seconds = max(0.0, (step.finished_at - step.started_at).total_seconds())
            if step.kind == "model_call":
                metrics.MODEL_CALLS.labels(model, str(step.status)).observe(seconds)
                for kind in ("prompt", "completion"):
                    if tokens := (step.usage or {}).get(f"{kind}_tokens"):
                        metrics.MODEL_TOKENS.labels(model, kind).inc(tokens)
            else:
                tool = step.name if step.name in TOOL_NAMES else "unknown"  # the model may invent names
                metrics.TOOL_CALLS.labels(tool, str(step.status)).observe(seconds)
    except Exception:  # noqa: BLE001 - metrics never fail a run
        log.warning("could not record step metrics", exc_info=True)


@task_postrun.connect(weak=False)
def _task_finished(task=None, retval: Any = None, **_kwargs) -> None:
    try:
        if task is not None and task.name == EXECUTE_RUN:
            if isinstance(retval, str) and retval in ENDED:
                metrics.RUNS.labels(retval).inc()
                claimed = getattr(_task, "claimed", None)
                if claimed is not None:
                    metrics.RUN_DURATION.labels(retval).observe(metrics.since(claimed))
                    log.info("run %s in %.3fs", retval, metrics.since(claimed))
            elif retval == LEASE_LOST:
                metrics.LEASE_LOST.inc()
        elif task is not None and task.name == SWEEP and isinstance(retval, dict):
            metrics.SWEEPER_REQUEUED.inc(retval.get("requeued", 0))
            if failed := retval.get("failed", 0):
                metrics.SWEEPER_FAILED.inc(failed)
                metrics.RUNS.labels(str(Status.FAILED)).inc(failed)
    finally:
        context.clear()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
