"""Celery tasks, kept thin: claim the run, let the agent work while a lease keeper runs, store, notify.

The run's cancel watch (shared/notify.py) is registered before the claim, so a cancel published
while the run starts is not missed; the agent stops at the next chunk or step once it trips."""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import socket
import threading
import uuid

from celery import Task
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import events, notify, storable
from shared.config import settings
from shared.queue import EXECUTE_RUN, SWEEP, celery_app, dead_letter, enqueue_run
from shared.services import runs
from shared.models import Status
from shared.services.runs import Outcome
from worker import observability, webhook_tasks
from worker.agent import loop
from worker.agent.streaming import RunEvents

log = logging.getLogger(__name__)
app = celery_app()

CRASHED_TEXT = "Sorry, something went wrong while answering. Please try again."


class LeaseKeeper:
    """Renews the run's lease in the background; ``still_ours()`` turns False once it is lost."""

    def __init__(self, job: runs.RunJob):
        self.job = job
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{job.run_id}")

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def still_ours(self) -> bool:
        return not self._lost.is_set()

    def _renew(self) -> None:
        while not self._stop.wait(settings.lease_seconds / 3):
            try:
                if not runs.renew_lease(self.job.run_id, self.job.owner):
                    self._lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database blip: try again next tick, the lease has slack
                log.warning("could not renew lease of run %s", self.job.run_id, exc_info=True)


class BadMessage(Exception):
    """The task's message can never succeed (e.g. its run id is not a UUID): dead-letter it, never retry."""


class GuardedTask(Task):
    """A task whose message is checked before its body runs: arguments that do not fit the signature,
    or a ``BadMessage`` raised by the body, send the message to the dead letters (logged with its task id
    and counted) and end the task quietly. Retrying such a message could never help, and a traceback
    per bad message would bury the one line that says which message it was."""

    _run_signature: inspect.Signature | None = None  # computed once per task: ~0.5% of the bench worker's CPU

    def __call__(self, *args, **kwargs):
        signature = self._run_signature
        if signature is None:
            signature = self._run_signature = inspect.signature(self.run)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            return self._reject(f"arguments do not fit {self.name}: {exc}", args, kwargs)
        try:
            # self.run, not super().__call__: the worker's tracer has pushed the real request (id,
            # delivery info, retries), and Task.__call__ would push a bare one over it, breaking retry().
            return self.run(*args, **kwargs)
        except BadMessage as exc:
            return self._reject(str(exc), args, kwargs)

    def _reject(self, reason: str, args, kwargs) -> str:
        request = self.request
        raw = json.dumps({"task": self.name, "id": request.id, "args": args, "kwargs": kwargs}, default=repr)
        queue = (request.delivery_info or {}).get("routing_key") or settings.run_queue
        dead_letter(raw, reason, f"id={request.id!r} task={self.name!r}", queue=queue)
        return "dead-lettered"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


# A database blip (connection lost, pool exhausted) retries the task with backoff: claiming is idempotent
# and the final write is lease-conditional, so a retry can never answer twice.
@app.task(name=EXECUTE_RUN, base=GuardedTask, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          autoretry_for=(OperationalError, PoolTimeout), retry_backoff=1, retry_backoff_max=30, max_retries=8)
def execute_run(run_id: str) -> str:
    try:
        run_uuid = uuid.UUID(run_id) if isinstance(run_id, str) else None
    except ValueError:
        run_uuid = None
    if run_uuid is None:
        raise BadMessage(f"run id is not a UUID: {str(run_id)[:80]!r}")
    with notify.watch_cancel(run_id) as cancel:
        job = runs.claim(run_uuid, _owner())
        if job is None:
            return "skipped"
        observability.run_claimed(job)
        with LeaseKeeper(job) as lease:
            pen = RunEvents(job.run_id, job.attempt, lease.still_ours)
            try:
                outcome = loop.run(job, lease.still_ours, cancel.is_set, pen)
            except loop.LeaseLost:
                log.warning("run %s: lease lost, another worker has it", run_id)
                return "lease-lost"
            except Exception as exc:  # noqa: BLE001 - a bug must end the run, not leave it hanging
                log.exception("run %s crashed", run_id)
                outcome = Outcome(content=CRASHED_TEXT, is_error=True, error=f"{type(exc).__name__}: {exc}"[:1000])
            pending = pen.take_pending()  # embedded mode: what is not written yet goes in with the answer
    outcome = storable.outcome(outcome)  # NUL in text, NaN in tool arguments: see shared/storable.py
    observability.run_ended(job, outcome)
    finished, outcome = _store(job, outcome, pending)
    if finished is None:
        log.warning("run %s: lease lost (or rolled back) before the answer was stored", run_id)
        return "lease-lost"
    # (embedded mode: the finish's own transaction wrote the last events, after the answer)
    published = not finished.logged and _append_end(run_id, job, finished, outcome, pending)
    if not published:
        notify.publish_run_finished(run_id)
    if finished.next_run is not None:
        enqueue_run(finished.next_run)
    for delivery_id in finished.deliveries:  # recorded with the run's end (shared/services/webhooks.py)
        webhook_tasks.send(delivery_id)
    return finished.status


def _append_end(run_id: str, job: runs.RunJob, finished: runs.Finished, outcome: Outcome, pending: list) -> bool:
    """After the commit, the run's last events: what the worker had not written yet (only in embedded
    mode, when the finish could not take them), then the terminal event, whose client gets the stored
    answer, with the run-finished wake-up in the same round trip. True when the wake-up went with it
    (else the caller publishes it on its own)."""
    if pending and events.append_all(job.run_id, pending, job.attempt) is None:
        return False  # logged; streams end from the stored message
    wake_up = notify.run_finished_message(run_id)
    if finished.status == Status.CANCELLED:
        return events.run_cancelled(job.run_id, job.attempt, job.response_message_id, publish=wake_up)
    return events.run_ended(job.run_id, job.attempt, job.response_message_id, failed=outcome.is_error,
                            error=outcome.content if outcome.is_error else None, publish=wake_up)


def _store(job: runs.RunJob, outcome: Outcome,
           pending: list | tuple = ()) -> tuple[runs.Finished | None, Outcome]:
    """Store the answer. If the database refuses it (a value shared/storable.py does not cover), store
    an error answer instead, keeping which steps ran (names and status, not their values): raising here
    would leave the run to the sweeper, which would run it again, tools included, until every attempt
    was used. A database that is down still raises, and the task retries (autoretry_for). Returns
    what finish returned and the outcome stored."""
    try:
        return runs.finish(job, outcome, pending), outcome
    except (OperationalError, PoolTimeout):
        raise
    except Exception as exc:  # noqa: BLE001 - any refusal of the values, whatever the driver raises
        log.exception("run %s: the answer could not be stored; storing an error answer", job.run_id)
        steps = [dataclasses.replace(s, arguments=None, output=None, usage=None) for s in outcome.steps]
        fallback = Outcome(content=CRASHED_TEXT, is_error=True, steps=steps, usage=None,
                           error=f"the answer could not be stored: {type(exc).__name__}")
        return runs.finish(job, fallback, pending), fallback


@app.task(name=SWEEP, base=GuardedTask, ignore_result=True)
def sweep_stale_runs() -> dict[str, int]:
    try:
        requeue, failed = runs.sweep()
    except (OperationalError, PoolTimeout) as exc:  # the database is down: the next tick sweeps again
        log.warning("sweeper: database unavailable (%s); sweeping again next tick", type(exc).__name__)
        return {"requeued": 0, "failed": 0}
    for run_id in requeue:
        enqueue_run(run_id)
    for run_id in failed:
        notify.publish_run_finished(str(run_id))  # streams of these end from the stored message (api/streaming.py)
    events.prune()  # embedded mode: the event logs of runs that ended STREAM_RETENTION ago
    if requeue or failed:
        log.info("sweeper: re-enqueued %d run(s), failed %d", len(requeue), len(failed))
    return {"requeued": len(requeue), "failed": len(failed)}
