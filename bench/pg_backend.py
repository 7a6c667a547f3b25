"""PostgreSQL's backend CPU, WAL and buffers per message on the in-process loop (docs/performance.md,
"PostgreSQL's CPU per message"): 4 users x 2 threads, round robin, 25 messages per thread first, then
30 per thread measured (240 messages), each posted through the Flask test client (``Prefer: wait=0``)
and run with ``execute_run`` as bench/inprocess.py does. Prints one JSON line: the CPU of the pool's
backends (and of the whole cluster, walwriter included) from /proc, WAL bytes (``pg_current_wal_lsn``),
WAL flushes (``pg_stat_wal``), and pg_stat_statements' time, WAL records and buffers (``VERBOSE=1``:
per statement). Meant for a private cluster (not shared with anyone), with ``pg_stat_statements`` in
``shared_preload_libraries`` and created in its ``postgres`` database, and a long checkpoint_timeout
(no full-page images in the window):

    PGDATA_DIR=/tmp/pg BENCH_PG_ADMIN_URL=postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres \
        BENCH_REDIS_URL=redis://127.0.0.1:RPORT/0 BENCH_DB=pgb_a .venv/bin/python -m bench.pg_backend [--busy 6110]

Run it alternately on the two trees being compared (the machine's load moves every figure but the
WAL records and buffers).
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser(prog="python -m bench.pg_backend")
parser.add_argument("--busy", type=int, default=0, help="other runs in progress (another user's, long leases)")
parser.add_argument("--label", default="")
parser.add_argument("--ddl", help="SQL file run after the migrations")
parser.add_argument("--warm", type=int, default=25)
parser.add_argument("--measured", type=int, default=30)
args = parser.parse_args() if __name__ == "__main__" else None

import bench.inprocess as ip  # noqa: E402  (sets the environment and holds the helpers)

os.environ["MAX_ACTIVE_RUNS_PER_USER"] = "100000"
import psutil  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402


def cpu(pids):
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def main():
    import uuid

    import httpx

    ip._database()
    if args.ddl:
        eng = create_engine(ip.DATABASE_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.exec_driver_sql(open(args.ddl).read())
        eng.dispose()
    model = ip.subprocess.Popen([sys.executable, "-m", "scripted_model", "--host", "127.0.0.1", "--port",
                                 str(ip.MODEL_PORT)], cwd=os.getcwd(), env=os.environ,
                                stdout=ip.subprocess.DEVNULL, stderr=ip.subprocess.DEVNULL)
    admin = create_engine(ip.PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        ip.wait_until(lambda: httpx.get(f"http://127.0.0.1:{ip.MODEL_PORT}/healthz", timeout=1).status_code == 200,
                      what="scripted model")
        from api import create_app
        from shared.models import Status
        from shared.services import identity, messages, threads
        from worker.tasks import execute_run

        enqueued = []
        messages.enqueue_run = enqueued.append
        messages.enqueue_queued_run = lambda run_id, *rest: enqueued.append(run_id)
        client = create_app().test_client()
        users = []
        for _ in range(4):
            user = identity.create_user(f"{uuid.uuid4().hex[:12]}@example.com", f"t-{uuid.uuid4().hex[:8]}")
            token, _ = identity.create_token(user.email)
            principal = identity.authenticate_token(token)
            for _ in range(2):
                users.append((token, threads.create_thread(principal, title="bench").id))
        if args.busy:
            _busy(args.busy)

        def one(token, thread):
            r = client.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": "hello"},
                            headers={"Authorization": f"Bearer {token}", "Prefer": "wait=0"})
            assert r.status_code == 201, r.get_data(as_text=True)
            assert execute_run(str(enqueued[-1])) == Status.COMPLETED

        for _ in range(args.warm):
            for token, thread in users:
                one(token, thread)
        with admin.connect() as conn:
            pass  # no CHECKPOINT: checkpoint_timeout 1h, so no full-page images in the window
            data_dir = os.environ.get("PGDATA_DIR")  # the cluster's processes too (walwriter), when given
            postmaster = int(open(data_dir + "/postmaster.pid").readline()) if data_dir else None
            backends = [r[0] for r in conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": ip.DB_NAME})]
            cluster = [p.pid for p in psutil.Process(postmaster).children()] if postmaster else backends
            conn.execute(text("SELECT pg_stat_statements_reset()"))
            lsn0 = conn.execute(text("SELECT pg_current_wal_lsn()")).scalar()
            sync0 = conn.execute(text("SELECT wal_sync, wal_write FROM pg_stat_wal")).one()
            b0, c0, w0 = cpu(backends), cpu(cluster), time.monotonic()
            self0 = time.process_time()
        n = 0
        for _ in range(args.measured):
            for token, thread in users:
                one(token, thread)
                n += 1
        with admin.connect() as conn:
            b1, c1, w1 = cpu(backends), cpu(cluster), time.monotonic()
            self1 = time.process_time()
            sync1 = conn.execute(text("SELECT wal_sync, wal_write FROM pg_stat_wal")).one()
            wal = conn.execute(text("SELECT pg_current_wal_lsn() - CAST(:l AS pg_lsn)"), {"l": lsn0}).scalar()
            stmts = conn.execute(text(
                "SELECT calls, total_plan_time, total_exec_time, wal_records, wal_bytes, shared_blks_hit, "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements s JOIN pg_database d "
                "ON d.oid = s.dbid WHERE d.datname = :d ORDER BY total_exec_time + total_plan_time DESC LIMIT 12"),
                {"d": ip.DB_NAME}).all()
        out = {"label": args.label, "busy": args.busy, "n": n, "backends": len(backends),
               "backend_cpu_ms": round((b1 - b0) / n * 1000, 3), "cluster_cpu_ms": round((c1 - c0) / n * 1000, 3),
               "client_cpu_ms": round((self1 - self0) / n * 1000, 3),
               "wal_bytes": round(float(wal) / n), "wal_syncs": round((sync1[0] - sync0[0]) / n, 2),
               "wal_writes": round((sync1[1] - sync0[1]) / n, 2), "wall_ms": round((w1 - w0) / n * 1000, 2),
               "stmt_ms": round(sum(s[1] + s[2] for s in stmts) / n, 3),
               "stmt_wal_records": round(sum(s[3] for s in stmts) / n, 1),
               "stmt_blks_hit": round(sum(s[5] for s in stmts) / n, 1)}
        print(json.dumps(out))
        if os.environ.get("VERBOSE"):
            for s in stmts:
                print(f"  calls {s[0]:5d} plan {s[1]/n:6.3f} exec {s[2]/n:6.3f} ms/msg wal_rec {s[3]/n:5.1f} "
                      f"wal_b {float(s[4])/n:7.0f} hit {s[5]/n:6.1f}  {s[6]}")
    finally:
        model.terminate()
        model.wait(timeout=10)
        from shared import db

        db.dispose()
        admin.dispose()
        if not os.environ.get("KEEP_DB"):
            ip._drop_database()


def _busy(count):
    """``count`` runs in progress of another user (leases an hour out): what the sweeper and the
    partial indexes see on a busy system."""
    from shared import db as shared_db
    from sqlalchemy import text as t

    with shared_db.engine().begin() as conn:
        tenant = conn.execute(t("SELECT tenant_id FROM users LIMIT 1")).scalar()
        conn.execute(t("INSERT INTO users (id, tenant_id, email, permissions, created_at) "
                       "VALUES ('busy-user', :t, 'busy@example.com', '[]', now())"), {"t": tenant})
        conn.execute(t("INSERT INTO threads (public_id, tenant_id, user_id, title, last_seq, created_at, updated_at) "
                       "SELECT gen_random_uuid(), :t, 'busy-user', 'busy', 2, now(), now() FROM generate_series(1, :n)"),
                     {"t": tenant, "n": count})
        conn.execute(t("""
            WITH th AS (SELECT id FROM threads WHERE user_id = 'busy-user'),
            m AS (INSERT INTO messages (id, thread_id, seq, role, content, citations, "references", is_error, status,
                                        created_at, updated_at)
                  SELECT gen_random_uuid(), th.id, s, CASE s WHEN 1 THEN 'user' ELSE 'assistant' END, 'x', '[]', '[]',
                         false, CASE s WHEN 1 THEN 'completed' ELSE 'in_progress' END, now(), now()
                  FROM th, generate_series(1, 2) s RETURNING id, thread_id, seq)
            INSERT INTO runs (id, thread_id, user_id, request_message_id, response_message_id, status, attempts,
                              lease_owner, lease_expires_at, queued_at, started_at)
            SELECT gen_random_uuid(), q.thread_id, 'busy-user', q.id, a.id, 'in_progress', 1, 'busy-worker',
                   now() + interval '1 hour', now(), now()
            FROM m q JOIN m a ON a.thread_id = q.thread_id AND a.seq = 2 WHERE q.seq = 1"""))
        conn.execute(t("ANALYZE"))


if __name__ == "__main__":
    main()
