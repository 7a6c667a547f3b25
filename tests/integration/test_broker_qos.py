"""The worker's QoS on Redis (shared/queue.py ``_survive_broker_restarts``): a run's or a sweep's message
is counted for the prefetch limit in memory only, with no copy in kombu's unacked hash (the sweeper
recovers a lost run); a webhook delivery keeps its copy (its retries live in the broker only); a
requeue puts a run's message back on its queue. Real Redis, no stack: a kombu consumer on a queue of
its own, through the app's own connection (so the app's QoS)."""
from __future__ import annotations

import uuid

import pytest

from shared.config import settings
from shared.queue import EXECUTE_RUN, celery_app
from worker.webhook_tasks import DELIVER_WEBHOOK

pytestmark = pytest.mark.skipif(not settings.broker_url.startswith("redis"), reason="the Redis transport's QoS")


def test_runs_are_not_copied_to_the_unacked_hash_webhooks_are_and_a_requeued_run_goes_back():
    from kombu import Consumer, Exchange, Queue

    app = celery_app()
    name = f"qos-{uuid.uuid4().hex[:10]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    for task in (EXECUTE_RUN, DELIVER_WEBHOOK, EXECUTE_RUN):
        app.send_task(task, args=[str(uuid.uuid4())], queue=queue)

    received = []
    with app.connection_for_read() as conn:
        channel = conn.channel()
        consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: received.append(message)],
                            accept=["json"])
        channel.basic_qos(0, 10, False)
        with consumer:
            while len(received) < 3:
                conn.drain_events(timeout=5)
        client = channel.client
        tags = {m.delivery_tag: m.headers["task"] for m in received}
        copied = {tag for tag in tags if client.hexists(channel.unacked_key, tag)}
        assert copied == {tag for tag, task in tags.items() if task == DELIVER_WEBHOOK}
        assert len(channel.qos._delivered) == 3  # all three count for the prefetch limit

        run, webhook, requeued = received
        run.ack()
        webhook.ack()
        assert not client.hexists(channel.unacked_key, webhook.delivery_tag)
        requeued.reject(requeue=True)
        assert len(channel.qos._delivered) - len(channel.qos._dirty) == 0  # none left unacknowledged
        assert client.llen(name) == 1  # the requeued run's message, back on its queue
        back = channel.basic_get(name, no_ack=True)
        assert back.headers["id"] == requeued.headers["id"] and back.delivery_info["redelivered"]
        client.delete(name)
        channel.close()
