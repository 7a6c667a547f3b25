"""A worker host whose clock runs an hour ahead joins the deployment: it cannot take over runs whose
leases are live, neither through a duplicate delivery nor by sweeping them as "expired".

Leases are stamped and compared with the database's clock (shared/services/runs.py,
``database_now``); the worker's own clock plays no part. (Before that change, this worker's claims
and its sweeps — beat's sweep task runs on any worker — saw every lease as expired an hour early.)
The in-process version of this test, with both directions of skew, is tests/core/test_core_lease_clock.py.
"""
from __future__ import annotations

from collections import Counter

import pytest
from celery import Celery
from sqlalchemy import text

from devtools.stack import wait_until
from tests.hosts.helpers import assert_exactly_once, new_thread, post, runs_of, task_results, wait_answered
from tests.hosts.ledger import LEDGER

pytestmark = pytest.mark.hosts

SKEW_SECONDS = 3600
DUPLICATES = 5  # extra deliveries of every run's task while the runs are in progress


def test_a_worker_host_with_its_clock_an_hour_ahead_takes_no_live_run(hosts, clients, monkeypatch):
    hosts.stack.processes.pop("worker-wrk2").stop()
    skewed = hosts.start_worker("wrk2", module="tests.hosts.skewed_worker",
                                env={"CLOCK_SKEW_SECONDS": str(SKEW_SECONDS)})
    try:
        assert "worker clock skewed by 1:00:00" in skewed.log_path.read_text()
        threads = [new_thread(clients["api1"]) for _ in range(6)]
        ids = [post(clients[("api1", "api2")[i % 2]], t, f"[[latency:6]] skewed {i}").json()["createdMessage"]["id"]
               for i, t in enumerate(threads)]
        wait_until(lambda: (found := runs_of(hosts, ids)) and len(found) == len(ids)
                   and all(r["status"] == "in_progress" for r in found.values()),
                   timeout=30, what="every run in progress")
        with hosts.db.connect() as conn:
            run_ids = list(conn.scalars(text("SELECT id::text FROM runs WHERE request_message_id::text = ANY(:ids)"),
                                        {"ids": ids}))
        monkeypatch.setenv("CELERY_BROKER_URL", hosts.stack.env["REDIS_URL"])  # Celery prefers the variable
        sender = Celery("duplicates", broker=hosts.stack.env["REDIS_URL"])
        sender.conf.task_default_queue = hosts.stack.queue
        try:
            for run_id in run_ids * DUPLICATES:
                sender.send_task("threadline.execute_run", args=[run_id], queue=hosts.stack.queue)
        finally:
            sender.close()
        LEDGER.fault("duplicate_delivery", len(run_ids) * DUPLICATES)
        LEDGER.fault("worker_clock_skew")

        rows = wait_answered(hosts, ids, timeout=60)
        assert_exactly_once(rows)
        runs = runs_of(hosts, ids)
        assert all(run["attempts"] == 1 for run in runs.values()), runs  # nobody took a live run over
        results = task_results(skewed)
        assert results["skipped"] > 0, f"no duplicate reached the skewed worker: {results}"
        sweeps = skewed.log_path.read_text().count("threadline.sweep_stale_runs") // 2
        assert "re-enqueued" not in skewed.log_path.read_text()
        LEDGER.measure("clock_skew", skew_s=SKEW_SECONDS, runs=len(ids), duplicates_sent=len(run_ids) * DUPLICATES,
                       runs_per_worker_host=dict(Counter(run["host"] for run in runs.values())),
                       skewed_worker_task_results=dict(results), sweeps_run_by_skewed_worker=sweeps,
                       takeovers=sum(run["attempts"] - 1 for run in runs.values()))
    finally:
        hosts.stack.processes.pop("worker-wrk2").stop()
        hosts.start_worker("wrk2")
