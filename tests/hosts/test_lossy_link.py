"""Loss and delay spikes on one worker host's link while both API hosts take load.

The link proxies of ``wrk1`` (to PostgreSQL and to Redis) lose 5% of chunks (each held for a
200 ms retransmission timeout, as TCP resends a lost segment), reset a few connections outright,
and add 300 ms to every chunk for one second in every three (the spikes). Every run is answered,
none twice; the latency percentiles of the waiting posts are recorded next to a clean baseline.
"""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.tcpproxy import LinkFaults
from tests.hosts.helpers import assert_exactly_once, new_thread, runs_of, timed_post, wait_answered
from tests.hosts.ledger import LEDGER, percentile

pytestmark = pytest.mark.hosts

LOSS, RESET, RTO = 0.05, 0.003, 0.2
SPIKE_DELAY, SPIKE_EVERY, SPIKE_FOR = 0.3, 3.0, 1.0
BASELINE, LOADED, CONCURRENCY = 24, 60, 12


def load(clients, count: int, label: str) -> list[tuple[float, object]]:
    """``count`` waiting posts, each in its own thread of conversation, spread over both API hosts."""
    names = list(clients)
    threads = [new_thread(clients[names[i % 2]]) for i in range(count)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(lambda i: timed_post(clients[names[i % 2]], threads[i],
                                                  f"[[latency:0.3]] {label} {i}", 30), range(count)))


def latency_figures(results, prefix: str) -> dict:
    seconds = [s for s, _ in results]
    return {f"{prefix}_p50_s": percentile(seconds, 0.5), f"{prefix}_p99_s": percentile(seconds, 0.99),
            f"{prefix}_max_s": max(seconds)}


def test_loss_and_delay_spikes_on_a_worker_link_lose_nothing(hosts, clients):
    baseline = load(clients, BASELINE, "clean")
    proxies = hosts.proxies["wrk1"].values()
    before = {name: proxy.stats.figures() for name, proxy in hosts.proxies["wrk1"].items()}
    lossy = LinkFaults(loss=LOSS, rto=RTO, reset=RESET)
    spiking = LinkFaults(loss=LOSS, rto=RTO, reset=RESET, delay=SPIKE_DELAY)
    stop = threading.Event()

    def spikes():
        while not stop.wait(SPIKE_EVERY - SPIKE_FOR):
            for proxy in proxies:
                proxy.faults = spiking
            stop.wait(SPIKE_FOR)
            for proxy in proxies:
                proxy.faults = lossy

    for proxy in proxies:
        proxy.faults = lossy
    LEDGER.fault("worker_link_loss_and_delay")
    spiker = threading.Thread(target=spikes, daemon=True)
    spiker.start()
    try:
        loaded = load(clients, LOADED, "lossy")
    finally:
        stop.set()
        spiker.join()
        for proxy in proxies:
            proxy.faults = LinkFaults()

    every = baseline + loaded
    statuses = Counter(r.status_code if r is not None else "no response" for _, r in every)
    assert set(statuses) == {201}, statuses
    ids = [r.json()["createdMessage"]["id"] for _, r in every]
    rows = wait_answered(hosts, ids, timeout=120)
    assert_exactly_once(rows)
    loaded_runs = runs_of(hosts, [r.json()["createdMessage"]["id"] for _, r in loaded])
    by_host = Counter(run["host"] for run in loaded_runs.values())
    assert by_host["wrk1"] > 0, f"the lossy worker host ran nothing: {by_host}"
    link = {name: {k: v - before[name][k] for k, v in proxy.stats.figures().items()}
            for name, proxy in hosts.proxies["wrk1"].items()}
    assert sum(figures["lost_chunks"] for figures in link.values()) > 0
    pending = sum(1 for _, r in loaded if r.json()["responseMessage"]["status"] != "completed")
    LEDGER.measure("lossy_worker_link", loss=LOSS, rto_s=RTO, reset_per_chunk=RESET,
                   spike_delay_s=SPIKE_DELAY, spike_every_s=SPIKE_EVERY, spike_for_s=SPIKE_FOR,
                   concurrency=CONCURRENCY, baseline_posts=BASELINE, loaded_posts=LOADED,
                   **latency_figures(baseline, "clean_wait"), **latency_figures(loaded, "lossy_wait"),
                   lossy_answers_pending_at_wait_end=pending,
                   lossy_runs_per_worker_host=dict(sorted(by_host.items())),
                   attempts=dict(Counter(run["attempts"] for run in loaded_runs.values())),
                   wrk1_link=link)
