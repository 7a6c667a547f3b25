"""Fault-injection plumbing that never touches the machine's shared services.

- ``PrivateRedis``: a redis-server of our own on a free port, so tests can really stop and restart
  the broker (and the rate-limit and notification store) without disturbing anyone else.
- ``TcpProxy``: a small TCP forwarder (threads in the test process) between the stack and the real
  PostgreSQL. ``cut()`` behaves like the database server stopping: open connections drop and new
  ones are refused; ``restore()`` brings it back on the same port.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import redis

from devtools import services
from devtools.stack import Process, free_port, wait_until


class PrivateRedis:
    """A throw-away redis-server without persistence: a restart loses everything it held, which is
    the harshest case (queued tasks vanish) and proves the database is the source of truth."""

    def __init__(self, logdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = Process("redis", [
            services.redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(logdir), "--protected-mode", "no",
        ], env=dict(os.environ), logdir=logdir)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def start(self) -> "PrivateRedis":
        self.process.start()
        wait_until(self.ping, timeout=10, what="private redis")
        return self

    def stop(self) -> None:
        self.process.stop()
        wait_until(lambda: not self.ping(), timeout=10, what="private redis down")

    def restart(self) -> None:
        self.stop()
        self.start()


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; cut() and restore() simulate the upstream stopping."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(512)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="pg-proxy-accept").start()
        return self

    def cut(self) -> None:
        """New connections are refused and every open one drops, as when the server stops."""
        self.cuts += 1
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = list(self._sockets), set()
        if listener is not None:
            listener.close()
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        self.start()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    # -- forwarding ------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener was closed
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while we were connecting
                    _close(client), _close(server)
                    continue
                self._sockets.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
            _close(source), _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def log(line: str) -> None:
    """Progress lines for ``pytest -s``; harmless otherwise."""
    print(f"[faults] {line}", file=sys.stderr, flush=True)
