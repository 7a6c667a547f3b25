"""Runs spread over both worker hosts, and either API host serves the wait and the poll of a run that
finished on either worker host: API hosts share nothing but PostgreSQL and Redis."""
from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hosts.helpers import assert_exactly_once, new_thread, post, runs_of, wait_answered
from tests.hosts.ledger import LEDGER, percentile

pytestmark = pytest.mark.hosts

MESSAGES = 24


def test_runs_spread_over_both_worker_hosts_and_both_api_hosts_answer_for_either(hosts, clients):
    names = list(clients)
    threads = [new_thread(clients[names[i % 2]]) for i in range(MESSAGES)]
    keys = [uuid.uuid4().hex for _ in range(MESSAGES)]

    def send(i: int):  # posted on one API host, not waited for there
        return post(clients[names[i % 2]], threads[i], f"[[latency:1]] spread {i}", wait=0, key=keys[i])

    with ThreadPoolExecutor(8) as pool:
        posted = list(pool.map(send, range(MESSAGES)))
    assert [r.status_code for r in posted] == [201] * MESSAGES
    ids = [r.json()["createdMessage"]["id"] for r in posted]

    def wait_elsewhere(i: int):
        """The same post replayed (Idempotency-Key) on the *other* API host waits for the answer there:
        the run-finished wake-up crosses hosts through Redis."""
        started = time.monotonic()
        response = post(clients[names[(i + 1) % 2]], threads[i], f"[[latency:1]] spread {i}", wait=20, key=keys[i])
        return time.monotonic() - started, response

    with ThreadPoolExecutor(MESSAGES) as pool:
        waited = list(pool.map(wait_elsewhere, range(MESSAGES)))
    for seconds, response in waited:
        assert response.status_code == 201, response.text
        assert response.json()["responseMessage"]["status"] == "completed", response.json()
    assert [r.json()["createdMessage"]["id"] for _, r in waited] == ids  # replays, not new messages

    for i, response in enumerate(posted):  # the poll: each API host reads every answer
        location = f"/api/v1/ai/threads/{threads[i]}/messages/{response.json()['responseMessage']['id']}"
        for name in names:
            polled = clients[name].get(location)
            assert polled.status_code == 200 and polled.json()["status"] == "completed", polled.text

    rows = wait_answered(hosts, ids)
    assert_exactly_once(rows)
    by_host = Counter(run["host"] for run in runs_of(hosts, ids).values())
    assert set(by_host) == {"wrk1", "wrk2"}, f"runs did not spread over both worker hosts: {by_host}"
    waits = [seconds for seconds, _ in waited]
    LEDGER.measure("spread", messages=MESSAGES, runs_per_worker_host=dict(sorted(by_host.items())),
                   cross_host_wait_p50_s=percentile(waits, 0.5), cross_host_wait_max_s=max(waits))
