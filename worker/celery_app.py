"""The worker's Celery app: the shared configuration plus task bodies and the sweeper's schedule.

Start a worker:  celery -A worker.celery_app worker -Q runs --pool threads --concurrency 32
                 (pool and concurrency per deployment, with the reasons: devtools/processes.py)
Start beat:      celery -A worker.celery_app beat
"""
from __future__ import annotations


from shared.config import settings
from shared.observability import logs
from shared.queue import SWEEP, celery_app


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

app = celery_app()
app.conf.beat_schedule = {"sweep-stale-runs": {"task": SWEEP, "schedule": settings.sweep_interval}}
app.conf.include = ["worker.tasks", "worker.webhook_tasks"]

import worker.tasks  # noqa: E402,F401  (registers the tasks)
import worker.observability  # noqa: E402,F401  (metrics, log context, tracing: Celery signals)
import worker.webhook_tasks  # noqa: E402,F401  (webhook deliveries on run completion)


@__import__("celery").signals.worker_process_init.connect
def _fresh_engine_after_fork(**_kwargs) -> None:
    """A prefork child must not reuse the parent's database connections."""
    from shared import db

    db.dispose()
