"""`make run`'s supervisor end to end: `python -m devtools.run` on the embedded stack (SQLite, filesystem
broker), the worker SIGKILLed under it, restarted, and the API still answers a message through the new
worker. This is the failure that used to end `make run` (honcho stopped everything when one process died).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import httpx
import pytest

from devtools.stack import ROOT, Stack, wait_until


@pytest.fixture
def make_run():
    stack = Stack(mode="embedded")
    api_port = stack.api_port
    env = {**stack.env, "API_BIND": f"127.0.0.1:{api_port}", "SCRIPTED_MODEL_PORT": str(stack.model_port)}
    stack.env = env
    stack.create_database()
    token = stack.demo_token()
    log_path = stack.tmp / "make-run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devtools.run", "--schedule", str(stack.tmp / "beat-schedule")],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run = SimpleNamespace(proc=proc, url=f"http://127.0.0.1:{api_port}", token=token,
                          log=lambda: log_path.read_text(errors="replace"))
    try:
        wait_until(lambda: httpx.get(f"{run.url}/healthz", timeout=1).status_code == 200, timeout=60, what="api")
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        print(run.log()[-4000:])
        stack.stop()


def _pid(log: str, name: str, after: int = 0) -> int | None:
    pids = [int(p) for p in re.findall(rf"started {name} \(pid (\d+)\)", log)]
    return pids[after] if len(pids) > after else None


def test_a_killed_worker_is_restarted_and_the_api_still_answers(make_run):
    with httpx.Client(base_url=make_run.url, headers={"Authorization": f"Bearer {make_run.token}"}, timeout=40) as client:
        thread = client.post("/api/v1/ai/threads", json={"title": "supervised"}).json()["id"]
        worker = wait_until(lambda: _pid(make_run.log(), "worker"), what="worker pid in the log")
        api = _pid(make_run.log(), "api")
        wait_until(lambda: "ready" in make_run.log().split(f"started worker (pid {worker})")[1], timeout=60,
                   what="worker ready")

        os.kill(worker, signal.SIGKILL)
        replacement = wait_until(lambda: _pid(make_run.log(), "worker", after=1), timeout=30, what="worker restarted")

        log = make_run.log()
        assert f"worker (pid {worker}) killed by signal SIGKILL (9)" in log and "restarting in" in log
        assert replacement != worker and _pid(log, "api", after=1) is None and _pid(log, "api") == api
        response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=30", json={"content": "Hello again!"})
        assert response.status_code == 201, response.text
        assert response.json()["responseMessage"]["status"] == "completed", make_run.log()[-3000:]
    assert make_run.proc.poll() is None  # the supervisor kept running throughout

    make_run.proc.send_signal(signal.SIGTERM)
    assert make_run.proc.wait(timeout=30) == 0
    assert "all processes stopped" in make_run.log()
