"""Fault-injection plumbing that never touches the machine's shared services.

- ``PrivateRedis``: a redis-server of our own on a free port, so tests can really stop and restart
  the broker (and the rate-limit and notification store) without disturbing anyone else.

The TCP proxy between the stack and the real PostgreSQL is devtools/tcpproxy.py's ``TcpProxy``, the
one the hosts suite puts on its links: ``cut()`` behaves like the database server stopping (open
connections drop and new ones are refused), ``restore()`` brings it back on the same port.
"""
from __future__ import annotations

import os
import sys
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


def log(line: str) -> None:
    """Progress lines for ``pytest -s``; harmless otherwise."""
    print(f"[faults] {line}", file=sys.stderr, flush=True)
