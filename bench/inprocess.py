"""CPU per message in one process: the post and the worker's run, measured apart.

``make bench`` measures every process at once and is noisy on a shared machine; this loop isolates
the Python side of one message. Production mode (PostgreSQL + Redis as separate servers, not
counted), the scripted model as a subprocess on a free port (not counted). Each message is posted
through the Flask test client with ``Prefer: wait=0`` (authentication included) and its run is then
executed by calling the worker's task body (``execute_run``) directly, as tests/core/test_round_trips.py
does: no Celery consumer, no broker (the run id handed to the broker is recorded instead).

    .venv/bin/python -m bench.inprocess -n 200            # process_time per message: post, run
    .venv/bin/python -m bench.inprocess -n 200 --gevent   # as the bench worker runs (gevent pool)
    .venv/bin/python -m bench.inprocess -n 200 --profile run --out /tmp/run.prof   # cProfile of the runs
    PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \\
        --callgrind-out-file=/tmp/cg.%p .venv/bin/python -m bench.inprocess -n 20 --callgrind
        # --callgrind runs `callgrind_control -i on` before the loop and `-i off` after it, so only the
        # measured messages are counted (not imports, migrations, warm-up); --part run|post brackets one part.
        # The main thread's count is in /tmp/cg.<pid>-01 (`callgrind_annotate` it); the other files are
        # the lease keeper, the cancel watch and the like, whose share grows with wall time under valgrind.
    .venv/bin/python -m bench.inprocess -n 60 --posts-only --callgrind   # (under valgrind as above)
        # the API's post alone, as docs/performance.md "The API's CPU per post" counts it: the runs are
        # left queued and the post enqueues for real (run.queued and the task in one Redis pipeline).

Environment: ``BENCH_PG_ADMIN_URL`` (default postgres@127.0.0.1:5432), ``BENCH_REDIS_URL`` (default
redis db 9), ``BENCH_DB`` (default ``wpath_inproc``, created and migrated to head when missing),
``BENCH_MODEL_PORT`` (the scripted model's port; default: a free one).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="messages measured")
    parser.add_argument("--warmup", type=int, default=5, help="messages before the measurement")
    parser.add_argument("--per-thread", type=int, default=50, help="messages per thread (then a new thread)")
    parser.add_argument("--gevent", action="store_true", help="gevent monkey patching, as the bench worker")
    parser.add_argument("--profile", choices=("run", "post", "both"), help="cProfile this part of the loop")
    parser.add_argument("--out", default="/tmp/inprocess.prof", help="where --profile writes its stats")
    parser.add_argument("--callgrind", action="store_true", help="bracket the loop with callgrind_control -i on/off")
    parser.add_argument("--part", choices=("run", "post", "both"), default="both", help="what --callgrind counts")
    parser.add_argument("--posts-only", action="store_true",
                        help="post only, with the real enqueue (the runs stay queued; the queue is emptied at the end)")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--backend-cpu", action="store_true",
                        help="also the CPU of the pool's PostgreSQL backends per part (/proc/<pid>/schedstat; "
                             "the server must run on this machine, readable by this user)")
    return parser.parse_args(argv)


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.gevent:
    from gevent import monkey

    monkey.patch_all()

from devtools.stack import free_port, wait_until  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
DB_NAME = os.environ.get("BENCH_DB", "wpath_inproc")
MODEL_PORT = int(os.environ.get("BENCH_MODEL_PORT") or free_port())
DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME

# Before shared.config is imported anywhere: it reads the environment once.
os.environ.update({
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "CELERY_BROKER_URL": REDIS_URL,
    "RUN_QUEUE": f"runs-{DB_NAME}",
    "OPENAI_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}/v1",
    "OPENAI_API_KEY": "bench",
    "SECRET_KEY": "bench-inprocess-secret-" + "x" * 32,
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_MESSAGES": "1000000/minute",
    "MAX_ACTIVE_RUNS_PER_USER": "0",
    "LOG_LEVEL": "WARNING",
})


def _database() -> None:
    """The bench's database at head: created when missing, then ``alembic upgrade head`` (a no-op when current)."""
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


def _backend_pids() -> list[int]:
    """The PostgreSQL backends of the bench's database: the pool's (the asking one is one of them)."""
    from sqlalchemy import text

    from shared import db

    with db.engine().connect() as conn:
        return list(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
                    .scalars())


def _backend_ns(pids: list[int]) -> int:
    """CPU time the backends have run, in ns (schedstat's first field: precise, unlike stat's ticks)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def main(args: argparse.Namespace) -> None:
    import uuid

    import httpx

    _database()
    model = subprocess.Popen([sys.executable, "-m", "scripted_model", "--host", "127.0.0.1", "--port", str(MODEL_PORT)],
                             cwd=ROOT, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{MODEL_PORT}/healthz", timeout=1).status_code == 200,
                   what="scripted model")
        _loop(args, uuid)
    finally:
        model.terminate()
        model.wait(timeout=10)
        from shared import db

        db.dispose()
        if not args.keep_db:
            _drop_database()


def _loop(args: argparse.Namespace, uuid) -> None:
    import cProfile
    import statistics

    from api import create_app
    from shared.models import Status
    from shared.services import identity, messages, threads
    from worker.tasks import execute_run

    enqueued: list = []
    messages.enqueue_run = enqueued.append  # the bench's stand-in for the broker (as tests/core does)
    queued_run = messages.enqueue_queued_run

    def enqueue_queued_run(run_id, *ids):  # the post's own path (run.queued + task, one Redis round trip),
        enqueued.append(run_id)  # kept in the measured post; the task it pushes is left unconsumed
        return queued_run(run_id, *ids)

    messages.enqueue_queued_run = enqueue_queued_run
    user = identity.create_user(f"{uuid.uuid4().hex[:12]}@example.com", f"t-{uuid.uuid4().hex[:8]}")
    token, _ = identity.create_token(user.email)
    principal = identity.authenticate_token(token)
    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {token}", "Prefer": "wait=0"}
    thread_id = None
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall time

    def post() -> None:
        response = client.post(f"/api/v1/ai/threads/{thread_id}/messages", json={"content": "hello"}, headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)

    def run() -> None:
        assert execute_run(str(enqueued[-1])) == Status.COMPLETED

    pids: list[int] = []
    backend: dict[str, list[float]] = {"post": [], "run": []}

    def measured(part: str, body) -> float:
        on = args.callgrind and args.part in (part, "both")
        prof = profiler if args.profile in (part, "both") else None
        if on:
            _callgrind(True)
        if prof:
            prof.enable()
        backend_before = _backend_ns(pids) if pids else 0
        started = time.process_time()
        body()
        spent = time.process_time() - started
        if pids:
            backend[part].append((_backend_ns(pids) - backend_before) / 1e9)
        if prof:
            prof.disable()
        if on:
            _callgrind(False)
        return spent

    posts: list[float] = []
    runs: list[float] = []
    if args.posts_only:  # one thread (a post reads none of its history) and one callgrind bracket
        thread_id = threads.create_thread(principal, title="bench").id
        for _ in range(args.warmup):
            post()
        posts = [measured("post", lambda: [post() for _ in range(args.n)]) / args.n]
    for i in range(0 if args.posts_only else args.warmup + args.n):
        if i % args.per_thread == 0:  # a thread grows with every message: keep the prompt's history bounded
            thread_id = threads.create_thread(principal, title="bench").id
        if i < args.warmup:
            post(), run()
            continue
        if args.backend_cpu and i % args.per_thread == 0 or not pids and args.backend_cpu:
            pids = _backend_pids()  # after the new thread's transaction: the pool's connections as they are
        posts.append(measured("post", post))
        runs.append(measured("run", run))
    if profiler:
        profiler.dump_stats(args.out)
    if args.posts_only:
        from shared.config import settings
        from shared.queue import celery_app

        with celery_app().connection_for_write() as conn:
            conn.default_channel.client.delete(settings.run_queue)
        print(f"process_time per post, {args.n} posts after {args.warmup} warm-up (runs left queued):")
        print(f"post  mean {posts[0] * 1000:7.3f} ms")
        return

    def line(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (f"{name:5s} mean {statistics.fmean(ms):7.3f} ms  median {statistics.median(ms):7.3f}  "
                f"p90 {sorted(ms)[int(len(ms) * 0.9)]:7.3f}")

    total = [p + r for p, r in zip(posts, runs)]
    print(f"process_time per message, {args.n} messages after {args.warmup} warm-up"
          f"{' (gevent)' if args.gevent else ''}:")
    print(line("post", posts))
    print(line("run", runs))
    print(line("total", total))
    if args.backend_cpu:
        print(f"PostgreSQL backends' CPU per message ({len(pids)} backends):")
        print(line("post", backend["post"]))
        print(line("run", backend["run"]))
    if profiler:
        print(f"cProfile of {args.profile}: {args.out}")


if __name__ == "__main__":
    main(ARGS)
