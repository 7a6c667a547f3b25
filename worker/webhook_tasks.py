"""Webhook deliveries as Celery tasks (shared/services/webhooks.py has the rules).

When ``execute_run`` ends a run, the run's end records the deliveries the run's tenant subscribed to
(runs.finish, in the same statement or transaction) and the task sends one ``deliver_webhook`` task
each (``send``), after that commit. Each task makes one
attempt; a failed attempt retries the task itself (``self.retry``) after the service's backoff, so the
schedule lives in the broker, and the delivery row — not Celery's retry count — decides when to stop.
A duplicate task finds the delivery no longer pending and does nothing.
"""
from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.config import settings
from shared.queue import celery_app
from shared.services import webhooks

log = logging.getLogger(__name__)
app = celery_app()

DELIVER_WEBHOOK = "threadline.deliver_webhook"


@app.task(name=DELIVER_WEBHOOK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          autoretry_for=(OperationalError, PoolTimeout), retry_backoff=1, retry_backoff_max=60)
def deliver_webhook(self, delivery_id: str) -> str:
    result = webhooks.attempt(uuid.UUID(delivery_id))
    if result is None:
        return "skipped"
    if result.retry_in is not None:
        log.info("webhook delivery %s: attempt %d failed; next in %.0fs", delivery_id, result.attempts, result.retry_in)
        raise self.retry(countdown=result.retry_in, max_retries=None)
    log.info("webhook delivery %s: %s after %d attempt(s)", delivery_id, result.status, result.attempts)
    return str(result.status)


def send(delivery_id: uuid.UUID) -> None:
    try:
        app.send_task(DELIVER_WEBHOOK, args=[str(delivery_id)], queue=settings.run_queue)
    except Exception:  # noqa: BLE001 - the row stays pending; listed by `webhooks deliveries --status pending`
        log.warning("could not enqueue webhook delivery %s", delivery_id, exc_info=True)
