"""The post's direct publish (shared/queue.py enqueue_queued_run) puts on the run queue the very message
Celery's send_task puts there, and its run.queued event before it, in one Redis round trip."""
from __future__ import annotations

import base64
import dataclasses
import json
import sys
import uuid

import pytest
import redis
from celery.signals import before_task_publish

from api import observability
from shared import events, queue
from shared.config import settings
from shared.observability import context

# The fields that differ between two messages for the same run: fresh ids, and the enqueue time.
FRESH = {("headers", "id"), ("headers", "root_id"), ("headers", context.TIME_HEADER),
         ("properties", "correlation_id"), ("properties", "delivery_tag")}


@pytest.fixture
def run_queue(monkeypatch):
    if not settings.redis_url:
        pytest.skip("production mode only (REDIS_URL)")
    name = f"apath-test-{uuid.uuid4().hex[:8]}"
    changed = dataclasses.replace(settings, run_queue=name)
    monkeypatch.setattr(queue, "settings", changed)
    client = redis.Redis.from_url(settings.redis_url)
    yield name, client
    client.delete(name)


def _pop(client, name) -> dict:
    raw = client.rpop(name)
    assert raw is not None, "nothing was pushed"
    return json.loads(raw)


def _comparable(message: dict) -> dict:
    out = {"body": json.loads(base64.b64decode(message["body"]))}
    for part in ("headers", "properties"):
        out[part] = {k: v for k, v in message[part].items() if (part, k) not in FRESH}
    out.update({k: v for k, v in message.items() if k not in ("body", "headers", "properties")})
    return out


def _worker_stamp():
    """The worker's publish receiver, when another test imported worker.celery_app into this process (it
    drops the request id header: a worker's enqueue is not a request's). API and worker never share a
    process, so it is held off here."""
    worker_observability = sys.modules.get("worker.observability")
    return getattr(worker_observability, "_stamp_task", None)


def test_the_direct_message_is_the_one_send_task_publishes(run_queue):
    name, client = run_queue
    before_task_publish.connect(observability._stamp_task, weak=False)  # as the API does (same receiver: once)
    worker_stamp = _worker_stamp()
    if worker_stamp is not None:
        before_task_publish.disconnect(worker_stamp)
    tokens = context.bind(request_id="req-direct-1")
    try:
        run_id = str(uuid.uuid4())
        queue.celery_app().send_task(queue.EXECUTE_RUN, args=[run_id], queue=name)
        by_celery = _pop(client, name)
        client.lpush(name, queue.task_message(run_id))
        direct = _pop(client, name)
    finally:
        context.unbind(tokens)
        if worker_stamp is not None:
            before_task_publish.connect(worker_stamp, weak=False)
    assert _comparable(direct) == _comparable(by_celery)
    for message in (direct, by_celery):
        assert message["headers"][context.TASK_HEADER] == "req-direct-1"
        assert message["headers"]["id"] == message["headers"]["root_id"] == message["properties"]["correlation_id"]
    assert direct["headers"]["id"] != by_celery["headers"]["id"]


def test_run_queued_is_in_the_log_before_the_task_is_in_the_queue(run_queue, monkeypatch):
    name, client = run_queue
    run_id, response_id, request_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sent: list[list[bytes]] = []
    log_ = events.event_log()
    pipeline = log_.pipeline

    def recording_pipeline():
        pipe = pipeline()
        execute = pipe.execute

        def execute_recorded(*args, **kwargs):
            sent.append([command[0][0] for command in pipe.command_stack])
            return execute(*args, **kwargs)

        pipe.execute = execute_recorded
        return pipe

    monkeypatch.setattr(log_, "pipeline", recording_pipeline)
    assert queue.enqueue_queued_run(run_id, response_id, request_id) is True
    xadd = "XADD" if log_._server_numbers() else "EVAL"  # (Redis before 7: a script numbers the event)
    assert sent == [[xadd, "EXPIRE", "LPUSH"]], "one round trip, the event first"
    [event] = log_.read(run_id, 0)
    assert event.type == events.EventType.RUN_QUEUED and event.data["message_id"] == str(response_id)
    message = _pop(client, name)
    assert message["headers"]["task"] == queue.EXECUTE_RUN
    assert json.loads(base64.b64decode(message["body"]))[0] == [str(run_id)]
    client.delete(log_.key(run_id))


def test_a_failed_push_is_reported_for_the_sweeper(run_queue):
    name, client = run_queue
    client.set(name, "not a list")  # LPUSH answers WRONGTYPE
    run_id = uuid.uuid4()
    assert queue.enqueue_queued_run(run_id, uuid.uuid4(), uuid.uuid4()) is False
    assert [e.type for e in events.event_log().read(run_id, 0)] == [events.EventType.RUN_QUEUED]
    client.delete(events.event_log().key(run_id))
