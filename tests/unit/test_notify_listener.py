"""The process's run-finished listener (shared/notify.py) against a real Redis: once its subscription is
confirmed, a waiter asks the database only when its run's finish was heard or the listener cannot tell."""
from __future__ import annotations

import time
import uuid

import pytest

from shared import notify
from shared.config import settings


def until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def listening():
    if not settings.redis_url:
        pytest.skip("production mode only (REDIS_URL)")
    probe = str(uuid.uuid4())
    event = notify._listener.register(probe)  # starts the listener thread
    try:
        until(lambda: notify._listener.finished_before(probe) is not None)
    finally:
        notify._listener.unregister(probe, event)


def test_a_waiter_skips_the_database_while_the_listener_is_sure(listening):
    looks: list[str] = []

    def is_done(run_id: str):
        return lambda: looks.append(run_id) or False

    running = str(uuid.uuid4())
    assert notify.wait_for_run(running, 0.2, is_done(running)) is False
    assert looks == [], "not heard finished while subscribed: no look before the wait"

    finished = str(uuid.uuid4())
    notify.publish_run_finished(finished)
    until(lambda: notify._listener.finished_before(finished))
    assert notify.wait_for_run(finished, 5, lambda: looks.append(finished) or True) is True
    assert looks == [finished], "heard finished before the waiter registered: one look, no wait"


def test_a_finish_heard_while_waiting_wakes_the_waiter(listening):
    run_id = str(uuid.uuid4())
    done = {"value": False}

    def finish_later() -> None:
        time.sleep(0.2)
        done["value"] = True
        notify.publish_run_finished(run_id)

    import threading

    threading.Thread(target=finish_later).start()
    started = time.monotonic()
    assert notify.wait_for_run(run_id, 5, lambda: done["value"]) is True
    assert time.monotonic() - started < notify.SAFETY_RECHECK, "woken by the message, not the re-check"


def test_without_a_confirmed_subscription_the_waiter_asks_the_database(listening, monkeypatch):
    monkeypatch.setattr(notify._listener, "_subscribed", False)  # as while reconnecting
    looks: list[bool] = []
    assert notify.wait_for_run(str(uuid.uuid4()), 5, lambda: looks.append(True) or True) is True
    assert looks == [True]
