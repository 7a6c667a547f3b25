"""The worker's Celery app: the shared configuration plus task bodies and the sweeper's schedule.

Start a worker:  celery -A worker.celery_app worker -Q runs --pool threads --concurrency 32
                 (pool and concurrency per deployment, with the reasons: devtools/processes.py)
Start beat:      celery -A worker.celery_app beat
"""
from __future__ import annotations

import json
import logging

from celery.worker.consumer import Consumer
from kombu.utils.encoding import safe_repr

from shared.config import settings
from shared.observability import logs
from shared.queue import SWEEP, celery_app, dead_letter

log = logging.getLogger(__name__)


def _green_psycopg() -> None:
    """Under the gevent pool (-P gevent), let psycopg2 yield to other greenlets while it waits."""
    try:
        from gevent import monkey
    except ImportError:
        return
    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


_green_psycopg()

logs.configure()  # LOG_FORMAT text|json; run and request ids on every line (worker/observability.py)


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message it cannot turn into a task is moved aside, not dropped or fatal.

    Celery already survives the common cases (it logs and acks undecodable bodies, rejects unknown tasks
    and invalid task messages) but drops the message without a trace beyond a log line. Here each is
    also stored in the broker's dead letters (shared/broker.py) and counted. Any other exception from
    handling one message (a malformed header Celery does not expect) would propagate out of
    ``drain_events`` and stop the worker ("Unrecoverable error"); the task handler is wrapped so that
    one message fails alone. Broker connection errors still propagate: those are Celery's to recover.
    Envelope-level garbage (not JSON at all) never gets here: the transport's channel moves it aside.
    """

    def _dead_letter(self, message, reason: str) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        identity = f"id={safe_repr(headers.get('id'))} task={safe_repr(headers.get('task'))}"
        raw = getattr(message, "_raw", None)
        try:
            raw = json.dumps(raw) if raw is not None else safe_repr(message.body)
        except (TypeError, ValueError):
            raw = safe_repr(raw)
        routing_key = (message.delivery_info or {}).get("routing_key") or settings.run_queue
        dead_letter(raw, reason, identity, queue=routing_key)

    def on_decode_error(self, message, exc):
        self._dead_letter(message, f"undecodable body: {type(exc).__name__}: {str(exc)[:200]}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body, message):
        self._dead_letter(message, "not a task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body, message, exc):
        self._dead_letter(message, f"unknown task: {str(exc)[:200]}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body, message, exc):
        self._dead_letter(message, f"invalid task message: {type(exc).__name__}: {str(exc)[:200]}")
        super().on_invalid_task(body, message, exc)

    def create_task_handler(self, *args, **kwargs):
        handle = super().create_task_handler(*args, **kwargs)
        # kombu's Redis transport lists KeyError among its connection errors; a KeyError while turning
        # one message into a task is that message's fault (a missing header), not the connection's.
        fatal = tuple(error for error in (*self.connection_errors, *self.channel_errors)
                      if not issubclass(error, LookupError))

        def on_task_received(message):
            try:
                return handle(message)
            except fatal:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
                self._dead_letter(message, f"unhandled: {type(exc).__name__}: {str(exc)[:200]}")
                if not message.acknowledged:
                    message.ack_log_error(log, self.connection_errors)

        return on_task_received


app = celery_app()
app.conf.worker_consumer = f"{__name__}:DeadLetteringConsumer"
app.conf.beat_schedule = {"sweep-stale-runs": {"task": SWEEP, "schedule": settings.sweep_interval}}
app.conf.include = ["worker.tasks", "worker.webhook_tasks"]

import worker.tasks  # noqa: E402,F401  (registers the tasks)
import worker.observability  # noqa: E402,F401  (metrics, log context, tracing: Celery signals)
import worker.webhook_tasks  # noqa: E402,F401  (webhook deliveries on run completion)


@__import__("celery").signals.after_setup_logger.connect(weak=False)
def _log_level_from_settings(**_kwargs) -> None:
    """LOG_LEVEL decides, not the command line's ``--loglevel INFO``: Celery sets the root logger's level
    from it after logs.configure() ran, so a worker run with LOG_LEVEL=WARNING (the bench) still wrote
    four INFO lines per run (Celery's received and succeeded, the model call's HTTP request, the run's
    end): ~3.7% of the bench worker's CPU. Celery's "ready" line stays at INFO: launchers wait for it
    (devtools/stack.py)."""
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("celery.apps.worker").setLevel(logging.INFO)


@__import__("celery").signals.worker_process_init.connect
def _fresh_engine_after_fork(**_kwargs) -> None:
    """A prefork child must not reuse the parent's database connections."""
    from shared import db

    db.dispose()
