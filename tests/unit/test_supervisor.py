"""make run's supervisor (devtools/run.py) on real child processes: a killed child comes back and the
log says what killed it, a crash loop ends the supervisor with 1 and takes everything down, a stop
request stops every child."""
from __future__ import annotations

import io
import os
import signal
import sys
import threading

import pytest

from devtools.run import Supervisor, describe_exit
from devtools.stack import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
CRASHER = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]


class Running:
    """A supervisor running in a thread of the test, with its log in memory."""

    def __init__(self, commands: dict[str, list[str]], **options):
        self.out = io.StringIO()
        self.supervisor = Supervisor(commands, out=self.out, backoff=0.05, backoff_cap=0.2, **options)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.supervisor.run()

    def __enter__(self) -> "Running":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.supervisor.request_stop()
        self.thread.join(timeout=20)

    def log(self) -> str:
        return self.out.getvalue()

    def pid(self, name: str) -> int | None:
        child = next(c for c in self.supervisor.children if c.name == name)
        return child.proc.pid if child.proc is not None and child.proc.poll() is None else None


def test_describe_exit_names_the_signal_or_the_code():
    assert describe_exit(-9) == "killed by signal SIGKILL (9)"
    assert describe_exit(-15) == "killed by signal SIGTERM (15)"
    assert describe_exit(3) == "exited with code 3"


def test_a_killed_child_is_restarted_and_the_log_says_why():
    with Running({"worker": SLEEPER, "api": SLEEPER}) as running:
        first = wait_until(lambda: running.pid("worker"), what="worker started")
        api_pid = wait_until(lambda: running.pid("api"), what="api started")
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: (pid := running.pid("worker")) != first and pid, what="worker restarted")
        assert second != first
        assert running.pid("api") == api_pid  # the others are left alone
        assert f"worker (pid {first}) killed by signal SIGKILL (9)" in running.log()
        assert "restarting in 0.1s (restart 1)" in running.log()
        assert f"started worker (pid {second})" in running.log()
    assert running.code == 0


def test_a_crash_loop_stops_everything_and_exits_1():
    with Running({"api": SLEEPER, "model": CRASHER}, max_crashes=3, crash_window=30) as running:
        running.thread.join(timeout=20)
        assert not running.thread.is_alive()
        assert running.code == 1
        log = running.log()
        assert log.count("exited with code 3") == 3
        assert "died 3 times within 30s: a crash loop, stopping everything" in log
        assert "model | boom" in log  # the child's own output, prefixed with its name
        assert "stopped api" in log
        api = next(c for c in running.supervisor.children if c.name == "api")
        assert api.proc.poll() is not None


def test_a_stop_request_stops_every_child():
    with Running({"a": SLEEPER, "b": SLEEPER}) as running:
        pids = [wait_until(lambda name=name: running.pid(name), what=name) for name in ("a", "b")]
    assert running.code == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
