"""Enqueueing never hangs a request: with the broker refusing connections, or accepting them and then
never answering (a hung Redis), enqueue_run gives up within a few seconds and returns False — the run
stays queued in the database for the sweeper. Measured in a fresh process, as the API would see it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.faults.ledger import LEDGER
from devtools.stack import ROOT, free_port

pytestmark = pytest.mark.faults

PROBE = """
import json, logging, time, uuid
logging.disable(logging.CRITICAL)
from shared.queue import enqueue_run
started = time.monotonic()
sent = enqueue_run(uuid.uuid4())
print(json.dumps({"sent": sent, "seconds": time.monotonic() - started}))
"""
# The post's path: run.queued and the task in one pipeline (shared/queue.py enqueue_queued_run)
POST_PROBE = PROBE.replace("enqueue_run(uuid.uuid4())", "enqueue_queued_run(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())"
                           ).replace("import enqueue_run", "import enqueue_queued_run")


def enqueue_against(port: int, probe: str = PROBE) -> dict:
    url = f"redis://127.0.0.1:{port}/0"
    env = {"PATH": "/usr/bin:/bin", "CELERY_BROKER_URL": url, "REDIS_URL": url, "RUN_QUEUE": "runs-probe",
           "DATABASE_URL": "sqlite:///:memory:"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def hung_redis() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def hold() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=hold, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for sock in held:
            sock.close()


def test_enqueue_gives_up_quickly_when_the_broker_refuses():
    result = enqueue_against(free_port())  # nothing listens there
    LEDGER.fault("broker_refused")
    assert result["sent"] is False and result["seconds"] < 3, result


def test_enqueue_gives_up_within_seconds_when_the_broker_hangs():
    with hung_redis() as port:
        result = enqueue_against(port)
    LEDGER.fault("broker_hung")
    assert result["sent"] is False and result["seconds"] < 8, result  # socket timeout 5 s, no endless retry


def test_the_posts_enqueue_gives_up_quickly_when_redis_refuses():
    result = enqueue_against(free_port(), POST_PROBE)
    assert result["sent"] is False and result["seconds"] < 3, result


def test_the_posts_enqueue_gives_up_within_seconds_when_redis_hangs():
    with hung_redis() as port:
        result = enqueue_against(port, POST_PROBE)
    assert result["sent"] is False and result["seconds"] < 5, result  # the event log's 2 s socket timeout
