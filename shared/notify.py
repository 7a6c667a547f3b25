"""Run-finished notifications: the worker publishes, waiting API requests wake up.

Redis pub/sub carries the wake-up; the database stays the truth. Each waiter re-reads the row after
waking. A lost notification delays an answer but never loses it: every few seconds one query per
process looks up which of all the awaited runs have finished and wakes those waiters (so a thousand
waiters cost one query per interval, not a thousand). One listener per process serves every waiting
request (cheap under gevent). Without Redis (embedded mode) waiting is polling.

Cancel signals go the other way: the API publishes a run id on the cancel channel, and each worker
process has one listener that trips the ``CancelWatch`` of that run if the process holds it. The
agent looks at its watch between stream chunks and between steps (a dict look-up, no I/O). The
database stays the truth here too: every CANCEL_RECHECK seconds one query per worker process asks
which of its running runs are marked for cancel (or were deleted by a rollback) and trips those — the
safety net for a lost message, and in embedded mode (no Redis) the only path. That query reads the
few runs a process holds by primary key, so even the embedded mode's 0.1 s rate costs one cheap
indexed read per process per tick, not one per run per chunk.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Callable

from shared.config import settings

log = logging.getLogger(__name__)

SAFETY_RECHECK = 3.0  # seconds between the process's batched look-ups, in case a wake-up was lost
# seconds between a worker process's look-ups of its runs' cancel marks: a lost pub/sub message
# (Redis) — or, in embedded mode, every cancel — is noticed within this
CANCEL_RECHECK, CANCEL_RECHECK_EMBEDDED = 1.0, 0.1

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


def run_finished_message(run_id) -> tuple[str, str] | None:
    """The run-finished wake-up as (channel, message), for a writer that sends it in a pipeline of its
    own (the worker's terminal event, shared/events.py); None without Redis."""
    return (settings.notify_channel, str(run_id)) if settings.redis_url else None


def publish_run_finished(run_id: str) -> None:
    client = redis_client()
    if client is None:
        return
    try:
        client.publish(settings.notify_channel, str(run_id))
    except Exception:  # noqa: BLE001 - waiters re-check the database; a lost wake-up only delays them
        log.warning("could not publish run-finished for %s", run_id, exc_info=True)


RECENTLY_FINISHED_SECONDS = 30.0  # how long the listener remembers a run-finished it received


class _Listener:
    """One subscription per process, fanning wake-ups out to the waiting requests.

    It also remembers the runs it heard finish in the last RECENTLY_FINISHED_SECONDS, so a request
    that starts waiting need not ask the database whether its run finished before it registered
    (``finished_before``): while the subscription is confirmed, a run whose finish was not heard had
    not finished when the waiter registered, and its wake-up will come (or, lost, the re-check's)."""

    def __init__(self) -> None:
        self._events: dict[str, set[threading.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rechecker: threading.Thread | None = None
        self._subscribed = False  # the subscription is confirmed and no message since can have been lost
        self._recent: dict[str, float] = {}  # run id -> when its finish was heard (insertion order)

    def finished_before(self, run_id: str) -> bool | None:
        """Heard finished (True), not heard while listening (False), or unknown (None: not subscribed,
        or reconnecting). Call after ``register``: a finish heard later wakes the registered event."""
        with self._lock:
            if run_id in self._recent:
                return True
            return False if self._subscribed else None

    def _heard(self, run_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            recent = self._recent
            recent[run_id] = now
            while recent:  # drop the oldest (insertion order is time order)
                oldest, at = next(iter(recent.items()))
                if now - at <= RECENTLY_FINISHED_SECONDS:
                    break
                del recent[oldest]

    def register(self, run_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[run_id].add(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._listen, name="run-finished-listener", daemon=True)
                self._thread.start()
            if self._rechecker is None or not self._rechecker.is_alive():
                self._rechecker = threading.Thread(target=self._recheck, name="run-finished-recheck", daemon=True)
                self._rechecker.start()
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
                pubsub = client.pubsub()
                pubsub.subscribe(settings.notify_channel)
                for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        run_id = message["data"].decode()
                        self._heard(run_id)  # before the wake: see finished_before
                        self._wake(run_id)
                    elif kind == "subscribe":
                        with self._lock:
                            self._subscribed = True
                        self._wake(None)  # anything finished while we were not listening: re-check
            except Exception:  # noqa: BLE001 - reconnect; waiters keep their own safety re-check
                with self._lock:
                    self._subscribed = False
                log.warning("run-finished listener lost Redis; reconnecting", exc_info=True)
                time.sleep(0.5)


    def _recheck(self) -> None:
        while True:
            time.sleep(SAFETY_RECHECK)
            with self._lock:
                awaited = list(self._events)
            if not awaited:
                continue
            try:
                for run_id in finished_runs(awaited):
                    self._wake(run_id)
            except Exception:  # noqa: BLE001 - the database is down: waiters time out and answer pending
                log.warning("could not re-check awaited runs", exc_info=True)


def finished_runs(run_ids: list[str]) -> set[str]:
    """Which of these runs are no longer queued or in progress (one query per thousand ids)."""
    import uuid

    from sqlalchemy import select

    from shared.db import read
    from shared.models import ACTIVE_STATUSES, Run

    done: set[str] = set()
    with read() as session:  # not transaction(): on SQLite that would take the write lock (BEGIN IMMEDIATE)
        for start in range(0, len(run_ids), 1000):
            batch = [uuid.UUID(r) for r in run_ids[start:start + 1000]]
            done.update(str(r) for r in session.scalars(
                select(Run.id).where(Run.id.in_(batch), Run.status.notin_(ACTIVE_STATUSES))
            ))
    return done


_listener = _Listener()


def wait_for_run(run_id: str, timeout: float, is_done: Callable[[], bool]) -> bool:
    """Block up to ``timeout`` seconds until ``is_done()``; True if it finished in time."""
    deadline = time.monotonic() + timeout
    if timeout <= 0:
        return is_done()
    if settings.embedded:
        while True:
            if is_done():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(settings.poll_interval, max(0.0, deadline - time.monotonic())))
    event = _listener.register(str(run_id))
    try:
        # finished before we registered? Asking the database is only needed when the listener cannot
        # tell (not subscribed yet, reconnecting) or heard it finish.
        if _listener.finished_before(str(run_id)) is not False and is_done():
            return True
        while (remaining := deadline - time.monotonic()) > 0:
            if event.wait(remaining):
                event.clear()
                if is_done():
                    return True
        return False
    finally:
        _listener.unregister(str(run_id), event)


# -- cancel signals: API → the worker holding the run ---------------------------------------------


def cancel_channel() -> str:
    return f"{settings.notify_channel}:cancel"


def publish_cancel(run_id) -> None:
    """Tell the worker holding ``run_id`` to stop (its process's recheck catches a lost message)."""
    client = redis_client()
    if client is None:
        return
    try:
        client.publish(cancel_channel(), str(run_id))
    except Exception:  # noqa: BLE001 - the worker's database recheck finds the cancel mark
        log.warning("could not publish cancel for %s", run_id, exc_info=True)


class CancelWatch:
    """One running run's cancel flag, tripped by the process's cancel listener."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def trip(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class _CancelListener:
    """The runs this process holds, by id; one subscriber thread (Redis) and one recheck thread."""

    def __init__(self) -> None:
        self._watches: dict[str, set[CancelWatch]] = defaultdict(set)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def register(self, run_id: str) -> CancelWatch:
        watch = CancelWatch(run_id)
        with self._lock:
            self._watches[run_id].add(watch)
            targets = {"cancel-recheck": self._recheck}
            if settings.redis_url:
                targets["cancel-listener"] = self._listen
            for name, target in targets.items():
                thread = self._threads.get(name)
                if thread is None or not thread.is_alive():
                    self._threads[name] = thread = threading.Thread(target=target, name=name, daemon=True)
                    thread.start()
        return watch

    def unregister(self, watch: CancelWatch) -> None:
        with self._lock:
            watches = self._watches.get(watch.run_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watch.run_id]

    def trip(self, run_id: str) -> None:
        with self._lock:
            targets = list(self._watches.get(run_id, ()))
        for watch in targets:
            watch.trip()

    def _listen(self) -> None:
        import redis

        while True:
            try:
                client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=10)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(cancel_channel())
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.trip(message["data"].decode())
            except Exception:  # noqa: BLE001 - reconnect; the recheck covers the gap
                log.warning("cancel listener lost Redis; reconnecting", exc_info=True)
                time.sleep(0.5)

    def _recheck(self) -> None:
        interval = CANCEL_RECHECK if settings.redis_url else CANCEL_RECHECK_EMBEDDED
        while True:
            time.sleep(interval)
            with self._lock:
                watched = list(self._watches)
            if not watched:
                continue
            try:
                for run_id in cancelled_runs(watched):
                    self.trip(run_id)
            except Exception:  # noqa: BLE001 - the database is away: the next tick tries again
                log.warning("could not re-check cancel marks", exc_info=True)


def cancelled_runs(run_ids: list[str]) -> set[str]:
    """Which of these runs should stop: marked for cancel, ended, or deleted (rollback). A run still
    queued is not one of them (its worker registers the watch just before claiming it)."""
    import uuid

    from sqlalchemy import select

    from shared.db import read
    from shared.models import ACTIVE_STATUSES, Run

    ids = [uuid.UUID(r) for r in run_ids]
    with read() as session:
        running = {str(r) for r in session.scalars(
            select(Run.id).where(Run.id.in_(ids), Run.status.in_(ACTIVE_STATUSES), Run.cancel_requested_at.is_(None))
        )}
    return set(run_ids) - running


_cancel_listener = _CancelListener()


class watch_cancel:  # noqa: N801 - used as a context manager, like contextlib's
    """``with watch_cancel(run_id) as watch:`` — the run's cancel flag while this process holds it.
    Register before claiming, so a cancel published between the claim and the agent's start is not lost."""

    def __init__(self, run_id) -> None:
        self.run_id = str(run_id)

    def __enter__(self) -> CancelWatch:
        self.watch = _cancel_listener.register(self.run_id)
        return self.watch

    def __exit__(self, *exc) -> None:
        _cancel_listener.unregister(self.watch)
