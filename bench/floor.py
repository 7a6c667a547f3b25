"""The machine's floor: the round trips every message needs at least, measured on this machine now.

Every benchmark figure is also reported as a ratio to these, so results from noisy or different machines
can be compared.
"""
from __future__ import annotations

import statistics
import time

import httpx
import psycopg2
import redis

from devtools import processes
from devtools.stack import Process, free_port, wait_until


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def redis_round_trip(url: str, n: int = 2000) -> float:
    client = redis.Redis.from_url(url)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - started)
    return _median_ms(samples)


def postgres_insert_commit(dsn: str, n: int = 500) -> float:
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial primary key, body text)")
    conn.commit()
    samples = []
    for i in range(n):
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO bench_floor (body) VALUES (%s)", (f"row {i}",))
        conn.commit()
        samples.append(time.perf_counter() - started)
    conn.close()
    return _median_ms(samples)


def bare_flask_request(tmp, env, n: int = 1000) -> float:
    port = free_port()
    command = processes.api(processes.BENCH, f"127.0.0.1:{port}", app="bench.bare_app:app")
    process = Process("bare-flask", command.argv(), env, tmp).start()
    try:
        url = f"http://127.0.0.1:{port}/ping"
        wait_until(lambda: httpx.get(url).status_code == 200, what="bare flask")
        samples = []
        with httpx.Client() as client:
            for _ in range(n):
                started = time.perf_counter()
                client.get(url)
                samples.append(time.perf_counter() - started)
        return _median_ms(samples)
    finally:
        process.stop()


def measure(stack) -> dict:
    dsn = stack.database_url.replace("postgresql+psycopg2://", "postgresql://")
    return {
        "redis_rtt_ms": redis_round_trip(stack.env["REDIS_URL"]),
        "pg_insert_commit_ms": postgres_insert_commit(dsn),
        "bare_flask_ms": bare_flask_request(stack.tmp, stack.env),
    }
