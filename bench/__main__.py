"""make bench: Threadline's production configuration and the textbook recipe (bench/recipe/) on this
machine, one after the other per scenario, driven by the same separate load process (bench/load.py).

Starts a private Redis (so its CPU is the bench's alone), Threadline (gunicorn gevent 2 + two Celery
workers on the gevent pool + beat) and the recipe (gunicorn gthread 2 x 8 + Celery prefork 2) against
the machine's PostgreSQL (a database each) and the same scripted model, measures the machine's floor,
runs the scenarios, prints progress as it goes, stops everything it started and writes
bench/results/<date>.json, .md and .png.

Sizes come from the environment (``make bench QUICK=1`` or ``python -m bench --quick`` for a short
run; BENCH_* below for any one of them).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psutil

from bench import cpu, floor, report
from devtools.stack import Process, Stack, free_port, wait_until

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0") or "--quick" in sys.argv


def _ints(name: str, full: str, quick: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, quick if QUICK else full).split(",") if x.strip()]


def _num(name: str, full: float, quick: float) -> float:
    return float(os.environ.get(name, quick if QUICK else full))


SIZES = {
    "s1_steps": _ints("BENCH_S1_STEPS", "4,16,64", "4,16"),
    "s2_clients": _ints("BENCH_S2_CLIENTS", "8,32,128", "32"),
    "s3_clients": _ints("BENCH_S3_CLIENTS", "64,256,512", "256"),
    "s4_clients": int(_num("BENCH_S4_CLIENTS", 5000, 1000)),
    "stream_clients": int(_num("BENCH_STREAM_CLIENTS", 256, 128)),
    "cancel_clients": int(_num("BENCH_CANCEL_CLIENTS", 32, 16)),
    "short_s": _num("BENCH_DURATION", 8, 4),
    "long_s": _num("BENCH_LONG_DURATION", 12, 6),
    "recipe_concurrency": int(_num("BENCH_RECIPE_CONCURRENCY", 2, 2)),
}
# BENCH_ONLY=4,6: only those scenarios (1-7), e.g. to look into one; the default runs them all.
ONLY = {x.strip() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()}


def wanted(number: int) -> bool:
    return not ONLY or str(number) in ONLY


WORKER_PROCESSES = int(os.environ.get("BENCH_WORKERS", "2"))
# Scenario 4's clients join at this many a second (5,000 in 33 s), not in one instant: thousands of
# connections opened at once by one load process wait seconds for it to write their requests, and
# gunicorn's async worker closes a connection whose first request has not arrived within its
# keep-alive (5 s), which the client sees as a reset (a validation run lost 1,535 of 2,000 that way).
S4_JOIN_RATE = float(os.environ.get("BENCH_S4_JOIN_RATE", "150"))
S3_WAIT = 20  # both systems: a client gives up after 20 s (the recipe answers 504, Threadline 201 queued)

BENCH_ENV = {
    "RATE_LIMIT_DEFAULT": "100000000/minute",
    "RATE_LIMIT_MESSAGES": "100000000/minute",
    "MAX_ACTIVE_RUNS_PER_USER": "100000",
    "WAIT_MAX": "900",  # scenario 4: every client posts, then waits while the workers are stopped
    "MODEL_TIMEOUT": "60",
    "LEASE_SECONDS": "60",
    "QUEUED_STALE_SECONDS": "600",  # scenario 4 keeps runs queued on purpose: no re-enqueue by the sweeper
    "SWEEP_INTERVAL": "10",
    "LOG_LEVEL": "WARNING",
    # The same prompt on both sides: the recipe reads the last 20 messages, the new one included (issue
    # 14's recipe), so Threadline reads the new one and at most 19 earlier ones too (its default is 50
    # earlier ones, trimmed by HISTORY_TOKENS). The threads grow from scenario to scenario: with 50, the
    # later scenarios measured a prompt 2.5x the recipe's (more rows read, encoded, sent and parsed by
    # the model for every answer), and scenario 3 alone on fresh threads cost 15 ms per answer against
    # 27 ms in the full run.
    "HISTORY_MESSAGES": "19",
    "DB_POOL_SIZE": "10",  # 4 processes x 15 connections stay under max_connections=100
    "DB_MAX_OVERFLOW": "5",
    # gunicorn_conf.py's 2000 connections per worker would refuse part of scenario 4's 5,000 waiting
    # clients; GUNICORN_CMD_ARGS outranks the config file.
    "GUNICORN_CMD_ARGS": "--worker-connections 8000",
}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def raise_nofile() -> tuple[int, int]:
    """Soft file-descriptor limit up to the hard one, for this process and (inherited) every process it
    starts: 5,000 waiting clients are 5,000 sockets in the load generator and in the API."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def open_connections(pid: int) -> int:
    try:
        process = psutil.Process(pid)
        listing = process.net_connections("tcp") if hasattr(process, "net_connections") else process.connections("tcp")
        return sum(1 for c in listing if c.status == psutil.CONN_ESTABLISHED)
    except psutil.Error:
        return 0


def count(items: list[str]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for item in items:
        kinds[item] = kinds.get(item, 0) + 1
    return kinds


def plan(stack: Stack, clients: int, users: int = 16) -> Path:
    """The load's plan (bench/load.py --plan): ``users`` users with a token each and one thread per client,
    made through the services in this process; written to the stack's tmp/plan.json. The bench and
    bench/api_process.py both load this one."""
    from shared.services import identity, threads

    principals = []
    for i in range(users):
        email = f"bench-{i}-{stack.tag}@example.com"
        identity.create_user(email, "bench")
        token, _ = identity.create_token(email)
        principals.append((token, identity.authenticate_token(token)))
    targets = []
    for i in range(clients):
        token, principal = principals[i % len(principals)]
        targets.append({"token": token, "thread": threads.create_thread(principal, title=f"bench {i}").id})
    path = stack.tmp / "plan.json"
    path.write_text(json.dumps(targets))
    return path


class System:
    """One system under test: where its API listens, its plan, the roles its processes play."""

    def __init__(self, name: str, url: str, plan: Path, roles: dict, databases: tuple[str, ...]):
        self.name, self.url, self.plan, self.roles, self.databases = name, url, plan, roles, databases


class Bench:
    def __init__(self) -> None:
        self.nofile = raise_nofile()
        self.redis_port = free_port()
        self.stack = Stack(mode="production", redis_url=f"redis://127.0.0.1:{self.redis_port}/0", **BENCH_ENV)
        self.results: dict = {"started_at": datetime.now(timezone.utc).isoformat(), "quick": QUICK,
                              "sizes": SIZES, "nofile": list(self.nofile), "scenarios": {}, "notes": []}
        self.recipe_db = f"threadline_recipe_{self.stack.tag}"
        self.recipe_queue = f"recipe-{self.stack.tag}"
        self.recipe_processes: dict[str, Process] = {}
        self.recipe_abandoned = 0  # posts whose tasks a drain purged: they will never be answered

    # -- setup ---------------------------------------------------------------------------------
    def start(self) -> None:
        log(f"bench: RLIMIT_NOFILE raised to {self.nofile[0]} (hard {self.nofile[1]}) for the bench and every "
            f"process it starts (the API inherits it; gunicorn gets --worker-connections 8000)")
        self.redis = Process("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--maxclients", "20000"],
                             self.stack.env, self.stack.tmp).start()
        wait_until(lambda: __import__("redis").Redis(port=self.redis_port).ping(), what="private redis")
        os.environ.update(self.stack.env)
        log("bench: starting Threadline (gunicorn gevent x2, celery gevent x%d, beat, scripted model)" % WORKER_PROCESSES)
        self.stack.create_database()
        self.stack.start_model()
        for i in range(WORKER_PROCESSES):
            self.stack.start_worker(name=self._worker_name(i), profile="bench")
        self.stack.start_beat()
        self.stack.start_api(workers=2)
        log(f"bench: starting the recipe (gunicorn gthread 2x8, celery prefork {SIZES['recipe_concurrency']})")
        self.start_recipe()
        needed = max(SIZES["s4_clients"], *SIZES["s3_clients"], SIZES["stream_clients"] + SIZES["cancel_clients"])
        log(f"bench: planning {needed} threads")
        self.threadline = System("Threadline", self.stack.api_url, plan(self.stack, needed), self._threadline_roles(),
                                 (self.stack.db_name,))
        recipe_plan = self.stack.tmp / "recipe-plan.json"
        recipe_plan.write_text(json.dumps([{"token": "-", "thread": i + 1} for i in range(needed)]))
        self.recipe = System("recipe", self.recipe_url, recipe_plan, self._recipe_roles(), (self.recipe_db,))

    @staticmethod
    def _worker_name(i: int) -> str:
        return "worker" if i == 0 else f"worker{i + 1}"

    def _pid(self, name: str, processes: dict | None = None):
        processes = self.stack.processes if processes is None else processes
        return lambda: [processes[name].proc.pid] if name in processes and processes[name].alive() else []

    def _threadline_roles(self) -> dict:
        workers = [self._worker_name(i) for i in range(WORKER_PROCESSES)]
        return {
            "api": self._pid("api"),
            "workers": lambda: [p for w in workers for p in self._pid(w)()],
            "beat": self._pid("beat"),
            "model": self._pid("model"),
            "redis": lambda: [self.redis.proc.pid],
        }

    def _recipe_roles(self) -> dict:
        return {
            "api": self._pid("api", self.recipe_processes),
            "workers": self._pid("worker", self.recipe_processes),
            "model": self._pid("model"),
            "redis": lambda: [self.redis.proc.pid],
        }

    def start_recipe(self) -> None:
        import psycopg2

        from bench.recipe import SCHEMA

        admin = psycopg2.connect(self.stack.pg_admin_url.replace("postgresql+psycopg2://", "postgresql://"))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.recipe_db}"')
        admin.close()
        dsn = self.stack.pg_admin_url.replace("postgresql+psycopg2://", "postgresql://").rsplit("/", 1)[0] + "/" + self.recipe_db
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(SCHEMA)
        port = free_port()
        self.recipe_url = f"http://127.0.0.1:{port}"
        env = {**self.stack.env, "RECIPE_DATABASE_URL": dsn, "RECIPE_QUEUE": self.recipe_queue,
               "RECIPE_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/2",
               "RECIPE_BACKEND_URL": f"redis://127.0.0.1:{self.redis_port}/3"}
        env.pop("GUNICORN_CMD_ARGS", None)
        self.recipe_dsn = dsn
        self.recipe_processes["worker"] = Process(
            "recipe-worker", [sys.executable, "-m", "celery", "-A", "bench.recipe.tasks", "worker", "--pool", "prefork",
                              "--concurrency", str(SIZES["recipe_concurrency"]), "-Q", self.recipe_queue,
                              "--without-gossip", "--without-mingle", "--loglevel", "INFO"], env, self.stack.tmp).start()
        self.recipe_processes["api"] = Process(
            "recipe-api", [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "8",
                           "-b", f"127.0.0.1:{port}", "bench.recipe.app:app"], env, self.stack.tmp).start()
        worker_log = self.recipe_processes["worker"].log_path
        wait_until(lambda: "ready" in worker_log.read_text(errors="replace"), timeout=30, what="recipe worker")
        wait_until(lambda: httpx.get(f"{self.recipe_url}/healthz", timeout=1).status_code == 200, timeout=30,
                   what="recipe api")

    def set_model(self, latency: float = 0.0, token_rate: float = 0.0, first_token_delay: float = 0.0) -> None:
        httpx.post(f"{self.stack.model_url}/_control", json={
            "latency": latency, "token_rate": token_rate, "first_token_delay": first_token_delay}).raise_for_status()

    def drain(self, system: System, timeout: float = 120) -> None:
        self._try_drain(system, timeout)

    def _try_drain(self, system: System, timeout: float) -> bool:
        try:
            wait_until(lambda: self._idle(system), timeout=timeout, interval=0.5, what=f"{system.name} to drain")
        except AssertionError:
            if system is self.recipe:
                purged = self._purge_recipe()
                time.sleep(2)
                self.recipe_abandoned += self.recipe_pending()  # purged or lost: never answered
                self.results["notes"].append(f"the recipe's queue did not drain: {purged} queued tasks purged")
                time.sleep(2)
            else:
                self.results["notes"].append("Threadline's queue did not drain within the timeout")

    def _idle(self, system: System) -> bool:
        if system is self.recipe:
            return self.recipe_pending() <= 0
        return self.active_runs() == 0

    def recipe_pending(self) -> int:
        """User messages the recipe has not answered yet. Not the broker's queue: Celery acks a task as
        it hands it to a prefork child's pipe, so an empty queue and no unacked messages left hundreds
        of scenario 1's tasks still waiting in the pool, in front of the next scenario's."""
        import psycopg2

        with psycopg2.connect(self.recipe_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE role = 'user') - count(*) FILTER (WHERE role = 'assistant') "
                        "FROM messages")
            return cur.fetchone()[0] - self.recipe_abandoned

    def _purge_recipe(self) -> int:
        import redis

        client = redis.Redis(port=self.redis_port, db=2)
        queued = client.llen(self.recipe_queue)
        client.delete(self.recipe_queue)
        return queued

    def active_runs(self, status: tuple[str, ...] = ("queued", "in_progress")) -> int:
        from sqlalchemy import func, select

        from shared.db import transaction
        from shared.models import Run

        with transaction() as session:
            return session.scalar(select(func.count()).select_from(Run).where(Run.status.in_(status)))

    # -- measuring -----------------------------------------------------------------------------
    def load(self, system: System, label: str, clients: int, duration: float, wait: float = 60,
             max_per_client: int = 0, mode: str = "wait", cancel_clients: int = 0, content: str = "bench message",
             ramp: float = 0.0, background: bool = False):
        args = [sys.executable, "-m", "bench.load", "--url", system.url, "--plan", str(system.plan),
                "--clients", str(clients), "--duration", str(duration), "--wait", str(wait),
                "--max-per-client", str(max_per_client), "--mode", mode, "--cancel-clients", str(cancel_clients),
                "--content", content, "--label", f"{system.name} {label}", "--ramp", str(ramp)]
        log(f"  {system.name}: {label}, {clients} clients, {duration:g} s")
        sampler = cpu.Sampler(system.roles, system.databases).__enter__()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=self.stack.env)
        if background:
            return proc, sampler
        return self.finish(proc, sampler)

    def finish(self, proc: subprocess.Popen, sampler: cpu.Sampler) -> dict:
        out, _ = proc.communicate(timeout=900)
        sampler.__exit__(None, None, None)
        raw = json.loads(out)
        latencies = raw["latencies"]
        errors = count(raw["errors"])
        answers = len(latencies) + len(raw["answers"]) + len(raw["cancels"])
        seconds = sampler.seconds({"load generator": raw["cpu_s"]})
        summary = {
            "clients": raw["clients"], "messages": answers, "errors": sum(errors.values()),
            "error_kinds": errors, "elapsed_s": round(raw["elapsed"], 2),
            # Throughput over the load window: answers completed while clients were still posting. The
            # tail (answers to posts made just before the end) would otherwise count as idle time.
            "rate_per_s": round(sum(1 for t in raw["completed_at"] if t <= raw["duration"]) / raw["duration"], 1),
            "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
            "cpu_s": seconds, "cpu_ms_per_answer": cpu.per_answer_ms(seconds, answers),
            "raw": {k: raw[k] for k in ("answers", "cancels", "finished_first")},
        }
        log(f"    -> {summary['messages']} answers, {summary['errors']} errors, {summary['rate_per_s']} msg/s, "
            f"p50 {summary['p50_ms']} ms, CPU {summary['cpu_ms_per_answer']['total']} ms per answer")
        return summary

    def rss_mb(self, name: str) -> list[float]:
        """Resident memory of each serving process (gunicorn's workers, not its master)."""
        root = psutil.Process(self.stack.processes[name].proc.pid)
        procs = root.children(recursive=True) if name == "api" else [root]
        return [round(p.memory_info().rss / 2**20, 1) for p in procs]

    def both(self, label: str, clients: int, duration: float, wait: float, after=None) -> dict:
        rows = {}
        for system in (self.threadline, self.recipe):
            rows[system.name] = self.load(system, label, clients, duration, wait=wait)
            self._try_drain(system, 30 if system is self.recipe else 120)
        t, r = rows["Threadline"], rows["recipe"]
        return {"clients": clients, "threadline": t, "recipe": r,
                "rate_ratio": round(t["rate_per_s"] / r["rate_per_s"], 2) if r["rate_per_s"] else None,
                "p50_ratio": round(t["p50_ms"] / r["p50_ms"], 2) if t["p50_ms"] and r["p50_ms"] else None}

    # -- scenarios -----------------------------------------------------------------------------
    def run(self) -> dict:
        log("bench: measuring the floor")
        self.results["floor"] = floor_ms = floor.measure(self.stack)
        floor_sum = floor_ms["redis_rtt_ms"] + floor_ms["pg_insert_commit_ms"] + floor_ms["bare_flask_ms"]
        self.results["floor"]["sum_ms"] = round(floor_sum, 3)
        self.results["memory_idle_mb"] = {"api": self.rss_mb("api"), "worker": self.rss_mb("worker")}
        scenarios = self.results["scenarios"]
        short, long_ = SIZES["short_s"], SIZES["long_s"]

        self.set_model(0)
        if wanted(1):
            self.scenario_1(floor_ms, short)
        if wanted(2):
            self.scenario_2(floor_sum, short)
        if wanted(3):
            self.scenario_3(long_)
        self.set_model(0)
        if wanted(4):
            scenarios["4_waiting"] = self.waiting(SIZES["s4_clients"])
        scenarios["5_memory"] = {"api_process_mb": self.rss_mb("api"), "worker_process_mb": self.rss_mb("worker")}
        if wanted(6):
            log("\n== scenario 6: streaming (issue 12) ==")
            scenarios["6_streaming"] = self.streaming(SIZES["stream_clients"], 8 if QUICK else 15)
        if wanted(7):
            log("\n== scenario 7: cancel latency (issue 13) ==")
            scenarios["7_cancel"] = self.cancelling(SIZES["cancel_clients"], SIZES["stream_clients"] // 2,
                                                    6 if QUICK else 10)
        return self.results

    def scenario_1(self, floor_ms: dict, short: float) -> None:
        log("\n== scenario 1: pollable POST (wait=0), model 0 s ==")
        scenarios = self.results["scenarios"]
        single = self.both("S1 single", 1, short, wait=0)
        steps = [self.both(f"S1 step {c}", c, short, wait=0) for c in SIZES["s1_steps"]]
        scenarios["1_pollable_post"] = {
            "single_client": single, "steps": steps,
            "max_rate_without_errors": {
                side: max((s[side]["rate_per_s"] for s in steps if s[side]["errors"] == 0), default=0)
                for side in ("threadline", "recipe")},
            "p50_vs_bare_flask": round(single["threadline"]["p50_ms"] / floor_ms["bare_flask_ms"], 2),
            "recipe_p50_vs_bare_flask": round(single["recipe"]["p50_ms"] / floor_ms["bare_flask_ms"], 2),
        }

    def scenario_2(self, floor_sum: float, short: float) -> None:
        log("\n== scenario 2: wait mode, model 0 s ==")
        scenarios = self.results["scenarios"]
        rows = [self.both(f"S2 {c}", c, short, wait=60) for c in SIZES["s2_clients"]]
        for row in rows:
            row["p50_over_floor_ms"] = round(row["threadline"]["p50_ms"] - floor_sum, 1) if row["threadline"]["p50_ms"] else None
        scenarios["2_wait_zero_latency"] = rows

    def scenario_3(self, long_: float) -> None:
        log("\n== scenario 3: wait mode, model 1 s ==")
        scenarios = self.results["scenarios"]
        self.set_model(1.0)
        rows = []
        for c in SIZES["s3_clients"]:
            row = self.both(f"S3 {c}", c, long_, wait=S3_WAIT)
            t = row["threadline"]
            row["ideal_rate_per_s"] = c / 1.0
            row["of_ideal"] = round(t["rate_per_s"] / c, 3)
            row["p99_above_model_ms"] = round(t["p99_ms"] - 1000, 1) if t["p99_ms"] else None
            rows.append(row)
        scenarios["3_wait_1s_latency"] = rows
        self.set_model(0)

    def waiting(self, clients: int) -> dict:
        """``clients`` clients posting once and waiting at the same time on one API host: the workers
        are stopped while they post (so nobody is answered before everyone waits), the API's memory is
        read once all runs are queued, then the workers start again and answer everyone."""
        log(f"\n== scenario 4: {clients} clients waiting at once (RLIMIT_NOFILE {self.nofile[0]}) ==")
        workers = [self._worker_name(i) for i in range(WORKER_PROCESSES)]
        for name in workers:
            self.stack.processes[name].stop()
        before_api = sum(self.rss_mb("api"))
        queued_before = self.active_runs()
        proc, sampler = self.load(self.threadline, "S4", clients, 1200, wait=850, max_per_client=1,
                                  ramp=clients / S4_JOIN_RATE, background=True)
        started = time.monotonic()
        last, steady_since = -1, time.monotonic()
        while time.monotonic() - started < 600:
            queued = self.active_runs(("queued",)) - queued_before
            if queued != last:
                last, steady_since = queued, time.monotonic()
            # every client posted, or the count stopped growing for 15 s once some had (the rest failed)
            if queued >= clients or (queued > 0 and time.monotonic() - steady_since > 15) or proc.poll() is not None:
                break
            time.sleep(1)
        posted_s = time.monotonic() - started
        waiting = open_connections(proc.pid)
        during_api = sum(self.rss_mb("api"))
        log(f"    {last} runs queued after {posted_s:.1f} s, {waiting} client connections open; API RSS "
            f"{before_api:.0f} -> {during_api:.0f} MB; starting the workers")
        for name in workers:
            self.stack.start_worker(name=name, profile="bench")
        result = self.finish(proc, sampler)
        self.drain(self.threadline)
        return {**result, "queued_at_peak": last, "connections_at_peak": waiting, "posting_s": round(posted_s, 1),
                "api_rss_before_mb": before_api, "api_rss_during_mb": during_api,
                "api_kb_per_waiting_client": round((during_api - before_api) * 1024 / max(1, last), 1)}

    STREAM_TEXT = "stream " + " ".join(f"w{i}" for i in range(60))  # the model echoes 200 characters: ~80 tokens

    def streaming(self, clients: int, duration: float, first_token: float = 0.5) -> dict:
        """Concurrent SSE clients, the model at 40 tokens/s after ``first_token`` seconds: what the stack
        adds to the model's own first token, the gaps, events/s and CPU per streamed answer."""
        self.set_model(0, 40, first_token)
        raw = self.load(self.threadline, "S6 streams", clients, duration, mode="stream", content=self.STREAM_TEXT)
        self._try_drain(self.threadline, 120)
        self.set_model(0)
        answers = raw["raw"]["answers"]
        overhead = [a["first_delta_s"] - first_token for a in answers]
        return {
            **{k: raw[k] for k in ("clients", "errors", "error_kinds", "cpu_s", "cpu_ms_per_answer", "elapsed_s")},
            "answers": len(answers), "token_rate": 40, "first_token_delay_ms": first_token * 1000,
            "first_token_overhead_p50_ms": ms(percentile(overhead, 50)),
            "first_token_overhead_p99_ms": ms(percentile(overhead, 99)),
            "max_gap_p99_ms": ms(percentile([a["max_gap_s"] for a in answers], 99)),
            "events_per_s": round(sum(a["events"] for a in answers) / raw["elapsed_s"], 1),
        }

    def cancelling(self, cancel_clients: int, load_clients: int, duration: float) -> dict:
        """``cancel_clients`` clients stop each answer at its first delta while ``load_clients`` others
        stream (a slow model: 10 tokens/s after 0.3 s, ~8 s an answer, so the cancel lands mid-stream):
        cancel → stored (the cancel's 200, status cancelled) and cancel → the stream's run.cancelled."""
        self.set_model(0, 10, 0.3)
        raw = self.load(self.threadline, "S7 cancel", cancel_clients + load_clients, duration, mode="stream",
                        cancel_clients=cancel_clients, content=self.STREAM_TEXT)
        self._try_drain(self.threadline, 120)
        self.set_model(0)
        cancels = raw["raw"]["cancels"]
        return {
            "cancel_clients": cancel_clients, "streaming_clients": load_clients, "cancels": len(cancels),
            "streamed_answers": len(raw["raw"]["answers"]), "finished_before_cancel": raw["raw"]["finished_first"],
            "errors": raw["errors"], "error_kinds": raw["error_kinds"],
            "stored_p50_ms": ms(percentile([c["stored_s"] for c in cancels], 50)),
            "stored_p99_ms": ms(percentile([c["stored_s"] for c in cancels], 99)),
            "stream_end_p50_ms": ms(percentile([c["stream_end_s"] for c in cancels], 50)),
            "stream_end_p99_ms": ms(percentile([c["stream_end_s"] for c in cancels], 99)),
        }

    def stop(self) -> None:
        for process in self.recipe_processes.values():
            process.stop()
        try:
            import psycopg2

            admin = psycopg2.connect(self.stack.pg_admin_url.replace("postgresql+psycopg2://", "postgresql://"))
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.recipe_db}" WITH (FORCE)')
            admin.close()
        finally:
            try:
                self.stack.stop()
            finally:
                if getattr(self, "redis", None):
                    self.redis.stop()


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
    for row in _raw_rows(results):
        row.pop("raw", None)
    paths = report.write(results, RESULTS / stamp)
    print(report.table(results))
    print("\nwritten: " + ", ".join(str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else str(p) for p in paths))


def _raw_rows(results: dict):
    """Every measured row (they carry per-answer raw data the results files do not need)."""
    def walk(node):
        if isinstance(node, dict):
            if "raw" in node:
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    yield from list(walk(results))


if __name__ == "__main__":
    main()
