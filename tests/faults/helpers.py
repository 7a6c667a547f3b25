"""Helpers the fault tests share: posting through the ledger and checking exactly-once."""
from __future__ import annotations

from contextlib import contextmanager

import httpx

from tests.faults.ledger import LEDGER
from devtools.stack import wait_until


@contextmanager
def bound_database(url: str):
    """Point shared.db (used by the in-process identity helpers) at ``url`` for a moment."""
    from sqlalchemy.orm import sessionmaker

    from shared import db

    saved = db._engine, db._factory
    engine = db.make_engine(url)
    db._engine, db._factory = engine, sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        engine.dispose()
        db._engine, db._factory = saved


def new_thread(client: httpx.Client, title: str = "faults") -> int:
    response = client.post("/api/v1/ai/threads", json={"title": title})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post(client: httpx.Client, thread: int, content: str, wait: float = 0, **kwargs) -> httpx.Response:
    """Post a message and record it in the ledger."""
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait={wait:g}", json={"content": content},
                           **kwargs)
    LEDGER.posted(response)
    return response


def wait_answered(stack, ids: list[str], timeout: float = 60.0) -> list[dict]:
    """Wait until every user message in ``ids`` has a finished answer; return the ledger rows."""
    def done():
        rows = LEDGER.outcomes(stack.db, ids)
        finished = len(rows) == len(ids) and all(
            r["answers"] >= 1 and all(s in ("completed", "failed") for s in r["statuses"]) for r in rows)
        return finished and rows
    return wait_until(done, timeout=timeout, interval=0.2, what=f"answers to {len(ids)} message(s)")


def assert_exactly_once(rows: list[dict], status: str | None = "completed") -> None:
    for row in rows:
        assert row["runs"] == 1, f"message {row['id']} has {row['runs']} runs"
        assert row["answers"] == 1, f"message {row['id']} has {row['answers']} answers"
        if status is not None:
            assert row["statuses"] == [status], f"message {row['id']} answered {row['statuses']}"


def start_extra_api(stack, name: str, **env: str) -> str:
    """Another API process on the same database, broker and queue, with some settings changed
    (e.g. a low rate limit); stopped with the stack. Returns its base URL."""
    from devtools import processes
    from devtools.stack import Process, free_port

    port = free_port()
    command = processes.api(processes.PROFILES[stack.mode], f"127.0.0.1:{port}", workers=1)
    process = Process(name, command.argv(), {**stack.env, **env}, stack.tmp).start()
    stack.processes[name] = process
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30, what=name)
    return url
