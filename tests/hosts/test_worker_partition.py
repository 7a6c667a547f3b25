"""A worker host partitioned (its link down) while it holds runs in progress.

The partitioned worker can neither renew its leases nor store its answers. Once its leases expire
(``LEASE_SECONDS`` after the last renewal), beat's sweeper queues the runs again and the other worker
host claims them (attempt 2). The link comes back while the partitioned worker is still in its model
calls: its next lease renewal (or its final write) finds the runs no longer its and stores nothing,
and it goes on taking new work. The model call is long (``LATENCY``) so that the partitioned
worker's writes really come after the takeover, which is the case a lease exists for.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

from devtools.stack import wait_until
from tests.hosts.helpers import assert_exactly_once, new_thread, post, runs_of, task_results, wait_answered
from tests.hosts.ledger import LEDGER

pytestmark = pytest.mark.hosts

LATENCY = 16  # seconds of model call: the partition, the takeover and the heal fall inside it


def test_a_partitioned_worker_hosts_runs_are_finished_once_by_the_other(hosts, clients):
    threads = [new_thread(clients["api1"]) for _ in range(8)]
    ids = [post(clients[("api1", "api2")[i % 2]], t, f"[[latency:{LATENCY}]] across the partition {i}")
           .json()["createdMessage"]["id"] for i, t in enumerate(threads)]
    runs = wait_until(lambda: (found := runs_of(hosts, ids)) and len(found) == len(ids)
                      and all(r["status"] == "in_progress" and r["host"] for r in found.values()) and found,
                      timeout=30, what="every run in progress on a worker host")
    victim, _ = Counter(r["host"] for r in runs.values()).most_common(1)[0]
    survivor = {"wrk1": "wrk2", "wrk2": "wrk1"}[victim]
    held = [i for i, r in runs.items() if r["host"] == victim]
    victim_worker = hosts.stack.processes[f"worker-{victim}"]
    before = task_results(victim_worker)

    hosts.topology[victim].partition()
    LEDGER.fault("worker_host_partition")
    cut_at = time.monotonic()
    try:
        wait_until(lambda: all(r["attempts"] == 2 and r["host"] == survivor
                               for r in runs_of(hosts, held).values()),
                   timeout=60, interval=0.2, what=f"{survivor} taking over {victim}'s runs")
        takeover = time.monotonic() - cut_at
    finally:
        hosts.topology[victim].heal()
    healed_at = time.monotonic()

    # Its late writes, now that it reaches the database again: refused, its tasks end without
    # storing anything (lease lost; or skipped/rejected when a retry finds the run taken).
    def refused():
        results = task_results(victim_worker) - before
        return sum(results[r] for r in ("lease-lost", "skipped", "rejected")) >= len(held) and results
    results = wait_until(refused, timeout=90, interval=0.5, what="the partitioned worker's late writes")
    late_writes_refused = time.monotonic() - healed_at
    assert results["completed"] == 0, f"the partitioned worker stored an answer: {results}"

    rows = wait_answered(hosts, ids, timeout=60)
    answered = time.monotonic() - cut_at
    assert_exactly_once(rows)
    after = runs_of(hosts, ids)
    for message_id in held:
        run = after[message_id]
        assert run["attempts"] == 2 and run["host"] == survivor, run
        assert run["step_attempts"] == [2], "the partitioned attempt must not store steps"
        assert "across the partition" in run["content"]
    assert all(after[i]["attempts"] == 1 for i in ids if i not in held)

    # ... and it takes new work again.
    def victim_took_one():
        thread = new_thread(clients["api2"])
        message_id = post(clients["api2"], thread, "[[latency:0.5]] back again", wait=10).json()["createdMessage"]["id"]
        fresh.append(message_id)
        return runs_of(hosts, [message_id])[message_id]["host"] == victim
    fresh: list[str] = []
    wait_until(victim_took_one, timeout=120, interval=0.2, what=f"{victim} taking new work after the partition")
    back = time.monotonic() - healed_at
    assert_exactly_once(wait_answered(hosts, fresh))

    LEDGER.measure("worker_partition", runs_in_flight=len(ids), runs_on_partitioned_host=len(held),
                   lease_seconds=int(hosts.stack.env["LEASE_SECONDS"]), model_latency_s=LATENCY,
                   partition_to_takeover_s=takeover, partition_to_all_answered_s=answered,
                   heal_to_late_writes_refused_s=late_writes_refused,
                   heal_to_new_work_on_partitioned_host_s=back,
                   partitioned_worker_task_results=dict(results))
