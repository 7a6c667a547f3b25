"""One bad message never stops the worker, in either mode: each kind of malformed message is moved to
the dead letters (shared/broker.py, worker/celery_app.py, worker/tasks.py), counted, and the worker's
process goes on answering.

The messages are put on the session's real broker (the queue folder in embedded mode, the Redis list in
production) the way a buggy or hostile producer would: raw bytes that are not a kombu envelope, and
envelopes that are fine but not a task Threadline can run.
"""
from __future__ import annotations

import os
import time
import uuid

import pytest

from shared.config import settings
from shared.queue import EXECUTE_RUN, celery_app, dead_letter_count
from devtools.stack import wait_until

pytestmark = pytest.mark.core

RAW_ENVELOPES = [
    b"",  # what kombu's own filesystem transport handed out mid-write
    b"not json at all",
    b"[1, 2, 3]",  # JSON, but not an envelope
    b'{"body": "a", "properties": {"delivery_tag": "t", "body_encoding": "base64"}}',  # bad base64
]


def put_raw(raw: bytes) -> None:
    """Put raw bytes on the run queue, bypassing kombu's producer."""
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_dir / "queue"
        name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.{settings.run_queue}.msg"
        (folder / f".{name}").write_bytes(raw)
        os.replace(folder / f".{name}", folder / name)
    else:
        import redis

        client = redis.Redis.from_url(settings.broker_url)
        client.lpush(settings.run_queue, raw)
        client.close()


def publish(body, headers: dict, content_type: str = "application/json") -> None:
    """Publish a well-formed envelope with a hand-made task message inside."""
    with celery_app().connection_for_write() as conn:
        conn.Producer().publish(body, exchange="", routing_key=settings.run_queue, headers=headers,
                                content_type=content_type, content_encoding="utf-8", serializer=None)


def bad_task_messages() -> int:
    """Send every kind of malformed task message; return how many were sent."""
    app = celery_app()
    app.send_task("threadline.no_such_task", args=["x"], queue=settings.run_queue)
    app.send_task(EXECUTE_RUN, args=["not-a-uuid"], queue=settings.run_queue)
    app.send_task(EXECUTE_RUN, args=[{"id": 1}], queue=settings.run_queue)
    app.send_task(EXECUTE_RUN, args=[], queue=settings.run_queue)
    app.send_task(EXECUTE_RUN, args=[str(uuid.uuid4()), "extra"], queue=settings.run_queue)
    task_id = str(uuid.uuid4())
    publish(b"{this is not json", {"task": EXECUTE_RUN, "id": task_id, "lang": "py"})
    publish(b'[["x"], {}, {}]', {"task": EXECUTE_RUN})  # no task id
    publish(b'[["x"], {}, {}]', {"task": EXECUTE_RUN, "id": str(uuid.uuid4())}, content_type="application/x-evil")
    return 8


def test_bad_messages_are_dead_lettered_and_the_worker_goes_on(stack, client):
    worker = stack.processes["worker"]
    pid = worker.proc.pid
    log_start = worker.log_path.stat().st_size
    before = dead_letter_count()
    for raw in RAW_ENVELOPES:
        put_raw(raw)
    sent = len(RAW_ENVELOPES) + bad_task_messages()

    wait_until(lambda: dead_letter_count() - before >= sent, timeout=30, what=f"{sent} dead letters")
    thread = client.post("/api/v1/ai/threads", json={"title": "after bad messages"}).json()["id"]
    answer = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "still there?"},
                         headers={"Prefer": "wait=20"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["responseMessage"]["status"] == "completed"
    assert worker.alive() and worker.proc.pid == pid, worker.tail()
    assert dead_letter_count() - before == sent
    with open(worker.log_path, "rb") as log:
        log.seek(log_start)
        since = log.read().decode(errors="replace")
    # Surviving by reconnecting would still drop the worker's unacknowledged messages: not good enough.
    assert "Connection to broker lost" not in since and "Unrecoverable error" not in since, since[-3000:]
