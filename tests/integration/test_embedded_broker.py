"""The embedded stack as ``make run`` starts it survives bursts, and loses no run it accepted.

This module starts its own embedded stack (SQLite, the file broker of shared/broker.py) with the
processes launched from the embedded profile of devtools/processes.py, the definition ``make run``'s
Procfile is generated from (worker, beat and API), so it tests what a new user runs. It is
not in the core suite: it runs once, in the production pass of ``make test``, whatever the session's
mode.

- Bursts: 8 users × 20 posts at once (``Prefer: wait=0``), 20 times. With kombu's own filesystem
  transport the worker died within a few bursts (issue 10: a half-written message file); here every
  answer completes and the worker's pid never changes.
- A lost message: a run whose message never reaches the worker (sent to a queue folder nobody reads) is
  answered through the sweeper (beat, as under ``make run``) within ``QUEUED_STALE_SECONDS``
  plus a sweep and the run itself.
"""
from __future__ import annotations

import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest

from tests.faults.helpers import bound_database
from devtools.stack import Process, Stack, free_port, wait_until

USERS, POSTS_PER_USER, THREADS_PER_USER, BURSTS = 8, 20, 4, 20
QUEUED_STALE_SECONDS = 4.0
SWEEP_INTERVAL = 1.0


@pytest.fixture(scope="module")
def embedded():
    stack = Stack(mode="embedded", QUEUED_STALE_SECONDS=str(QUEUED_STALE_SECONDS),
                  SWEEP_INTERVAL=str(SWEEP_INTERVAL), MAX_ACTIVE_RUNS_PER_USER="20")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def users(embedded):
    from shared.services import identity

    made = []
    with bound_database(embedded.database_url):
        for _ in range(USERS):
            email = f"{uuid.uuid4().hex[:12]}@example.com"
            identity.create_user(email, f"tenant-{uuid.uuid4().hex[:8]}", password="pw-secret")
            token, _row = identity.create_token(email)
            made.append(SimpleNamespace(email=email, token=token))
    return made


def waiting(stack: Stack, condition, timeout: float, what: str, interval: float = 0.2):
    """wait_until, with this stack's process logs in the failure (the session's report hook only shows
    the session stack's)."""
    try:
        return wait_until(condition, timeout=timeout, interval=interval, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def start_api(stack: Stack, name: str, **env: str) -> str:
    """Another API process of this stack with some settings changed; stopped with the stack."""
    port = free_port()
    process = Process(name, [
        sys.executable, "-m", "gunicorn", "-c", "api/gunicorn_conf.py", "-k", "gthread", "--threads", "4",
        "-w", "1", "-b", f"127.0.0.1:{port}", "api.wsgi:app",
    ], {**stack.env, **env}, stack.tmp).start()
    stack.processes[name] = process
    url = f"http://127.0.0.1:{port}"
    waiting(stack, lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, name)
    return url


def client(stack: Stack, user, base_url: str | None = None) -> httpx.Client:
    """A user's client. Idle connections are dropped after 2 s, before gunicorn's 5 s keep-alive ends:
    otherwise a POST sent on a connection the server is closing at that moment fails with "connection
    reset by peer" (httpx does not resend a POST), which is the test's fault, not the stack's."""
    return httpx.Client(base_url=base_url or stack.api_url, headers={"Authorization": f"Bearer {user.token}"},
                        timeout=40, limits=httpx.Limits(keepalive_expiry=2.0))


def new_thread(http: httpx.Client) -> int:
    response = http.post("/api/v1/ai/threads", json={"title": "burst"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post(http: httpx.Client, thread: int, content: str) -> str:
    response = http.post(f"/api/v1/ai/threads/{thread}/messages", json={"content": content},
                         headers={"Prefer": "wait=0"})
    assert response.status_code == 201, response.text
    return response.json()["responseMessage"]["id"]


def statuses(http: httpx.Client, thread: int, page: int = 1) -> dict[str, str]:
    response = http.get(f"/api/v1/ai/threads/{thread}/messages", params={"per_page": 100, "page": page})
    assert response.status_code == 200, response.text
    return {m["id"]: m["status"] for m in response.json()["data"] if m["role"] == "assistant"}


FINISHED = ("completed", "failed", "cancelled")


def burst(stack: Stack, threads: list[tuple[httpx.Client, int]], number: int) -> tuple[int, float, float]:
    """Post POSTS_PER_USER messages per user at once, spread over the user's threads; wait until every
    answer finished. Returns the number of answers, the seconds the posts took and the seconds from the
    first post to the last answer. The threads are reused from burst to burst (creating new ones would
    add a fifth more writes), so each burst's messages are on one page of 100 (10 per thread per burst)."""
    per_thread = POSTS_PER_USER // THREADS_PER_USER
    plan = [(c, t, f"burst {number} post {i}") for i in range(per_thread) for c, t in threads]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda item: (item[0], item[1], post(*item)), plan))
    posting = time.monotonic() - started
    expected = {answer_id for _c, _t, answer_id in answers}
    page = number * 2 * per_thread // 100 + 1
    done: dict[str, str] = {}
    pending = dict.fromkeys(threads)

    def finished():
        # Only threads with unanswered posts are read again: the polling must not be the load.
        for c, t in list(pending):
            seen = {k: v for k, v in statuses(c, t, page).items() if k in expected}
            done.update({k: v for k, v in seen.items() if v in FINISHED})
            if len(seen) == per_thread and all(v in FINISHED for v in seen.values()):
                del pending[(c, t)]
        return len(done) == len(expected)

    waiting(stack, finished, 60, f"answers of burst {number}", interval=0.5)
    elapsed = time.monotonic() - started
    assert set(done.values()) == {"completed"}, {k: v for k, v in done.items() if v != "completed"}
    return len(done), posting, elapsed


def test_bursts_of_160_posts_are_all_answered_and_the_worker_never_dies(embedded, users):
    worker = embedded.processes["worker"]
    pid = worker.proc.pid
    dead_letters = embedded.tmp / "broker" / "dead-letter"
    clients = [client(embedded, user) for user in users]
    threads = [(c, new_thread(c)) for c in clients for _ in range(THREADS_PER_USER)]
    answered, posting, seconds = 0, 0.0, 0.0
    for number in range(BURSTS):
        count, posted, elapsed = burst(embedded, threads, number)
        answered, posting, seconds = answered + count, posting + posted, seconds + elapsed
        assert worker.alive() and worker.proc.pid == pid, f"worker died in burst {number}:\n{worker.tail()}"
    print(f"\nembedded bursts: {answered} posts accepted at {answered / posting:.0f}/s, all answered in "
          f"{seconds:.1f} s of bursts ({answered / seconds:.0f} answers/s)")
    for c in clients:
        c.close()
    assert answered == BURSTS * USERS * POSTS_PER_USER
    assert not any(dead_letters.iterdir()), "a message was dead-lettered"
    log = worker.log_path.read_text(errors="replace")
    assert "Unrecoverable error" not in log and "Connection to broker lost" not in log


def test_a_lost_message_is_answered_by_the_sweeper_in_beat(embedded, users):
    # An API whose broker folder no worker reads: its enqueue "succeeds" and the message is lost.
    void = embedded.tmp / "void-broker"
    lossy_api = start_api(embedded, "lossy-api", BROKER_DIR=str(void))
    with client(embedded, users[0], base_url=lossy_api) as lossy, client(embedded, users[0]) as http:
        thread = new_thread(lossy)
        posted = time.monotonic()
        answer_id = post(lossy, thread, "is anyone there?")
        assert any(void.glob("queue/*.msg")), "the lossy API did not enqueue into its own folder"
        waiting(embedded, lambda: statuses(http, thread).get(answer_id) == "completed",
                QUEUED_STALE_SECONDS + 3 * SWEEP_INTERVAL + 10, "the sweeper to answer the lost message")
        took = time.monotonic() - posted
    print(f"\nlost message answered after {took:.1f} s (QUEUED_STALE_SECONDS={QUEUED_STALE_SECONDS:g})")
    assert took >= QUEUED_STALE_SECONDS - 0.5, "answered before the sweeper could have sent it: not lost?"
    assert "sweeper: re-enqueued" in embedded.processes["worker"].log_path.read_text(errors="replace")
