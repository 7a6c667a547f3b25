"""The API's side of a waited post (``Prefer: wait=N``), in one process, with a real worker elsewhere.

bench/inprocess.py posts with ``wait=0`` and runs the task in the same process, so it never exercises
the wait: the run-finished wake-up, the waiter's looks at the answer, the answer's read and rendering.
Here the posts go through the Flask test client in this process (authentication included) while a
Celery worker (production profile, its own process, not measured) answers them from the queue, and
the scripted model (its own process) answers after ``--latency`` seconds, so the waiter is parked
before the run finishes, as under load (with ``--latency 0`` the run may finish before the waiter
registers: the other path). Production mode: PostgreSQL and Redis as separate servers.

Printed: ``process_time`` per waited post, the SQL statements this process sent per answer (by
kind), and the waiter's looks per answer.

    .venv/bin/python -m bench.waited -n 100
    PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \\
        --callgrind-out-file=/tmp/cgw.%p .venv/bin/python -m bench.waited -n 20 --callgrind
        # the main thread (the request) is /tmp/cgw.<pid>-01; the run-finished listener is a thread of
        # its own (its file names it in `callgrind_annotate`'s header); the re-check thread wakes on a
        # timer and is left out.

Environment: ``BENCH_PG_ADMIN_URL`` (default postgres@127.0.0.1:5432), ``BENCH_REDIS_URL`` (default
redis db 9), ``BENCH_DB`` (default ``waited_bench``), ``BENCH_MODEL_PORT`` (default a free port).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.waited", description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100, help="waited posts measured")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--per-thread", type=int, default=40, help="posts per thread (then a new thread)")
    parser.add_argument("--latency", type=float, default=1.0, help="the scripted model's latency, seconds")
    parser.add_argument("--dialect", choices=("ai", "v1", "chats"), default="ai")
    parser.add_argument("--callgrind", action="store_true", help="bracket the loop with callgrind_control -i on/off")
    parser.add_argument("--profile", help="write a cProfile (CPU time) of the measured posts here")
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args(argv)


ARGS = _args() if __name__ == "__main__" else None

from devtools import processes  # noqa: E402
from devtools.stack import free_port, wait_until  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
DB_NAME = os.environ.get("BENCH_DB", "waited_bench")
MODEL_PORT = int(os.environ.get("BENCH_MODEL_PORT") or free_port())
DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
QUEUE = f"runs-{DB_NAME}-{uuid.uuid4().hex[:6]}"

API_NAME = "bench-waited-api"  # the application_name of this process's connections (the worker's have none)
os.environ.update({  # before shared.config is imported anywhere
    "DATABASE_URL": DATABASE_URL + f"?application_name={API_NAME}",
    "REDIS_URL": REDIS_URL,
    "CELERY_BROKER_URL": REDIS_URL,
    "RUN_QUEUE": QUEUE,
    "OPENAI_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}/v1",
    "OPENAI_API_KEY": "bench",
    "SECRET_KEY": "bench-waited-secret-" + "x" * 32,
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_MESSAGES": "1000000/minute",
    "MAX_ACTIVE_RUNS_PER_USER": "0",
    "WAIT_MAX": "60",
    "LOG_LEVEL": "WARNING",
    "SESSION_COOKIE_SECURE": "false",
})


def _database() -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DB_NAME}).scalar() is None:
            conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=os.environ, check=True,
                   capture_output=True)


def _drop_database() -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    admin.dispose()


def _callgrind(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(args: argparse.Namespace) -> None:
    import httpx

    _database()
    logs = open(f"/tmp/bench-waited-{QUEUE}.log", "w")
    model = subprocess.Popen(processes.model("127.0.0.1", MODEL_PORT).argv() + ["--latency", str(args.latency)],
                             cwd=ROOT, env=os.environ, stdout=logs, stderr=subprocess.STDOUT)
    worker = subprocess.Popen(processes.worker(processes.PROFILES["production"], QUEUE, concurrency=2).argv(),
                              cwd=ROOT, env={**os.environ, "DATABASE_URL": DATABASE_URL}, stdout=logs, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{MODEL_PORT}/healthz", timeout=1).status_code == 200,
                   what="scripted model")
        wait_until(lambda: "ready" in open(logs.name).read(), timeout=60, what="worker ready")
        _loop(args)
    finally:
        for process in (worker, model):
            process.terminate()
            process.wait(timeout=20)
        from shared import db

        db.dispose()
        if not args.keep_db:
            _drop_database()
        import redis

        client = redis.Redis.from_url(REDIS_URL)  # this run's queue, event logs and channel keys
        for key in client.scan_iter(match=f"*{QUEUE}*", count=1000):
            client.delete(key)
        client.close()


def _backend_ticks() -> dict[int, int]:
    """utime + stime (clock ticks) of PostgreSQL's backends serving this process (/proc: same machine)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                            {"n": API_NAME}).scalars().all()
    admin.dispose()
    ticks = {}
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def _kind(statement: str) -> str:
    text = " ".join(statement.split())
    if text.startswith("PREPARE"):
        return "PREPARE"
    for marker, kind in (("api_tokens", "auth"), ("run_steps", "answer"), ("FOR UPDATE", "post: lock"),
                         ("INSERT INTO messages", "post: insert"), ("runs.status NOT IN", "re-check")):
        if marker in text:
            return kind
    return text[:60]


def _loop(args: argparse.Namespace) -> None:
    import statistics

    from sqlalchemy import event

    from api import create_app
    from shared import db, notify
    from shared.services import identity, threads

    user = identity.create_user(f"{uuid.uuid4().hex[:12]}@example.com", f"t-{uuid.uuid4().hex[:8]}")
    token, _ = identity.create_token(user.email)
    principal = identity.authenticate_token(token)
    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {token}", "Prefer": "wait=30"}
    statements: Counter = Counter()
    counting = False

    @event.listens_for(db.engine(), "before_cursor_execute")
    def _count(_conn, _cursor, statement, _params, _context, _many):
        if counting:
            statements[_kind(statement)] += 1

    looks = Counter()
    wait_for_run = notify.wait_for_run

    def counted_wait(run_id, timeout, is_done):
        def look():
            done = is_done()
            if counting:
                looks["looks"] += 1
                looks["finished" if done else "unfinished"] += 1
            return done
        return wait_for_run(run_id, timeout, look)

    notify.wait_for_run = counted_wait
    thread = None

    def post() -> None:
        if args.dialect == "ai":
            url, body = f"/api/v1/ai/threads/{thread.id}/messages", {"content": "hello"}
        elif args.dialect == "v1":
            url, body = f"/v1/threads/{thread.public_id}/user_message", {"content": {"text": "hello"}}
        else:
            url, body = f"/api/chats/{thread.public_id}/messages", {"content": "hello", "userId": principal.user_id}
        response = client.post(url, json=body, headers=headers)
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        text = response.get_data(as_text=True)
        assert '"completed"' in text or '"COMPLETED"' in text, text

    import cProfile

    profiler = cProfile.Profile(time.process_time) if args.profile else None
    spent: list[float] = []
    backends_before: dict[int, int] = {}
    for i in range(args.warmup + args.n):
        if i % args.per_thread == 0:
            thread = threads.create_thread(principal, title="bench")
        if i < args.warmup:
            post()
            if i == args.warmup - 1:
                backends_before = _backend_ticks()
            continue
        counting = True
        if args.callgrind:
            _callgrind(True)
        if profiler:
            profiler.enable()
        started = time.process_time()
        post()
        spent.append(time.process_time() - started)
        if profiler:
            profiler.disable()
        if args.callgrind:
            _callgrind(False)
        counting = False
    backends_after = _backend_ticks()
    backend_ms = sum(t - backends_before.get(pid, 0) for pid, t in backends_after.items()) * 1000 / os.sysconf("SC_CLK_TCK")
    if profiler:
        profiler.dump_stats(args.profile)
    ms = [s * 1000 for s in spent]
    print(f"waited posts ({args.dialect}), {args.n} after {args.warmup} warm-up, model latency {args.latency} s:")
    print(f"process_time per post (main thread's share and the listener's): mean {statistics.fmean(ms):.3f} ms, "
          f"median {statistics.median(ms):.3f}")
    print("statements per answer: " + ", ".join(f"{k} {v / args.n:.2f}" for k, v in statements.most_common()))
    print(f"PostgreSQL backends of this process: {backend_ms / args.n:.3f} ms CPU per answer "
          f"({len(backends_after)} backends; the worker's not counted)")
    print(f"the waiter's looks per answer: {looks['looks'] / args.n:.2f} "
          f"(finding the answer {looks['finished'] / args.n:.2f}, not yet {looks['unfinished'] / args.n:.2f})")


if __name__ == "__main__":
    main(ARGS)
