"""CPU per message, every process listed: the API, the workers, beat, PostgreSQL, Redis, the model stub
and the load generator, over a scenario's window, divided by the answers completed (issue 14).

A sampler thread reads user + system CPU of every process of each role once a second (and at the
window's start and end), so processes that start or stop inside the window (prefork children,
pooled PostgreSQL backends) are counted too: a process's share is its last reading minus its first,
or its last reading whole if it appeared after the window began. The arithmetic lives in pure
functions (``window_seconds``, ``per_answer_ms``, ``postgres_role``), unit-tested in
tests/unit/test_bench.py.

PostgreSQL is shared with other users of the machine: its backends are counted only when their
process title names one of the bench's databases; the server's own processes (postmaster, WAL
writer, checkpointer, background writer, autovacuum) are counted as ``postgres (server)`` and may
include others' work. Redis is the bench's own server (bench/__main__.py starts it), so it is exact.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import psutil

Reading = dict[str, dict[int, float]]  # role -> pid -> CPU seconds so far

POSTGRES_SERVER_TITLES = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication",
                          "stats collector", "archiver", "io worker")


def postgres_role(cmdline: list[str], databases: tuple[str, ...]) -> str | None:
    """Which role a postgres process plays for the bench: a backend of one of its databases, a server
    process, or None (another database's backend, not ours to count)."""
    title = " ".join(cmdline)
    if not title.startswith("postgres: "):
        return "postgres (server)"  # the postmaster: "/usr/lib/postgresql/15/bin/postgres -c …"
    words = title.split()
    if any(name in words for name in databases):
        return "postgres (backends)"
    if any(marker in title for marker in POSTGRES_SERVER_TITLES):
        return "postgres (server)"
    return None


def window_seconds(readings: list[Reading]) -> dict[str, float]:
    """CPU seconds per role between the first and the last reading. A pid seen first after the
    window began counts from zero (it started inside the window); a pid that vanished keeps its
    last reading."""
    if not readings:
        return {}
    first = readings[0]
    last_seen: dict[str, dict[int, float]] = {}
    for reading in readings:
        for role, pids in reading.items():
            last_seen.setdefault(role, {}).update(pids)
    totals = {}
    for role, pids in last_seen.items():
        start = first.get(role, {})
        totals[role] = round(sum(max(0.0, cpu - start.get(pid, 0.0)) for pid, cpu in pids.items()), 4)
    return totals


def per_answer_ms(seconds: dict[str, float], answers: int) -> dict[str, float]:
    """Milliseconds of CPU per answer for each role, and their ``total``."""
    answers = max(1, answers)
    figures = {role: round(cpu * 1000 / answers, 2) for role, cpu in sorted(seconds.items())}
    figures["total"] = round(sum(seconds.values()) * 1000 / answers, 2)
    return figures


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


class Sampler:
    """Reads the roles' CPU once a second in a thread while a scenario runs.

    ``roles`` maps a role to a function returning its root pids (each counted with its children);
    ``databases`` are the bench's PostgreSQL databases."""

    def __init__(self, roles: dict[str, Callable[[], list[int]]], databases: tuple[str, ...], interval: float = 1.0):
        self.roles, self.databases, self.interval = roles, databases, interval
        self.readings: list[Reading] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = self.ended = 0.0

    def read(self) -> Reading:
        reading: Reading = {}
        for role, pids in self.roles.items():
            found = reading.setdefault(role, {})
            for pid in pids():
                try:
                    for process in tree(pid):
                        found[process.pid] = _cpu(process)
                except psutil.Error:
                    pass
        for process in psutil.process_iter(["name", "cmdline"]):
            try:
                if process.info["name"] != "postgres" and not (process.info["cmdline"] or [""])[0].startswith("postgres"):
                    continue
                role = postgres_role(process.info["cmdline"] or [], self.databases)
                if role:
                    reading.setdefault(role, {})[process.pid] = _cpu(process)
            except psutil.Error:
                pass
        return reading

    def __enter__(self) -> "Sampler":
        self.started = time.monotonic()
        self.readings.append(self.read())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.readings.append(self.read())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.readings.append(self.read())
        self.ended = time.monotonic()

    def seconds(self, extra: dict[str, float] | None = None) -> dict[str, float]:
        """CPU seconds per role over the window; ``extra`` adds roles measured elsewhere (the load
        generator reports its own)."""
        return {**window_seconds(self.readings), **(extra or {})}
