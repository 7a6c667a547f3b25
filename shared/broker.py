"""The broker transports Threadline uses, so one bad or half-written message never kills a worker.

**Embedded mode: ``FileTransport``, kombu's filesystem transport with an atomic put.** kombu's own
``_put`` creates the message file under its final name and only then locks and writes it, while
``_get`` lists the folder, moves the file away and reads it: under a burst a consumer reads a file
before a byte is in it, ``json.loads("")`` raises, and Celery stops the worker ("Unrecoverable error:
JSONDecodeError"). Here a message is written under a temporary name in the same folder (a dot name,
which no consumer lists) and ``os.replace``-d into place, and rename is atomic within one filesystem,
so a consumer only ever sees whole files. A consumer claims a file by renaming it into a ``claimed``
folder (atomic too, so two consumers never both get it), reads it and deletes it.

Why this and not kombu's SQLAlchemy transport on SQLite (option b of issue 10): measured, it enqueues
about 4× and drains about 27× slower than this transport (288 and 377 messages/s against 1154 and
10305, medians on the same machine); its ``_get`` takes SQLite's write lock (``BEGIN IMMEDIATE``) on
every poll, even an empty one, which would compete with the API's writes for the one writer SQLite
allows; its rows are never deleted; and it still ``loads`` without a guard. This transport adds no
dependency and is kombu's own with two methods replaced: message format, folder layout and order are
unchanged. Against kombu's filesystem transport (numbers in docs/reliability.md "The embedded broker"):
enqueueing is as fast (1154/s against 1230/s), draining a backlog 8× faster (one folder listing serves
many gets instead of one per message), and the race test (tests/unit/test_broker_race.py, 4 producer
processes × 1000 messages) loses nothing, where kombu's transport raised ``JSONDecodeError`` in 5 runs
of 6. Through the whole embedded stack, kombu's transport let the worker die in the 4th burst of
8 users × 20 posts; with this one 20 bursts in a row were answered by the same worker.

**Both modes: undecodable messages are moved aside.** A message whose envelope is not JSON or not a
kombu envelope (no properties, bad body encoding) would otherwise raise inside ``drain_events`` and stop
the worker. Here it is logged with its identity (file name or queue and size), stored in a dead-letter
folder (``FileTransport``) or list (``RedisTransport``: ``<queue>.dead-letter``), counted, and the
consumer goes on. Messages that decode but are not valid tasks are caught one level up, in the
worker's consumer (worker/celery_app.py), and go to the same place through ``Channel.dead_letter``.

Durability: files are not fsync-ed. A message lost to a power cut or a crash between claim and
delivery leaves its run ``queued`` in the database, and the sweeper sends it again after
``QUEUED_STALE_SECONDS`` (docs/reliability.md).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from queue import Empty

from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

log = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = ".dead-letter"

_counter_lock = threading.Lock()
_dead_lettered = itertools.count(1)


def _count_one() -> int:
    """Messages this process has dead-lettered so far (the log line carries it)."""
    with _counter_lock:
        return next(_dead_lettered)


def dead_letter_record(queue: str, raw: bytes | str, reason: str, identity: str) -> str:
    """The JSON line stored for a dead letter: enough to inspect it and, if wanted, replay it by hand."""
    return json.dumps({
        "queue": queue,
        "identity": identity,
        "reason": reason,
        "at": time.time(),
        "raw": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw,
    })


class DeadLetterChannel:
    """What both channels add: decode an envelope or move it aside; store and count dead letters."""

    def _store_dead_letter(self, queue: str, record: str) -> None:
        raise NotImplementedError

    def dead_letter_count(self, queue: str) -> int:
        raise NotImplementedError

    def dead_letter(self, queue: str, raw: bytes | str, reason: str, identity: str) -> None:
        """Log, store and count one message that can never be processed. Never raises: failing to store
        a dead letter must not stop the consumer either (the log line is then the only trace)."""
        n = _count_one()
        log.error("dead-lettered message %s from queue %s: %s (%d dead-lettered by this process)",
                  identity, queue, reason, n)
        try:
            self._store_dead_letter(queue, dead_letter_record(queue, raw, reason, identity))
        except Exception:  # noqa: BLE001 - see docstring
            log.exception("could not store dead letter %s", identity)

    def _decode_envelope(self, queue: str, raw: bytes | str, identity: str):
        """The envelope as kombu's consumer needs it, or None after dead-lettering it.

        Building the ``Message`` here is exactly what the consumer callback does next, so an envelope
        that would make it raise (no properties, a body that is not valid base64, …) is caught here."""
        try:
            payload = loads(bytes_to_str(raw))
            self.Message(payload, channel=self)
        except Exception as exc:  # noqa: BLE001 - anything undecodable is one bad message, not a dead worker
            self.dead_letter(queue, raw, f"undecodable envelope: {type(exc).__name__}: {str(exc)[:200]}",
                             identity)
            return None
        return payload


class FileChannel(DeadLetterChannel, filesystem.Channel):
    """kombu's filesystem channel with an atomic put, a rename-to-claim get, and dead letters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._listed: dict[str, deque[str]] = {}

    @cached_property
    def claimed_folder(self) -> str:
        folder = self.transport_options.get("claimed_folder") or os.path.join(self.data_folder_in, ".claimed")
        os.makedirs(folder, exist_ok=True)
        return folder

    @cached_property
    def dead_letter_folder(self) -> str:
        folder = (self.transport_options.get("dead_letter_folder")
                  or os.path.join(self.data_folder_in, ".dead-letter"))
        os.makedirs(folder, exist_ok=True)
        return folder

    def _put(self, queue, payload, **kwargs):
        """Write the message under a dot name no consumer lists, then rename it into place."""
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        data = str_to_bytes(dumps(payload))
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(temporary, final)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _candidates(self, queue: str) -> deque[str]:
        """This queue's message names, oldest first. One listing serves many gets: listing the folder
        for every message would make a burst of N messages cost N² directory entries."""
        pending = self._listed.get(queue)
        if not pending:
            wanted = f"{queue}.msg"  # kombu's names: <ms>_<uuid>.<queue>.msg
            pending = deque(sorted(name for name in os.listdir(self.data_folder_in)
                                   if not name.startswith(".") and name.partition(".")[2] == wanted))
            self._listed[queue] = pending
        return pending

    def _get(self, queue):
        pending = self._candidates(queue)
        while pending:
            name = pending.popleft()
            claimed = os.path.join(self.claimed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise filesystem.ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            if self.store_processed:
                os.replace(claimed, os.path.join(self.processed_folder, name))
            else:
                os.unlink(claimed)
            payload = self._decode_envelope(queue, raw, name)
            if payload is not None:
                return payload
        raise Empty()

    def _store_dead_letter(self, queue: str, record: str) -> None:
        name = f"{int(time.time() * 1000)}_{uuid.uuid4()}.{queue}.json"
        temporary = os.path.join(self.dead_letter_folder, f".{name}.tmp")
        with open(temporary, "w") as f:
            f.write(record)
        os.replace(temporary, os.path.join(self.dead_letter_folder, name))

    def dead_letter_count(self, queue: str) -> int:
        return sum(1 for name in os.listdir(self.dead_letter_folder)
                   if not name.startswith(".") and name.partition(".")[2] == f"{queue}.json")


class FileTransport(filesystem.Transport):
    Channel = FileChannel


class RedisChannel(DeadLetterChannel, kombu_redis.Channel):
    """kombu's Redis channel whose two reads move an undecodable envelope to ``<queue>.dead-letter``.

    The two methods are kombu 5.7's with ``loads`` replaced by ``_decode_envelope`` (and the pinned
    kombu version in requirements/base.txt is the one they were copied from)."""

    def _brpop_read(self, **options):
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                payload = self._decode_envelope(dest, item, f"{dest}[{len(item)} bytes]")
                if payload is not None:
                    self.connection._deliver(payload, dest)
                return True
            raise Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _get(self, queue):
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                while item := client.rpop(self._q_for_pri(queue, pri)):
                    payload = self._decode_envelope(queue, item, f"{queue}[{len(item)} bytes]")
                    if payload is not None:
                        self._maybe_update_queues_expire(client, queue)
                        return payload
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    def _store_dead_letter(self, queue: str, record: str) -> None:
        with self.conn_or_acquire() as client:
            client.lpush(f"{queue}{DEAD_LETTER_SUFFIX}", record)

    def dead_letter_count(self, queue: str) -> int:
        with self.conn_or_acquire() as client:
            return int(client.llen(f"{queue}{DEAD_LETTER_SUFFIX}"))


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
