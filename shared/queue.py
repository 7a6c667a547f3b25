"""The Celery app as both sides configure it, enqueueing a run by name, and the dead letters.

The API sends tasks by name so it never imports the worker; the worker adds the task bodies and the
beat schedule to the same configuration (worker/celery_app.py). Both modes use Threadline's own kombu
transports (shared/broker.py): the embedded one never hands out a half-written message, and both move
an undecodable message aside instead of stopping the worker.
"""
from __future__ import annotations

import logging
import uuid

from celery import Celery

from shared.config import settings

log = logging.getLogger(__name__)

EXECUTE_RUN = "threadline.execute_run"
SWEEP = "threadline.sweep_stale_runs"
# Tasks whose lost messages the database recovers (the sweeper re-enqueues the run, beat sends the next
# sweep): the worker keeps no copy of them in the broker while they run (_survive_broker_restarts).
RECOVERED_BY_SWEEPER = frozenset({EXECUTE_RUN, SWEEP})

_app: Celery | None = None


def celery_config() -> dict:
    transport: dict = {
        # Longer than the longest run, so the broker never redelivers a task that is still working.
        "visibility_timeout": int(max(3600, settings.run_deadline * 4)),
    }
    broker_transport = None
    if settings.broker_url.startswith("filesystem"):
        broker_transport = "shared.broker:FileTransport"
        folders = {name: settings.broker_dir / name for name in ("queue", "control", "claimed", "dead-letter")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        transport.update(data_folder_in=str(folders["queue"]), data_folder_out=str(folders["queue"]),
                         store_processed=False, polling_interval=0.05, control_folder=str(folders["control"]),
                         claimed_folder=str(folders["claimed"]), dead_letter_folder=str(folders["dead-letter"]))
    else:
        if settings.broker_url.startswith(("redis://", "rediss://")):
            broker_transport = "shared.broker:RedisTransport"
        # max_connections: kombu's Redis channel keeps a pool of 10 by default, and with late acks every
        # finishing task acks through it. A gevent worker finishes hundreds of runs at once; past 10 the
        # pool raised MaxConnectionsError, the consumer reconnected and one message in flight was lost
        # (make bench S4, 5,000 runs: answered only by the sweeper). Connections are opened on demand.
        transport.update(socket_connect_timeout=2, socket_timeout=5, max_connections=1024)
    return dict(
        broker_url=settings.broker_url,
        broker_transport=broker_transport,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.run_queue,
        task_routes={EXECUTE_RUN: {"queue": settings.run_queue}, SWEEP: {"queue": settings.run_queue}},
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # No result backend is configured (task_ignore_result): the disabled one is stateless, so one
        # instance serves every task. Celery otherwise builds one per thread, which under the gevent pool
        # is one per task (a greenlet each): ~1% of the bench worker's CPU (docs/performance.md).
        result_backend_thread_safe=True,
    )


def celery_app() -> Celery:
    global _app
    if _app is None:
        _app = Celery("threadline")
        _app.conf.update(celery_config())
        if settings.broker_url.startswith("redis"):
            _survive_broker_restarts()
    return _app


def _survive_broker_restarts() -> None:
    """Keep the worker alive when Redis goes away and comes back.

    kombu (5.7) kills the worker ("Unrecoverable error: AttributeError ...") on a lost connection in
    two ways: it puts the unacknowledged messages back through the connection it has just closed, and
    after reconnecting it acks the tasks that finished meanwhile through their old, closed channel.
    Neither is needed here: a run whose task is lost is re-enqueued from the database by the sweeper,
    and a message delivered twice is skipped by the claim. So the worker's QoS skips that restore and
    lets an ack on a dead channel go (the broker redelivers after the visibility timeout, harmlessly).

    The same QoS keeps no broker-side copy of a message the database recovers (``RECOVERED_BY_SWEEPER``):
    kombu writes every unacknowledged message to a Redis hash and index on delivery (one round trip)
    and removes it on the ack (another), so that a lost worker's messages come back after the
    visibility timeout, an hour here. For a run, the sweeper has re-enqueued it long before (its lease
    expired, or it has been queued longer than QUEUED_STALE_SECONDS), and the copy's redelivery an hour
    later is skipped by the claim; a lost sweep task is replaced by beat's next one. So those messages
    are counted for the prefetch limit in memory only, as kombu counts every message, and a requeue
    (``reject(requeue=True)``) pushes the message itself back. Webhook deliveries and any other task
    keep kombu's copy: their retries live in the broker only. Measured: ~14% of the bench worker's CPU,
    1.4 ms per answer (docs/performance.md, "The worker process around the run").
    """
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    if getattr(kombu_redis.Channel.QoS, "threadline", False):
        return

    class QoS(kombu_redis.QoS):
        threadline = True
        restore_at_shutdown = False

        def _in_memory_only(self, message) -> bool:
            headers = getattr(message, "headers", None)
            return isinstance(headers, dict) and headers.get("task") in RECOVERED_BY_SWEEPER

        def append(self, message, delivery_tag):
            if self._in_memory_only(message):
                virtual.QoS.append(self, message, delivery_tag)  # counted for the prefetch limit
            else:
                super().append(message, delivery_tag)

        def ack(self, delivery_tag):
            if self._in_memory_only(self._delivered.get(delivery_tag)):
                virtual.QoS.ack(self, delivery_tag)
                return
            try:
                super().ack(delivery_tag)
            except AttributeError:  # the channel's connection is gone: only forget the tag here
                virtual.QoS.ack(self, delivery_tag)

        def reject(self, delivery_tag, requeue=False):
            message = self._delivered.get(delivery_tag)
            if self._in_memory_only(message):
                if requeue:
                    delivery = message.delivery_info
                    try:
                        with self.channel.conn_or_acquire() as client:
                            pipe = client.pipeline()
                            self.channel._do_restore_message(message._raw, delivery["exchange"],
                                                             delivery["routing_key"], pipe, leftmost=True)
                            pipe.execute()
                    except AttributeError:  # the channel's connection is gone: the sweeper re-enqueues the run
                        pass
                virtual.QoS.ack(self, delivery_tag)
                return
            try:
                super().reject(delivery_tag, requeue=requeue)
            except AttributeError:
                virtual.QoS.ack(self, delivery_tag)

    kombu_redis.Channel.QoS = QoS


def enqueue_run(run_id: uuid.UUID) -> bool:
    """Send the run to the workers. False when the broker is unreachable: the run stays queued in the
    database and the sweeper sends it again, so the caller still answers normally."""
    try:
        celery_app().send_task(EXECUTE_RUN, args=[str(run_id)], queue=settings.run_queue)
        return True
    except Exception:  # noqa: BLE001 - any broker failure means "the sweeper will retry"
        log.warning("could not enqueue run %s; the sweeper will retry", run_id, exc_info=True)
        return False


def enqueue_queued_run(run_id: uuid.UUID, response_message_id, request_message_id) -> bool:
    """The post's ``run.queued`` event, then the run's task: one Redis round trip where it can be.

    When the broker is the event log's Redis (the production setup) and tracing is off, both go in one
    non-transactional pipeline: Redis runs its commands in order, so the event is in the log before
    the task is in the queue and no worker can write ``run.started`` ahead of it. The task is the
    message Celery's ``send_task`` would publish (``task_message``), pushed on the queue's list as
    kombu's Redis transport does. Otherwise (embedded mode, a broker elsewhere, tracing, which adds
    its context through Celery's publish) the two are sent one after the other as before. Like
    ``enqueue_run``: False when the task could not be sent (the sweeper sends it again), and a lost
    event is only logged (the stored message is the truth)."""
    from shared import events

    log_ = events.event_log()
    if not _direct_publish_possible(log_):
        events.run_queued(run_id, response_message_id, request_message_id)
        return enqueue_run(run_id)
    try:
        message = task_message(str(run_id))
        pipe = log_.pipeline()
        log_.add_append(pipe, run_id, events.EventType.RUN_QUEUED,
                        events.queued(run_id, response_message_id, request_message_id)[1], 0)
        pipe.lpush(settings.run_queue, message)
        *appended, pushed = pipe.execute(raise_on_error=False)
    except Exception:  # noqa: BLE001 - any broker failure means "the sweeper will retry"
        log.warning("could not enqueue run %s; the sweeper will retry", run_id, exc_info=True)
        return False
    if any(isinstance(reply, Exception) for reply in appended):
        log.warning("could not append run.queued to the event log of run %s: %s", run_id, appended)
    if isinstance(pushed, Exception):
        log.warning("could not enqueue run %s; the sweeper will retry: %s", run_id, pushed)
        return False
    return True


def _direct_publish_possible(event_log) -> bool:
    from shared import events

    return (isinstance(event_log, events.RedisLog) and settings.broker_url == settings.redis_url
            and not settings.tracing and not celery_app().conf.broker_transport_options.get("global_keyprefix"))


def task_message(run_id: str) -> bytes:
    """``execute_run(run_id)`` as the JSON envelope kombu's Redis transport stores in the queue's list.

    What ``send_task`` publishes, built without its producer pool and kombu's publish path (a fifth of
    the post's CPU in the profile): Celery's own protocol-2 headers and body (``as_task_v2``), the
    ``before_task_publish``/``after_task_publish`` signals with the arguments Celery sends them (the API
    stamps its request id and the enqueue time there), and kombu's envelope (JSON body, base64,
    persistent, priority 0, the default exchange routing to the queue). tests/unit/test_task_message.py
    compares it with what ``send_task`` puts on the list."""
    import base64

    from celery import signals
    from kombu.utils.json import dumps

    app = celery_app()
    task_id = str(uuid.uuid4())
    args = [run_id]
    # argsrepr/kwargsrepr as Celery's saferepr writes them for one string and no keywords (its generic
    # walk over the arguments was a third of this function)
    headers, properties, body, _ = app.amqp.as_task_v2(task_id, EXECUTE_RUN, args=args, kwargs={},
                                                      reply_to=app.thread_oid, ignore_result=None,
                                                      argsrepr=repr(args), kwargsrepr="{}")
    queue = settings.run_queue
    if signals.before_task_publish.receivers:
        signals.before_task_publish.send(sender=EXECUTE_RUN, body=body, exchange="", routing_key=queue,
                                         headers=headers, properties=properties, declare=[], retry_policy=None)
    envelope = {
        "body": base64.b64encode(dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {**properties, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }
    if signals.after_task_publish.receivers:
        # (sent once the message is built, just before it is pushed; only tracing listens, which takes
        # the send_task path anyway)
        signals.after_task_publish.send(sender=EXECUTE_RUN, body=body, headers=headers, exchange="",
                                        routing_key=queue)
    return dumps(envelope).encode()


def dead_letter(raw: bytes | str, reason: str, identity: str, queue: str | None = None) -> None:
    """Move one message that can never be processed aside (log, store, count) through the broker's
    channel: the dead-letter folder in embedded mode, the ``<queue>.dead-letter`` list on Redis.
    Never raises: the worker must go on consuming whatever happens here."""
    queue = queue or settings.run_queue
    try:
        with celery_app().connection_for_write() as conn:
            channel = conn.default_channel
            if hasattr(channel, "dead_letter"):
                channel.dead_letter(queue, raw, reason, identity)
                return
    except Exception:  # noqa: BLE001 - see docstring
        log.exception("could not store dead letter %s", identity)
    log.error("dropped message %s from queue %s: %s", identity, queue, reason)


def dead_letter_count(queue: str | None = None) -> int:
    """How many messages of ``queue`` (the run queue by default) have been moved aside."""
    with celery_app().connection_for_write() as conn:
        return conn.default_channel.dead_letter_count(queue or settings.run_queue)
