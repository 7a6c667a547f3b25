"""Run-finished notifications: the worker publishes, waiting API requests wake up.

Redis pub/sub carries the wake-up; the database stays the truth. Each waiter re-reads the row after
waking and also every few seconds, so a lost notification delays an answer but never loses it. One
listener per process serves every waiting request (cheap under gevent with thousands of waiters).
Without Redis (embedded mode) waiting is polling.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Callable

from shared.config import settings

log = logging.getLogger(__name__)

SAFETY_RECHECK = 5.0  # seconds between a waiter's own re-reads, in case a wake-up was lost

_client = None
_client_lock = threading.Lock()


def redis_client():
    global _client
    if _client is None and settings.redis_url:
        import redis

        with _client_lock:
            if _client is None:
                _client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    return _client


def publish_run_finished(run_id: str) -> None:
    client = redis_client()
    if client is None:
        return
    try:
        client.publish(settings.notify_channel, str(run_id))
    except Exception:  # noqa: BLE001 - waiters re-check the database; a lost wake-up only delays them
        log.warning("could not publish run-finished for %s", run_id, exc_info=True)


class _Listener:
    """One subscription per process, fanning wake-ups out to the waiting requests."""

    def __init__(self) -> None:
        self._events: dict[str, set[threading.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, run_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[run_id].add(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._listen, name="run-finished-listener", daemon=True)
                self._thread.start()
        return event

    def unregister(self, run_id: str, event: threading.Event) -> None:
        with self._lock:
            waiters = self._events.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[run_id]

    def _wake(self, run_id: str | None) -> None:
        with self._lock:
            targets = [e for events in self._events.values() for e in events] if run_id is None else list(
                self._events.get(run_id, ())
            )
        for event in targets:
            event.set()

    def _listen(self) -> None:
        import redis

        while True:
            try:
                client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=10)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(settings.notify_channel)
                self._wake(None)  # anything finished while we were not listening: re-check
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake(message["data"].decode())
            except Exception:  # noqa: BLE001 - reconnect; waiters keep their own safety re-check
                log.warning("run-finished listener lost Redis; reconnecting", exc_info=True)
                time.sleep(0.5)


_listener = _Listener()


def wait_for_run(run_id: str, timeout: float, is_done: Callable[[], bool]) -> bool:
    """Block up to ``timeout`` seconds until ``is_done()``; True if it finished in time."""
    deadline = time.monotonic() + timeout
    if is_done():
        return True
    if timeout <= 0:
        return False
    if settings.embedded:
        while time.monotonic() < deadline:
            time.sleep(min(settings.poll_interval, max(0.0, deadline - time.monotonic())))
            if is_done():
                return True
        return False
    event = _listener.register(str(run_id))
    try:
        if is_done():
            return True
        while (remaining := deadline - time.monotonic()) > 0:
            event.wait(min(remaining, SAFETY_RECHECK))
            event.clear()
            if is_done():
                return True
        return False
    finally:
        _listener.unregister(str(run_id), event)
