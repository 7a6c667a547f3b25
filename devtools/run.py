"""``make run``'s supervisor: start the scripted model, the worker, beat and the API, keep them running.

honcho (what ``make run`` used before) stops every process when one exits, so one crashed worker ended
the whole stack and left every pending answer ``queued``. This supervisor instead:

- restarts a process that exits, after a backoff that doubles from ``backoff`` up to ``backoff_cap``
  seconds and starts again from ``backoff`` once the process has run ``stable_after`` seconds;
- says in the log what died and why: the exit code, or the signal that killed it;
- gives up when a process crashes ``max_crashes`` times within ``crash_window`` seconds (a crash loop:
  a broken configuration, a port in use), stops everything and exits 1 — never a silent half-alive stack;
- on Ctrl-C or SIGTERM stops every process (SIGTERM to its process group, SIGKILL after
  ``stop_timeout``) and exits 0. Children also get SIGTERM if the supervisor itself is killed (Linux).

Each output line of a child is prefixed with the time and its name, as honcho did.
The processes are devtools/processes.py's embedded profile.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devtools import processes

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'killed by signal SIGKILL (9)', as an operator wants to read it."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {name} ({-returncode})"
    return f"exited with code {returncode}"


# Loaded here, not in the child: between fork and exec only a plain call is safe (dlopen takes a lock
# that another thread of the supervisor may hold at the moment of the fork).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, so a killed supervisor leaves no
    orphaned stack behind."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when a dead child is due to start again
    failures_in_a_row: int = 0
    crashes: list[float] = field(default_factory=list)  # monotonic times of recent exits
    restarts: int = 0


class Supervisor:
    def __init__(self, commands: dict[str, list[str]], *, env: dict[str, str] | None = None, cwd: Path = ROOT,
                 out: IO[str] = sys.stdout, backoff: float = 1.0, backoff_cap: float = 30.0,
                 stable_after: float = 30.0, max_crashes: int = 5, crash_window: float = 60.0,
                 stop_timeout: float = 10.0):
        self.children = [Child(name, argv) for name, argv in commands.items()]
        self.env = dict(os.environ if env is None else env)
        self.cwd, self.out = cwd, out
        self.backoff, self.backoff_cap, self.stable_after = backoff, backoff_cap, stable_after
        self.max_crashes, self.crash_window, self.stop_timeout = max_crashes, crash_window, stop_timeout
        self.stopping = threading.Event()
        self._write_lock = threading.Lock()
        self._width = max([3, *map(len, commands)])

    # -- output ----------------------------------------------------------------------------------
    def say(self, name: str, line: str) -> None:
        with self._write_lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name:<{self._width}} | {line}\n")
            self.out.flush()

    def log(self, line: str) -> None:
        self.say("run", line)

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(child.name, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True,  # Ctrl-C reaches only us; we forward it
                                      preexec_fn=_die_with_parent)
        child.started_at, child.restart_at = time.monotonic(), None
        threading.Thread(target=self._pump, args=(child, child.proc.stdout), daemon=True,
                         name=f"pump-{child.name}").start()
        self.log(f"started {child.name} (pid {child.proc.pid})")

    def _handle_exit(self, child: Child, returncode: int) -> bool:
        """Schedule the restart of a dead child; False when it is in a crash loop."""
        now = time.monotonic()
        ran = now - child.started_at
        child.failures_in_a_row = 1 if ran >= self.stable_after else child.failures_in_a_row + 1
        child.crashes = [t for t in child.crashes if now - t < self.crash_window] + [now]
        pid = child.proc.pid
        child.proc = None
        if len(child.crashes) >= self.max_crashes:
            self.log(f"{child.name} (pid {pid}) {describe_exit(returncode)} after {ran:.1f}s; it died "
                     f"{len(child.crashes)} times within {self.crash_window:.0f}s: a crash loop, stopping everything")
            return False
        delay = min(self.backoff_cap, self.backoff * 2 ** (child.failures_in_a_row - 1))
        child.restart_at = now + delay
        child.restarts += 1
        self.log(f"{child.name} (pid {pid}) {describe_exit(returncode)} after {ran:.1f}s; "
                 f"restarting in {delay:.1f}s (restart {child.restarts})")
        return True

    def run(self) -> int:
        """Start everything and supervise until stopped (0) or a crash loop (1)."""
        for child in self.children:
            self.start(child)
        code = 0
        while not self.stopping.is_set():
            for child in self.children:
                if child.proc is not None:
                    returncode = child.proc.poll()
                    if returncode is not None and not self.stopping.is_set() and not self._handle_exit(child, returncode):
                        code = 1
                        self.stopping.set()
                        break
                elif child.restart_at is not None and time.monotonic() >= child.restart_at:
                    self.start(child)
            self.stopping.wait(0.2)
        self.stop_all()
        return code

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if signum is not None and not self.stopping.is_set():
            self.log(f"got {signal.Signals(signum).name}; stopping everything")
        self.stopping.set()

    def stop_all(self) -> None:
        """SIGTERM each process group (API first, so no new work comes in), then SIGKILL the stragglers."""
        running = [c for c in reversed(self.children) if c.proc is not None and c.proc.poll() is None]
        for child in running:
            try:
                os.killpg(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                self.log(f"stopped {child.name} (pid {child.proc.pid}, {describe_exit(child.proc.returncode)})")
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} (pid {child.proc.pid}) ignored SIGTERM for {self.stop_timeout:.0f}s; SIGKILL")
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.proc.wait()


def answering_model_line(settings) -> str:
    """Which model answers a message that names none, and where: the first thing ``make run`` says, so
    nobody wonders whether OpenAI or the scripted development model wrote an answer."""
    entry = settings.answering_model
    if entry is None:
        return (f"answering model: DEFAULT_MODEL_ID={settings.default_model_id} is not in the registry "
                f"({', '.join(sorted(settings.models))}); messages that name no model fall back to the first")
    if entry.base_url.rstrip("/") == settings.scripted_model_url:
        return (f"answering model: {entry.id} — the scripted development model at {entry.base_url} "
                "(set OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL for another server)")
    return f"answering model: {entry.id} (model {entry.model}) at {entry.base_url}; key from ${entry.api_key_env}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default=os.environ.get("API_BIND", "127.0.0.1:8000"))
    parser.add_argument("--queue", default=os.environ.get("RUN_QUEUE", "runs"))
    parser.add_argument("--schedule", default="var/beat-schedule", help="beat's schedule file")
    parser.add_argument("--max-crashes", type=int, default=5)
    parser.add_argument("--crash-window", type=float, default=60.0)
    args = parser.parse_args(argv)
    (ROOT / args.schedule).parent.mkdir(parents=True, exist_ok=True)
    from shared.config import settings

    commands = {name: command.argv() for name, command in
                processes.local_processes(args.bind, args.queue, args.schedule,
                                          with_model=settings.uses_scripted_model).items()}
    supervisor = Supervisor(commands, max_crashes=args.max_crashes, crash_window=args.crash_window)
    supervisor.log(answering_model_line(settings))
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    code = supervisor.run()
    supervisor.log("all processes stopped" if code == 0 else "gave up after a crash loop (exit 1)")
    return code


if __name__ == "__main__":
    sys.exit(main())
