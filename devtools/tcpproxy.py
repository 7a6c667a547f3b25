"""The test harnesses' one TCP proxy: a forwarder (threads in the test process) in front of a server,
where the faults between a client and that server are made.

Both fault harnesses use it:
- the fault suite (tests/faults) puts one on loopback in front of PostgreSQL; ``cut()`` behaves like
  the server stopping (open connections drop, new ones are refused) and ``restore()`` brings it back
  on the same port;
- the hosts suite (tests/hosts, devtools/netns.py) puts one on each host link's root-side addresses,
  in front of PostgreSQL and Redis: how the namespaces reach the servers, and where the network's
  loss and delay are made (``faults``), since this kernel has no ``tc netem``.
"""
from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field

IP_FREEBIND = 15  # Linux: bind to an address that is not (or not yet, or no longer) on an interface


@dataclass
class LinkFaults:
    """What the link the proxy stands for does to traffic. All zero: a clean link.

    ``loss``: share of chunks (read()s, each one or more TCP segments) that are "lost": held for
    ``rto`` seconds, the retransmission timeout after which TCP sends a lost segment again (Linux's
    minimum is 200 ms); the bytes still arrive, in order, because TCP never loses them for good.
    ``reset``: share of chunks after which the connection is cut (both sides get a reset), the worst
    that loss does. ``delay``: seconds added to every chunk (a delay spike while it is non-zero)."""

    loss: float = 0.0
    rto: float = 0.2
    reset: float = 0.0
    delay: float = 0.0


@dataclass
class LinkStats:
    connections: int = 0
    chunks: int = 0
    lost: int = 0
    resets: int = 0
    delayed: int = 0
    counts_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def figures(self) -> dict[str, int]:
        return {"connections": self.connections, "chunks": self.chunks, "lost_chunks": self.lost,
                "reset_connections": self.resets, "delayed_chunks": self.delayed}


class TcpProxy:
    """Listen on ``(address, port)`` and forward each connection to ``upstream``.

    ``port`` 0 takes a free one, kept across ``cut()`` and ``restore()``. The listener binds with
    IP_FREEBIND, so its address may leave the interface and come back (a host cut from Redis)."""

    def __init__(self, upstream: tuple[str, int], address: str = "127.0.0.1", port: int = 0, seed: int = 0):
        self.upstream, self.address, self.port = upstream, address, port
        self.faults = LinkFaults()
        self.stats = LinkStats()
        self.cuts = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        listener.bind((self.address, self.port))
        self.port = listener.getsockname()[1]
        listener.listen(512)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name=f"proxy-{self.address}:{self.port}").start()
        return self

    def cut(self) -> None:
        """New connections are refused and every open one drops, as when the server stops."""
        self.cuts += 1
        self.stop()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = list(self._sockets), set()
        if listener is not None:
            listener.close()
        for sock in doomed:
            _close(sock)

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    # -- forwarding ------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or stopped: the listener was closed
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
            with self.stats.counts_lock:
                self.stats.connections += 1
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target, client, server), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, client: socket.socket,
              server: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                faults = self.faults
                hold, cut = faults.delay, False
                with self.stats.counts_lock:
                    self.stats.chunks += 1
                    draw = self._random.random()
                    if draw < faults.reset:
                        self.stats.resets += 1
                        cut = True
                    elif draw < faults.reset + faults.loss:
                        self.stats.lost += 1
                        hold += faults.rto
                    if faults.delay:
                        self.stats.delayed += 1
                if cut:
                    _reset(client), _reset(server)
                    return
                if hold:
                    time.sleep(hold)
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
            _close(source), _close(target)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a connection broken by the network ends."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)  # wakes the other pump's recv() without sending a FIN
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
