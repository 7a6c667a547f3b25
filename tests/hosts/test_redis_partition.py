"""An API host partitioned from Redis (its packets to Redis vanish; PostgreSQL still answers) while
clients wait on it.

Redis carries an API host's enqueues, run-finished wake-ups and rate-limit counters, never its
answers. Cut off from it, the host still stores every post (the sweeper, next to the servers,
enqueues what the host could not), and its waiting requests re-read the database every few seconds
(shared/notify.py's safety re-check) instead of waiting for a wake-up that cannot come. A client
gets its answer, or a 201 with the answer pending, never a 5xx. Once the link is back, waits are
woken by Redis again.

Finding (docs/reliability.md, "Several hosts"): an API host cut off from Redis used to *hang* its
requests: flask-limiter's Redis storage was the one Redis client in the request path without a socket
timeout, so its INCR on a connection whose packets vanish waited for TCP to give up (minutes). The
limiter now has socket timeouts (api/__init__.py). The first test runs the partition as configured;
the second with socket timeouts in the API host's REDIS_URL as well, the earlier workaround.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.stack import wait_until
from tests.hosts.helpers import assert_exactly_once, new_thread, runs_of, timed_post, wait_answered
from tests.hosts.ledger import LEDGER, percentile

pytestmark = pytest.mark.hosts

WAIT = 25  # what the clients ask for: longer than a fallback to the database needs
PENDING = ("queued", "in_progress")
# The workaround: every Redis client of the API host gives up on a silent link within seconds. Its
# cost: the run-finished listener's blocking read times out too when no run finishes for a while,
# and it reconnects, so some wake-ups are late and waits fall back to the 3-second re-check.
REDIS_TIMEOUTS = "socket_timeout=3&socket_connect_timeout=2"


def outcome(response) -> str:
    if response is None:
        return "no response"
    if response.status_code != 201:
        return str(response.status_code)
    return response.json()["responseMessage"]["status"]


def wave(client, threads: list[int], label: str, latency: float) -> list[tuple[float, object]]:
    with ThreadPoolExecutor(len(threads)) as pool:
        return list(pool.map(lambda t: timed_post(client, t, f"[[latency:{latency}]] {label}", WAIT), threads))


def partition_from_redis(hosts, client: httpx.Client, test: str) -> None:
    host = hosts.topology["api1"]
    threads = [new_thread(client) for _ in range(12)]

    before = wave(client, threads[:4], "before the cut", 0.5)  # the baseline
    with ThreadPoolExecutor(4) as pool:  # waiting on api1 when the cut happens
        waiting = pool.submit(wave, client, threads[4:8], "waiting through the cut", 3)
        time.sleep(1)  # the posts are in, their answers in progress: then the cut
        host.cut_redis()
        LEDGER.fault("api_host_redis_partition")
        cut_at = time.monotonic()
        try:
            during = wave(client, threads[8:12], "posted during the cut", 0.5)
            through = waiting.result()
            cut_lasted = time.monotonic() - cut_at
        finally:
            host.restore_redis()
    restored_at = time.monotonic()
    every = before + through + during
    outcomes = [outcome(r) for _, r in every]
    LEDGER.measure(test, wait_asked_s=WAIT, cut_lasted_s=cut_lasted,
                   outcomes={o: outcomes.count(o) for o in sorted(set(outcomes))},
                   wait_before_cut_max_s=max(s for s, _ in before),
                   wait_through_cut_max_s=max(s for s, _ in through),
                   wait_posted_during_cut_p50_s=percentile([s for s, _ in during], 0.5),
                   wait_posted_during_cut_max_s=max(s for s, _ in during))
    assert all(o == "completed" or o in PENDING for o in outcomes), \
        [(round(s, 1), o) for (s, _), o in zip(every, outcomes)]  # no 5xx, no failed or hung request
    assert all(outcome(r) == "completed" for _, r in through), [outcome(r) for _, r in through]

    def woken_again():  # a wait answered as fast as before the cut: the wake-up path is back
        seconds, response = timed_post(client, new_thread(client), "[[latency:0.5]] after the cut", WAIT)
        after.append((seconds, response))
        return outcome(response) == "completed" and seconds < max(s for s, _ in before) + 1.0
    after: list[tuple[float, object]] = []
    wait_until(woken_again, timeout=60, interval=0.5, what="waits answered as before the cut")
    LEDGER.measure(test, restore_to_waits_as_before_s=time.monotonic() - restored_at)

    ids = [r.json()["createdMessage"]["id"] for _, r in every + after]
    assert_exactly_once(wait_answered(hosts, ids, timeout=60))
    assert all(run["status"] == "completed" for run in runs_of(hosts, ids).values())


def test_as_configured_an_api_host_cut_from_redis_still_answers(hosts, clients):
    token = clients["api1"].headers["Authorization"]
    with httpx.Client(base_url=hosts.api_urls["api1"], headers={"Authorization": token},
                      timeout=WAIT + 10) as client:  # a hung request shows as "no response" after this
        partition_from_redis(hosts, client, "api_redis_partition_as_configured")


def test_with_redis_socket_timeouts_waits_fall_back_to_the_database(hosts, clients):
    hosts.restart_api("api1", redis_query=REDIS_TIMEOUTS)
    try:
        partition_from_redis(hosts, clients["api1"], "api_redis_partition_with_socket_timeouts")
    finally:
        hosts.restart_api("api1")
