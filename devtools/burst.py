"""Bursts against the embedded stack as ``make run`` starts it: the acceptance check of issue 10.

``python -m devtools.burst --bursts 100`` starts ``make run``'s supervisor (devtools/run.py: scripted
model, worker, beat, API) on free ports with its own SQLite file and broker folder in a temporary
directory, so it runs beside a developer's ``make run``. It makes 8 users, then repeats: each user posts
20 messages at once (``Prefer: wait=0``, spread over 4 threads of their own), and the answers are polled
until every one has finished. It never stops at the first error: it counts every non-2xx answer and
every answer that did not complete, and at the end says whether the worker's pid ever changed (the
supervisor restarts a dead process, and says so in its log).

One progress line per burst; exit status 0 only when nothing failed. The message rate limits are
lifted (8 users x 20 posts per burst is far above ``RATE_LIMIT_MESSAGES``); everything else is the
embedded default. tests/integration/test_embedded_broker.py runs the same bursts, 20 of them, in the
test suite.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from devtools.stack import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
FINISHED = ("completed", "failed", "cancelled")


class Errors:
    """Every failure, counted by kind, with the first few bodies kept for the report."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []
        self._lock = threading.Lock()

    def add(self, kind: str, detail: str = "") -> None:
        with self._lock:
            self.counts[kind] += 1
            if len(self.samples) < 10:
                self.samples.append(f"{kind}: {detail[:300]}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class EmbeddedStack:
    """``python -m devtools.run`` in a temporary directory, on free ports; its output in run.log."""

    def __init__(self, keep: bool) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="threadline-burst-"))
        self.keep = keep
        api_port, model_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{api_port}"
        self.database_url = f"sqlite:///{self.tmp / 'threadline.db'}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url, "REDIS_URL": "", "CELERY_BROKER_URL": "",
            "BROKER_DIR": str(self.tmp / "broker"),
            "SCRIPTED_MODEL_PORT": str(model_port), "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
            "RATE_LIMIT_MESSAGES": "1000000/minute", "RATE_LIMIT_DEFAULT": "1000000/minute",
            "PYTHONUNBUFFERED": "1",
        }
        self.bind = f"127.0.0.1:{api_port}"
        self.log_path = self.tmp / "run.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.run", "--bind", self.bind, "--schedule", str(self.tmp / "beat-schedule")],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, timeout=60, what="api")
        wait_until(lambda: self.worker_pids(), timeout=30, what="worker")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Every pid the supervisor started the worker with: one, unless it died and was restarted."""
        return [int(pid) for pid in re.findall(r"started worker \(pid (\d+)\)", self.log())]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the supervisor stops its children
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def make_users(database_url: str, count: int) -> list[str]:
    """Tokens of ``count`` new users, each in a tenant of their own, written straight to the stack's file."""
    os.environ["DATABASE_URL"] = database_url  # read by shared.config on its import, below
    from shared.services import identity

    tokens = []
    for _ in range(count):
        email = f"burst-{uuid.uuid4().hex[:12]}@example.com"
        identity.create_user(email, f"tenant-{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
        tokens.append(identity.create_token(email)[0])
    return tokens


def run_bursts(url: str, tokens: list[str], bursts: int, posts: int, threads_per_user: int, errors: Errors,
               on_burst) -> int:
    """The bursts; returns the number of answers that completed."""
    clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                            # idle connections dropped before gunicorn's 5 s keep-alive ends, so a POST never
                            # goes out on a connection the server is closing (httpx does not resend a POST)
                            limits=httpx.Limits(keepalive_expiry=2.0)) for token in tokens]
    threads = []
    for c in clients:
        for _ in range(threads_per_user):
            response = c.post("/api/v1/ai/threads", json={"title": "burst"})
            response.raise_for_status()
            threads.append((c, response.json()["id"]))
    per_thread = posts // threads_per_user
    completed = 0

    def post(item):
        c, thread, content = item
        try:
            response = c.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": content},
                              headers={"Prefer": "wait=0"})
        except httpx.HTTPError as exc:
            errors.add(f"post {type(exc).__name__}", str(exc))
            return None
        if response.status_code != 201:
            errors.add(f"post {response.status_code}", response.text)
            return None
        return c, thread, response.json()["responseMessage"]["id"]

    def statuses(c, thread) -> dict[str, str]:
        found: dict[str, str] = {}
        page = 1
        while True:  # newest burst's answers may straddle pages; read them all (cheap: few threads pending)
            try:
                response = c.get(f"/api/v1/ai/threads/{thread}/messages", params={"per_page": 100, "page": page})
            except httpx.HTTPError as exc:
                errors.add(f"poll {type(exc).__name__}", str(exc))
                return found
            if response.status_code != 200:
                errors.add(f"poll {response.status_code}", response.text)
                return found
            body = response.json()
            found.update({m["id"]: m["status"] for m in body["data"] if m["role"] == "assistant"})
            if len(body["data"]) < 100:
                return found
            page += 1

    for number in range(bursts):
        plan = [(c, t, f"burst {number} post {i}") for i in range(per_thread) for c, t in threads]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            accepted = [a for a in pool.map(post, plan) if a is not None]
        posting = time.monotonic() - started
        pending: dict[tuple, set[str]] = collections.defaultdict(set)
        for c, t, answer in accepted:
            pending[(c, t)].add(answer)
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            time.sleep(0.5)
            for key in list(pending):
                seen = statuses(*key)
                for answer in list(pending[key]):
                    if seen.get(answer) in FINISHED:
                        pending[key].discard(answer)
                        if seen[answer] == "completed":
                            completed += 1
                        else:
                            errors.add(f"answer {seen[answer]}", answer)
                if not pending[key]:
                    del pending[key]
        for key, answers in pending.items():
            for answer in answers:
                errors.add("answer unfinished after 300 s", answer)
        on_burst(number, len(plan), len(accepted), posting, time.monotonic() - started)
    for c in clients:
        c.close()
    return completed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bursts", type=int, default=100)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--posts", type=int, default=20, help="posts per user per burst")
    parser.add_argument("--threads-per-user", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    args = parser.parse_args(argv)

    stack = EmbeddedStack(args.keep)
    errors = Errors()
    began = time.monotonic()
    print(f"embedded stack in {stack.tmp}, API {stack.url}", flush=True)
    try:
        stack.start()
        first_pid = stack.worker_pids()[0]
        tokens = make_users(stack.database_url, args.users)
        print(f"worker pid {first_pid}; {args.bursts} bursts of {args.users} users x {args.posts} posts", flush=True)

        def on_burst(number, planned, accepted, posting, elapsed):
            load = os.getloadavg()[0]
            print(f"burst {number + 1:>3}/{args.bursts}: {accepted}/{planned} accepted in {posting:5.1f} s, all "
                  f"finished after {elapsed:5.1f} s; errors so far {errors.total}; load {load:.1f}; "
                  f"{time.monotonic() - began:.0f} s in", flush=True)

        completed = run_bursts(stack.url, tokens, args.bursts, args.posts, args.threads_per_user, errors, on_burst)
        pids = stack.worker_pids()
        alive = stack.proc is not None and stack.proc.poll() is None
        took = time.monotonic() - began
        expected = args.bursts * args.users * args.posts
        print(f"\n{completed}/{expected} answers completed; {errors.total} errors {dict(errors.counts)}; "
              f"worker pids {pids} ({'unchanged' if len(pids) == 1 else 'CHANGED'}); supervisor "
              f"{'running' if alive else 'EXITED'}; {took:.0f} s in all", flush=True)
        for sample in errors.samples:
            print(f"  {sample}")
        suspicious = [line for line in stack.log().splitlines()
                      if re.search(r"Traceback|database is locked|Unrecoverable|restarting|ERROR|CRITICAL", line)]
        for line in suspicious[:30]:
            print(f"  log: {line[:300]}")
        print(f"{len(suspicious)} suspicious log lines")
        return 0 if errors.total == 0 and completed == expected and len(pids) == 1 and alive else 1
    finally:
        stack.stop()
        if args.keep:
            print(f"kept {stack.tmp}")
        else:
            import shutil

            shutil.rmtree(stack.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
