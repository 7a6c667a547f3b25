"""The real stack for tests, the benchmark and scripts: a fresh database, the scripted model, a Celery
worker, beat and the API, each a separate process, torn down at the end.

Two modes, chosen by THREADLINE_TEST_MODE:
- ``production`` (default): PostgreSQL, Redis broker and notifications, gunicorn with gevent.
- ``embedded``: SQLite, Celery's filesystem broker, waiting by polling (what ``make run`` uses).

Each process is launched as devtools/processes.py's profile of the same name defines it, so the
suite tests what docker compose and ``make run`` run.

Every session gets its own database, queue name, notification channel and rate-limit prefix, so test
sessions (and developers) can share one PostgreSQL and one Redis.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx

from devtools import processes
from devtools.services import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
# The servers a production-mode stack uses; tests/conftest.py sets both (devtools/services.py) before
# importing this module, so they name whichever servers answer: the machine's or the PyPI ones in var/.
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except Exception:  # noqa: BLE001 - not ready yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process with its output in a log file that failures can show."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path):
        self.name, self.args, self.env = name, args, env
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no cleanup."""
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class Stack:
    def __init__(self, mode: str | None = None, pg_admin_url: str | None = None, redis_url: str | None = None,
                 **overrides: str):
        self.mode = mode or os.environ.get("THREADLINE_TEST_MODE", "production")
        self.pg_admin_url = pg_admin_url or PG_ADMIN_URL
        self.test_redis_url = redis_url or TEST_REDIS_URL
        self.tag = uuid.uuid4().hex[:10]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"threadline-{self.tag}-"))
        self.model_port, self.api_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.model_url = f"http://127.0.0.1:{self.model_port}"
        self.queue = f"runs-{self.tag}"
        if self.mode == "production":
            self.db_name = f"threadline_test_{self.tag}"
            self.database_url = self.pg_admin_url.rsplit("/", 1)[0] + "/" + self.db_name
            redis_url = self.test_redis_url
        else:
            self.db_name = ""
            self.database_url = f"sqlite:///{self.tmp / 'threadline.db'}"
            redis_url = ""
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url or "filesystem://",
            "BROKER_DIR": str(self.tmp / "broker"),
            "RUN_QUEUE": self.queue,
            "OPENAI_BASE_URL": f"{self.model_url}/v1",
            "OPENAI_API_KEY": "test",
            "SECRET_KEY": f"test-secret-{uuid.uuid4().hex}",  # production mode refuses a short key
            "WAIT_DEFAULT": "20",
            "WAIT_MAX": "30",
            "MODEL_TIMEOUT": "5",
            "MODEL_MAX_RETRIES": "2",
            "LEASE_SECONDS": "6",
            "QUEUED_STALE_SECONDS": "4",
            "SWEEP_INTERVAL": "1",
            "RUN_MAX_ATTEMPTS": "3",
            "RATE_LIMIT_DEFAULT": "100000/minute",
            "RATE_LIMIT_MESSAGES": "100000/minute",
            "RATE_LIMIT_LOGIN_IP": "100000/minute",  # every test logs in from 127.0.0.1
            "RATE_LIMIT_LOGIN_GLOBAL": "100000/minute",
            "SESSION_COOKIE_SECURE": "false",
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }
        self.processes: dict[str, Process] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def create_database(self) -> None:
        if self.mode == "production":
            from sqlalchemy import create_engine, text

            admin = create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
            admin.dispose()
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)

    def forget_redis_keys(self) -> None:
        """Remove this session's queue bindings and rate-limit counters from the shared Redis."""
        if self.mode != "production" or self.env["REDIS_URL"] != self.test_redis_url:
            return
        import redis

        client = redis.Redis.from_url(self.test_redis_url)
        for key in client.scan_iter(match=f"*{self.queue}*", count=1000):
            client.delete(key)
        client.close()

    def drop_database(self) -> None:
        if self.mode != "production":
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        admin.dispose()

    def start(self) -> "Stack":
        self.create_database()
        self.start_model()
        self.start_worker()
        self.start_beat()
        self.start_api()
        return self

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        from shared import db

        db.dispose()
        try:
            self.drop_database()
            self.forget_redis_keys()
        finally:
            if os.environ.get("KEEP_TEST_LOGS") is None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _spawn(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.env, self.tmp).start()
        self.processes[name] = process
        return process

    def start_model(self) -> Process:
        process = self._spawn("model", processes.model(port=self.model_port).argv())
        wait_until(lambda: httpx.get(f"{self.model_url}/healthz", timeout=1).status_code == 200, what="scripted model")
        return process

    def start_worker(self, name: str = "worker", concurrency: int | None = None, profile: str | None = None) -> Process:
        """A Celery worker as the mode's profile runs it (devtools/processes.py); bench passes its own."""
        command = processes.worker(processes.PROFILES[profile or self.mode], self.queue,
                                   hostname=f"{name}-{self.tag}@%h", concurrency=concurrency)
        process = self._spawn(name, command.argv())
        wait_until(lambda: "ready" in process.log_path.read_text(errors="replace"), timeout=30, what=f"{name} ready")
        return process

    def start_beat(self) -> Process:
        return self._spawn("beat", processes.beat(str(self.tmp / "beat-schedule")).argv())

    def start_api(self, workers: int | None = None) -> Process:
        """gunicorn as the mode's profile runs it: gevent with PostgreSQL + Redis, gthread with SQLite."""
        process = self._spawn("api", processes.api(processes.PROFILES[self.mode], f"127.0.0.1:{self.api_port}",
                                                   workers=workers).argv())
        wait_until(lambda: httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200, timeout=30, what="api")
        return process

    def demo_token(self) -> str:
        """A bearer token of the demo user, made by ``flask demo`` in this stack's own database: for a
        stack other than the session's, whose database the test process's shared.config does not name."""
        demo = subprocess.run([sys.executable, "-m", "flask", "--app", "api", "demo"], cwd=ROOT, env=self.env,
                              check=True, capture_output=True, text=True)
        return re.search(r"Token: (\S+)", demo.stdout).group(1)

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{p.tail()}" for name, p in self.processes.items())
