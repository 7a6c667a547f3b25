"""Waiting for an answer survives a lost wake-up: the process's batched re-check finds finished runs."""
from __future__ import annotations

import threading
import time

from sqlalchemy import select, update

from shared import notify
from shared.db import transaction
from shared.models import Run
from shared.services import identity, messages, threads


def test_a_lost_notification_only_delays_the_waiter(stack, user):
    principal = identity.authenticate_token(user.token)
    thread = threads.create_thread(principal)
    exchange = messages.post_user_message(principal, thread.id, content="[[hang]] keep the worker busy")

    def status() -> str:
        with transaction() as session:
            return session.scalar(select(Run.status).where(Run.id == exchange.run_id))

    def finish_silently() -> None:  # as if the worker's publish had been lost
        time.sleep(0.5)
        with transaction() as session:
            session.execute(update(Run).where(Run.id == exchange.run_id).values(status="completed"))

    threading.Thread(target=finish_silently).start()
    started = time.monotonic()
    assert notify.wait_for_run(str(exchange.run_id), 15, lambda: status() == "completed")
    assert time.monotonic() - started < notify.SAFETY_RECHECK + 2
