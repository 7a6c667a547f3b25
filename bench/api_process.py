"""The API process's CPU per answer under load, A/B between source trees (docs/performance.md, "The API
process around the request").

One production stack (a private Redis server, a fresh PostgreSQL database, the scripted model, one
bench-profile worker) serves every run; only the API (gunicorn, gevent, ``--api-workers`` workers) is
restarted for each tree, alternating, so the trees see the same worker, database and load. Each run:
a 3 s warm-up, then ``bench.load`` in wait mode (``Prefer: wait=30``) for ``--duration`` seconds; the
figure is the user + system CPU of gunicorn's worker processes (not the master) over that window
divided by the answers completed. ``--py-spy`` records each tree's first run (raw format, for a
flame graph or a grep) next to the stack's logs.

A tree is a directory with the repository's files (e.g. ``git archive <commit> | tar -x -C DIR``).
CPU times on a shared machine drift by ~10% from run to run: alternate, and compare means of several
rounds.

    python -m bench.api_process --rounds 3 --clients 16 --duration 25 /tmp/a /tmp/b
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from bench.__main__ import BENCH_ENV, plan
from devtools import processes
from devtools.stack import ROOT, Process, Stack, free_port, wait_until

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def load(stack: Stack, path: Path, clients: int, duration: float) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.load", "--url", stack.api_url, "--plan", str(path),
                          "--clients", str(clients), "--duration", str(duration), "--wait", "30", "--progress", "0"],
                         capture_output=True, text=True, env=stack.env, check=True).stdout
    return json.loads(out)


def cpu(workers: list[psutil.Process]) -> tuple[float, float]:
    times = [w.cpu_times() for w in workers]
    return sum(t.user + t.system for t in times), sum(t.system for t in times)


def measure(stack: Stack, tree: Path, path: Path, args, spy_to: Path | None) -> dict:
    command = processes.api(processes.PROFILES["production"], f"127.0.0.1:{stack.api_port}", workers=args.api_workers)
    api = Process(f"api-{tree.name}", command.argv(), stack.env, stack.tmp)
    with open(api.log_path, "ab") as log:
        api.proc = subprocess.Popen(api.args, cwd=tree, env=stack.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        wait_until(lambda: httpx.get(f"{stack.api_url}/healthz", timeout=1).status_code == 200, timeout=30, what="api")
        workers = psutil.Process(api.proc.pid).children()
        load(stack, path, args.clients, 3)  # warm-up: connections, prepared statements, the listener
        spy = None
        if spy_to is not None:
            spy = subprocess.Popen([str(PY_SPY), "record", "-p", str(workers[0].pid), "--format", "raw", "-o", str(spy_to),
                                    "-d", str(max(1, int(args.duration) - 2))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (cpu0, sys0), started = cpu(workers), time.monotonic()
        raw = load(stack, path, args.clients, args.duration)
        (cpu1, sys1), elapsed = cpu(workers), time.monotonic() - started
        if spy is not None:
            spy.wait()
        answers = len(raw["latencies"])
        return {"answers": answers, "errors": len(raw["errors"]), "msg_per_s": round(answers / elapsed, 1),
                "api_cpu_ms_per_answer": round((cpu1 - cpu0) * 1000 / max(answers, 1), 2),
                "system_share": round((sys1 - sys0) / max(cpu1 - cpu0, 1e-9), 2),
                "load_average": round(os.getloadavg()[0], 1)}
    finally:
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--py-spy", action="store_true")
    args = parser.parse_args()
    redis_port = free_port()
    overrides = {k: v for k, v in BENCH_ENV.items() if k != "GUNICORN_CMD_ARGS"}
    stack = Stack(mode="production", redis_url=f"redis://127.0.0.1:{redis_port}/0", **overrides)
    redis = Process("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stack.env, stack.tmp).start()
    results: dict[str, list[float]] = {str(tree): [] for tree in args.trees}
    try:
        wait_until(lambda: __import__("redis").Redis(port=redis_port).ping(), what="private redis")
        os.environ.update(stack.env)
        stack.create_database()
        stack.start_model()
        stack.start_worker(profile="bench")
        path = plan(stack, args.clients)
        for round_ in range(args.rounds):
            for tree in args.trees:
                spy_to = stack.tmp / f"py-spy-{tree.name}.txt" if args.py_spy and round_ == 0 else None
                result = measure(stack, tree.resolve(), path, args, spy_to)
                results[str(tree)].append(result["api_cpu_ms_per_answer"])
                print(json.dumps({"tree": str(tree), "round": round_, **result}), flush=True)
        for tree, values in results.items():
            print(json.dumps({"tree": tree, "api_cpu_ms_per_answer": values,
                              "mean": round(sum(values) / len(values), 2)}), flush=True)
        if args.py_spy:
            print(f"py-spy profiles in {stack.tmp} (kept)", flush=True)
            os.environ["KEEP_TEST_LOGS"] = "1"
    finally:
        stack.stop()  # its processes, the database; the directory unless KEEP_TEST_LOGS
        redis.stop()


if __name__ == "__main__":
    main()
