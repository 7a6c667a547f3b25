"""Real hosts on one machine: Linux network namespaces joined to the root namespace by veth pairs.

Each host is a network namespace ``tlh-<name>`` (its own interfaces, addresses, routes and sockets)
with one veth link to the root namespace, where PostgreSQL and Redis run on 127.0.0.1. The link is
``10.231.<n>.0/29``:

- ``10.231.<n>.2`` is the host's own address (inside the namespace; an API host listens on it);
- ``10.231.<n>.1`` is the host's way to PostgreSQL (and ``.3`` its way to Redis): addresses on the
  root side of the link where a ``TcpProxy`` of the harness (devtools/tcpproxy.py, the fault suite's
  proxy too) listens and forwards to 127.0.0.1.

The servers stay where they are; the proxies are how the namespaces reach them, and the place where
the network's faults are made, since ``tc netem`` is missing from this kernel:

- a **partition** of a host is its link set down (``ip link set ... down``): packets vanish, open TCP
  connections hang and new ones time out, exactly as when a switch port dies;
- a partition **from Redis only** removes the ``.3`` address from the root side: the host still
  reaches PostgreSQL, its packets to Redis are silently dropped;
- **loss and delay** are the link proxies' ``LinkFaults`` (devtools/tcpproxy.py): a lost packet
  inside TCP is a segment retransmitted after the retransmission timeout, so the proxy holds a chunk
  for an RTO; a delay spike holds every chunk; a small share of connections is reset outright (the
  worst case of loss).

Everything is named ``tlh-*`` and addressed in ``10.231.0.0/16``, traffic only flows between the
harness's own namespaces and the root namespace's loopback servers, and ``Topology.down()`` (also run
at the start, for a crashed previous run) removes every namespace, link and process it made. Needs
root and iproute2 with ``ip netns``; ``unavailable()`` says why not.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "tlh-"  # every namespace and link of the harness, so a crashed run's leftovers are recognisable
SUBNET = "10.231"
LOCK_PATH = Path("/run/threadline-netns.lock")  # one topology per machine at a time


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why this machine cannot build the topology (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run make test-hosts as root)"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    probe = _ip("netns", "list", check=False)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.strip()}"
    return None


@dataclass
class Host:
    """One namespace and its link. ``index`` numbers the link's /29."""

    name: str
    index: int

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def link(self) -> str:  # the root namespace's end of the veth pair (interface names: 15 chars at most)
        return f"{PREFIX}{self.name}"

    @property
    def inner_link(self) -> str:
        return f"{PREFIX}{self.name}-i"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}.2"

    @property
    def database_gateway(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def redis_gateway(self) -> str:
        return f"{SUBNET}.{self.index}.3"

    def argv(self, args: list[str]) -> list[str]:
        """``args`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    # -- faults ----------------------------------------------------------------------------------
    def partition(self) -> None:
        """The host's link goes down: nothing reaches it and it reaches nothing."""
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.link, "up")

    def cut_redis(self) -> None:
        """Only Redis becomes unreachable: its address leaves the link, packets to it vanish."""
        _ip("addr", "del", f"{self.redis_gateway}/29", "dev", self.link)

    def restore_redis(self) -> None:
        _ip("addr", "add", f"{self.redis_gateway}/29", "dev", self.link)


class Topology:
    """The namespaces and links of ``hosts``; ``up()`` builds them, ``down()`` removes them."""

    def __init__(self, names: list[str]):
        self.hosts = {name: Host(name, index) for index, name in enumerate(names, start=1)}
        self._lock_file = None

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def up(self, lock_timeout: float = 900) -> "Topology":
        self._lock(lock_timeout)
        remove_leftovers()
        try:
            for host in self.hosts.values():
                _ip("netns", "add", host.netns)
                _ip("-n", host.netns, "link", "set", "lo", "up")
                _ip("link", "add", host.link, "type", "veth", "peer", "name", host.inner_link, "netns", host.netns)
                _ip("addr", "add", f"{host.database_gateway}/29", "dev", host.link)
                _ip("addr", "add", f"{host.redis_gateway}/29", "dev", host.link)
                _ip("link", "set", host.link, "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/29", "dev", host.inner_link)
                _ip("-n", host.netns, "link", "set", host.inner_link, "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        try:
            remove_leftovers()
        finally:
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None

    def _lock(self, timeout: float) -> None:
        """Two runs on one machine would remove each other's namespaces: the second one waits."""
        handle = open(LOCK_PATH, "w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_file = handle
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise TimeoutError(f"another host topology holds {LOCK_PATH}")
                time.sleep(1)


def remove_leftovers() -> list[str]:
    """Every ``tlh-*`` namespace (its processes killed first) and root-side link: this run's at the
    end, a crashed run's at the start. Returns what it removed."""
    removed = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pids = _ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", name, check=False)
        removed.append(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        if name.startswith(PREFIX) and _ip("link", "del", name, check=False).returncode == 0:
            removed.append(name)  # (deleting one end of a veth pair deletes the other)
    return removed


if __name__ == "__main__":  # python -m devtools.netns clean: remove a crashed run's namespaces by hand
    import sys

    if sys.argv[1:] != ["clean"]:
        sys.exit("usage: python -m devtools.netns clean")
    print("\n".join(remove_leftovers()) or "nothing to remove")
