"""Helpers the hosts tests share: posting through the ledger, reading runs with the host that ran them."""
from __future__ import annotations

import re
import time
import uuid
from collections import Counter

import httpx
from sqlalchemy import text

from tests.faults.helpers import assert_exactly_once, wait_answered  # noqa: F401 - the fault suite's, shared
from tests.hosts.ledger import LEDGER

# What a host on another machine must put into DATABASE_URL: give up on a dead link in seconds.
# docker-compose.multihost.yml uses the same (tests/unit/test_deployment_files.py checks it).
LIBPQ_NETWORK = {"connect_timeout": "3", "keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
                 "keepalives_count": "3", "tcp_user_timeout": "10000"}


def new_thread(client: httpx.Client, title: str = "hosts") -> int:
    response = client.post("/api/v1/ai/threads", json={"title": title})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post(client: httpx.Client, thread: int, content: str, wait: float = 0, key: str | None = None) -> httpx.Response:
    """Post a message (with an Idempotency-Key, so another host can wait on it) and record it."""
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait={wait:g}", json={"content": content},
                           headers={"Idempotency-Key": key or uuid.uuid4().hex})
    LEDGER.posted(response)
    return response


def timed_post(client: httpx.Client, thread: int, content: str, wait: float) -> tuple[float, httpx.Response | None]:
    """(seconds, response) of one waiting post; the response is None when the request itself failed."""
    started = time.monotonic()
    try:
        response = post(client, thread, content, wait=wait)
    except httpx.HTTPError:
        response = None
    return time.monotonic() - started, response


def runs_of(hosts, ids: list[str]) -> dict[str, dict]:
    """Per user message: its run's state, attempts, the host whose worker holds or held it, and
    which attempts stored steps."""
    with hosts.db.connect() as conn:
        rows = conn.execute(text("""
            SELECT r.request_message_id::text AS id, r.status, r.attempts, r.lease_owner,
                   a.content, a.status AS answer_status,
                   (SELECT array_agg(DISTINCT s.attempt) FROM run_steps s WHERE s.run_id = r.id) AS step_attempts
            FROM runs r JOIN messages a ON a.id = r.response_message_id
            WHERE r.request_message_id::text = ANY(:ids)
        """), {"ids": ids})
        found = {row.id: dict(row._mapping) for row in rows}
    for run in found.values():
        run["host"] = hosts.host_of(run["lease_owner"])
    return found


TASK_RESULT = re.compile(r"Task threadline\.execute_run\[[^\]]+\] succeeded in [0-9.e-]+s: (?:<\w+\.\w+: )?'([a-z-]+)'")


TASK_REJECTED = re.compile(r"Task threadline\.execute_run\[[^\]]+\] reject requeue")


def task_results(process) -> Counter[str]:
    """How a worker's execute_run tasks ended, from its log: completed, skipped, lease-lost, ...,
    and ``rejected`` (a database error whose retry could not reach the broker either: the sweeper
    takes the run over)."""
    log = process.log_path.read_text(errors="replace")
    results = Counter(match.group(1) for match in TASK_RESULT.finditer(log))
    results["rejected"] += len(TASK_REJECTED.findall(log))
    return +results
