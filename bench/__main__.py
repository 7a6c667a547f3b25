"""make bench: the production configuration on this machine, driven by a separate load process.

Starts gunicorn (gevent) + a Celery worker (gevent pool) + beat + the scripted model against the real
PostgreSQL and Redis, measures the machine's floor, runs the scenarios, stops everything it started and
writes bench/results/<date>.json, .md and .png.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psutil

from bench import floor, report
from devtools.stack import Stack, wait_until

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = os.environ.get("BENCH_QUICK") == "1"
WORKER_PROCESSES = int(os.environ.get("BENCH_WORKERS", "2"))

BENCH_ENV = {
    "RATE_LIMIT_DEFAULT": "100000000/minute",
    "RATE_LIMIT_MESSAGES": "100000000/minute",
    "MAX_ACTIVE_RUNS_PER_USER": "100000",
    "WAIT_MAX": "120",
    "MODEL_TIMEOUT": "60",
    "LEASE_SECONDS": "60",
    "QUEUED_STALE_SECONDS": "30",
    "SWEEP_INTERVAL": "10",
    "LOG_LEVEL": "WARNING",
    "DB_POOL_SIZE": "10",  # 4 processes x 15 connections stay under max_connections=100
    "DB_MAX_OVERFLOW": "5",
}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


class Bench:
    def __init__(self) -> None:
        self.stack = Stack(mode="production", **BENCH_ENV)
        self.plan_path = self.stack.tmp / "plan.json"
        self.results: dict = {"started_at": datetime.now(timezone.utc).isoformat(), "quick": QUICK, "scenarios": {}}

    # -- setup ---------------------------------------------------------------------------------
    def start(self) -> None:
        os.environ.update(self.stack.env)
        self.stack.create_database()
        self.stack.start_model()
        # One gevent worker process saturates one core; a worker host runs one per core (devtools/processes.py).
        for i in range(WORKER_PROCESSES):
            self.stack.start_worker(name="worker" if i == 0 else f"worker{i + 1}", profile="bench")
        self.stack.start_beat()
        self.stack.start_api(workers=2)
        self._plan(1000)

    def _plan(self, count: int) -> None:
        """Users (16) and one thread per client, made through the services in this process."""
        from shared.services import identity, threads

        targets = []
        users = []
        for i in range(16):
            email = f"bench-{i}-{self.stack.tag}@example.com"
            identity.create_user(email, "bench")
            token, _ = identity.create_token(email)
            users.append((token, identity.authenticate_token(token)))
        for i in range(count):
            token, principal = users[i % len(users)]
            targets.append({"token": token, "thread": threads.create_thread(principal, title=f"bench {i}").id})
        self.plan_path.write_text(json.dumps(targets))

    def set_latency(self, seconds: float) -> None:
        httpx.post(f"{self.stack.model_url}/_control", json={"latency": seconds}).raise_for_status()

    def set_streaming(self, token_rate: float, first_token_delay: float) -> None:
        httpx.post(f"{self.stack.model_url}/_control",
                   json={"token_rate": token_rate, "first_token_delay": first_token_delay}).raise_for_status()

    def drain(self, timeout: float = 120) -> None:
        from sqlalchemy import func, select

        from shared.db import transaction
        from shared.models import Run

        def idle() -> bool:
            with transaction() as session:
                return session.scalar(
                    select(func.count()).select_from(Run).where(Run.status.in_(("queued", "in_progress")))
                ) == 0

        try:
            wait_until(idle, timeout=timeout, interval=0.5, what="queue to drain")
        except AssertionError:
            self.results.setdefault("warnings", []).append("the queue did not drain within the timeout")

    # -- measuring -----------------------------------------------------------------------------
    def load(self, clients: int, duration: float, wait: float, max_per_client: int = 0, background: bool = False):
        args = [sys.executable, "-m", "bench.load", "--url", self.stack.api_url, "--plan", str(self.plan_path),
                "--clients", str(clients), "--duration", str(duration), "--wait", str(wait),
                "--max-per-client", str(max_per_client)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=self.stack.env)
        return proc if background else self._summarise(proc)

    @staticmethod
    def _summarise(proc: subprocess.Popen) -> dict:
        out, _ = proc.communicate(timeout=600)
        raw = json.loads(out)
        latencies = raw["latencies"]
        errors: dict[str, int] = {}
        for error in raw["errors"]:
            errors[error] = errors.get(error, 0) + 1
        return {
            "clients": raw["clients"], "messages": len(latencies), "errors": sum(errors.values()),
            "error_kinds": errors, "elapsed_s": round(raw["elapsed"], 2),
            # Throughput over the load window: answers completed while clients were still posting. The
            # tail (answers to posts made just before the end) would otherwise count as idle time.
            "rate_per_s": round(sum(1 for t in raw["completed_at"] if t <= raw["duration"]) / raw["duration"], 1),
            "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
        }

    def stream_load(self, clients: int, duration: float) -> dict:
        args = [sys.executable, "-m", "bench.stream_load", "--url", self.stack.api_url, "--plan", str(self.plan_path),
                "--clients", str(clients), "--duration", str(duration)]
        out = subprocess.run(args, stdout=subprocess.PIPE, text=True, env=self.stack.env, timeout=600, check=True).stdout
        return json.loads(out)

    def cpu_seconds(self, names: list[str]) -> float:
        """CPU (user + system) the serving processes used so far, children included."""
        total = 0.0
        for name in names:
            root = psutil.Process(self.stack.processes[name].proc.pid)
            for process in (root, *root.children(recursive=True)):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss_mb(self, name: str) -> list[float]:
        """Resident memory of each serving process (gunicorn's workers, not its master)."""
        root = psutil.Process(self.stack.processes[name].proc.pid)
        procs = root.children(recursive=True) if name == "api" else [root]
        return [round(p.memory_info().rss / 2**20, 1) for p in procs]

    # -- scenarios -----------------------------------------------------------------------------
    def run(self) -> dict:
        self.results["floor"] = floor_ms = floor.measure(self.stack)
        floor_sum = floor_ms["redis_rtt_ms"] + floor_ms["pg_insert_commit_ms"] + floor_ms["bare_flask_ms"]
        self.results["floor"]["sum_ms"] = round(floor_sum, 3)
        self.results["memory_idle_mb"] = {"api": self.rss_mb("api"), "worker": self.rss_mb("worker")}
        scenarios = self.results["scenarios"]
        short = 4 if QUICK else 8

        # 1. pollable POST: latency alone, then the highest rate without errors
        self.set_latency(0)
        single = self.load(1, short, wait=0)
        steps = [self.load(c, short, wait=0) for c in (4, 16, 64)]
        self.drain()
        clean = [s for s in steps if s["errors"] == 0]
        scenarios["1_pollable_post"] = {
            "single_client": single, "steps": steps,
            "max_rate_without_errors": max((s["rate_per_s"] for s in clean), default=0),
            "p50_vs_bare_flask": round(single["p50_ms"] / floor_ms["bare_flask_ms"], 2),
        }

        # 2. wait mode, zero-latency model
        rows = []
        for clients in (8, 32, 128):
            row = self.load(clients, short, wait=60)
            row["p50_over_floor_ms"] = round(row["p50_ms"] - floor_sum, 1)
            row["p50_vs_floor"] = round(row["p50_ms"] / floor_sum, 2)
            rows.append(row)
        self.drain()
        scenarios["2_wait_zero_latency"] = rows

        # 3. wait mode, 1 s model latency
        self.set_latency(1.0)
        rows = []
        for clients in (64, 256, 512):
            row = self.load(clients, 6 if QUICK else 12, wait=60)
            row["ideal_rate_per_s"] = clients / 1.0
            row["of_ideal"] = round(row["rate_per_s"] / clients, 3)
            row["p99_above_model_ms"] = round(row["p99_ms"] - 1000, 1) if row["p99_ms"] else None
            rows.append(row)
        self.drain()
        scenarios["3_wait_1s_latency"] = rows

        # 4 + 5. 1000 clients waiting at once; memory per waiting client and per run in flight
        self.set_latency(10.0)
        before_api, before_worker = sum(self.rss_mb("api")), sum(self.rss_mb("worker"))
        proc = self.load(1000, 30, wait=60, max_per_client=1, background=True)
        time.sleep(7)  # everyone has posted and is waiting on the 10 s model
        during_api, during_worker = sum(self.rss_mb("api")), sum(self.rss_mb("worker"))
        result = self._summarise(proc)
        self.drain()
        scenarios["4_thousand_waiting"] = {
            **result,
            "api_rss_before_mb": before_api, "api_rss_during_mb": during_api,
            "api_kb_per_waiting_client": round((during_api - before_api) * 1024 / 1000, 1),
        }
        scenarios["5_memory"] = {
            "api_process_mb": self.rss_mb("api"), "worker_process_mb": self.rss_mb("worker"),
            "worker_kb_per_run_in_flight": round((during_worker - before_worker) * 1024 / 1000, 1),
        }
        self.set_latency(0)

        # 6. streaming (issue 12)
        scenarios["6_streaming"] = self.streaming(256, 8 if QUICK else 15)
        return self.results

    def streaming(self, clients: int, duration: float, first_token: float = 0.5) -> dict:
        """Concurrent SSE clients, the model at 40 tokens/s after ``first_token`` seconds: what the stack
        adds to the model's own first token, the gaps, events/s and CPU per streamed answer."""
        self.set_streaming(40, first_token)
        serving = [name for name in self.stack.processes if name == "api" or name.startswith("worker")]
        cpu_before = self.cpu_seconds(serving)
        raw = self.stream_load(clients, duration)
        cpu = self.cpu_seconds(serving) - cpu_before
        self.drain()
        self.set_streaming(0, 0)
        answers = raw["answers"]
        overhead = [a["first_delta_s"] - first_token for a in answers]
        kinds: dict[str, int] = {}
        for error in raw["errors"]:
            kinds[error] = kinds.get(error, 0) + 1
        return {
            "clients": raw["clients"], "answers": len(answers), "errors": len(raw["errors"]), "error_kinds": kinds,
            "token_rate": 40, "first_token_delay_ms": first_token * 1000,
            "first_token_overhead_p50_ms": ms(percentile(overhead, 50)),
            "first_token_overhead_p99_ms": ms(percentile(overhead, 99)),
            "max_gap_p99_ms": ms(percentile([a["max_gap_s"] for a in answers], 99)),
            "events_per_s": round(sum(a["events"] for a in answers) / raw["elapsed"], 1),
            "cpu_ms_per_answer": round(cpu * 1000 / max(1, len(answers)), 2),
        }

    def stop(self) -> None:
        self.stack.stop()


def main() -> None:
    bench = Bench()
    try:
        bench.start()
        results = bench.run()
    except Exception:
        print(bench.stack.logs(), file=sys.stderr)
        raise
    finally:
        bench.stop()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    paths = report.write(results, RESULTS / stamp)
    print(report.table(results))
    print("\nwritten: " + ", ".join(str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else str(p) for p in paths))


if __name__ == "__main__":
    main()
