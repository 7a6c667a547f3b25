"""SQLite write transactions per message in embedded mode, counted, with a bound that fails when a
change adds some.

SQLite lets one writer in at a time (``BEGIN IMMEDIATE``, shared/db.py), so under a burst every write
transaction is a turn every other writer waits for; when the worker wrote each run event in a
transaction of its own (about 8 per answer), posts waited out the write lock and answered 503 (issue
10). This counts the ``BEGIN IMMEDIATE``s of one message end to end in embedded mode (a SQLite file at
the head migration, no Redis: the event log is the ``run_events`` table), in process and from every
thread: the ai-threads post with ``Prefer: wait=0`` through the real Flask app, then the worker's task
body (``execute_run``) against the scripted model over HTTP. It also checks that the batched log keeps
its contract: ids 1, 2, 3 …, ``run.queued`` first, ``run.started`` next, the terminal event last, and
the deltas add up to the stored answer.

Like test_round_trips.py it does not run inside the folder's rolled-back PostgreSQL transaction.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import event, select

from shared import db, events
from shared.config import ROOT, settings
from tests.core.test_round_trips import scripted_model  # noqa: F401 - a fixture

# Before issue 10's batching: the post 2 (the post, run.queued), the run 7 with the scripted model
# (claim, run.started, step.started, message.delta, step.completed, finish, message.completed).
POST_WRITES = 1  # the post, run.queued inside it
RUN_WRITES = 3  # the claim, the finish with the last events, at most one batch of events between them


def _swap(name: str, value) -> object:
    """Settings are one frozen object shared by every module: change a field in place (restored after)."""
    old = getattr(settings, name)
    object.__setattr__(settings, name, value)
    return old


@pytest.fixture(autouse=True)
def connection(tmp_path) -> Iterator[None]:
    """Overrides the folder's rolled-back PostgreSQL connection: embedded mode on a SQLite file of
    this test's own, used through the production engine (shared.db)."""
    url = f"sqlite:///{tmp_path / 'threadline.db'}"
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes.update(url=url, configure_logger=False)
    command.upgrade(config, "head")
    db.dispose()
    saved = {name: _swap(name, value) for name, value in (("database_url", url), ("redis_url", ""))}
    saved_log, events._log = events._log, None
    try:
        yield
    finally:
        db.dispose()
        for name, value in saved.items():
            object.__setattr__(settings, name, value)
        events._log = saved_log


class WriteTransactions:
    """Every ``BEGIN IMMEDIATE`` the engine sends, from any thread, with the statements it ran."""

    def __init__(self, engine) -> None:
        self.transactions: list[list[str]] = []
        self._current: dict[int, list[str]] = {}
        event.listen(engine, "before_cursor_execute", self._statement)

    def _statement(self, _conn, _cursor, statement, *_args) -> None:
        text = " ".join(statement.split())
        me = threading.get_ident()
        if text == "BEGIN IMMEDIATE":
            self._current[me] = ["BEGIN IMMEDIATE"]
            self.transactions.append(self._current[me])
        elif me in self._current and text.split(" ", 1)[0] in ("INSERT", "UPDATE", "DELETE"):
            self._current[me].append(text[:70])

    def take(self) -> list[list[str]]:
        taken, self.transactions = self.transactions, []
        return taken


def test_one_message_costs_a_bounded_number_of_sqlite_write_transactions(scripted_model, enqueued):  # noqa: F811
    assert not settings.redis_url  # embedded mode: the event log is the run_events table
    from api import create_app
    from shared.models import Message, RunEvent, Status
    from shared.services import identity, threads
    from worker.tasks import execute_run

    user = identity.create_user(f"{uuid.uuid4().hex[:12]}@example.com", f"t-{uuid.uuid4().hex[:8]}")
    token, _ = identity.create_token(user.email)
    thread = threads.create_thread(identity.authenticate_token(token), title="sqlite writes")
    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {token}", "Prefer": "wait=0"}
    counter = WriteTransactions(db.engine())

    def post() -> list[list[str]]:
        response = client.post(f"/api/v1/ai/threads/{thread.id}/messages", json={"content": "hello"}, headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)
        return counter.take()

    def run() -> list[list[str]]:
        assert execute_run(str(enqueued[-1])) == Status.COMPLETED
        return counter.take()

    post(), run()  # the first message of a thread and a fresh process warm caches: count the second
    posted, ran = post(), run()

    def show(what: str, transactions: list[list[str]]) -> str:
        return "\n".join([f"{what}: {len(transactions)} write transactions",
                          *("  " + " | ".join(t) for t in transactions)])

    print("\n" + show("post", posted) + "\n" + show("run", ran))
    assert len(posted) <= POST_WRITES, show("post", posted)
    assert len(ran) <= RUN_WRITES, show("run", ran)

    with db.read() as session:
        answer = session.scalars(select(Message).where(Message.role == "assistant").order_by(Message.seq.desc())).first()
        logged = session.execute(select(RunEvent.seq, RunEvent.type, RunEvent.data)
                                 .where(RunEvent.run_id == enqueued[-1]).order_by(RunEvent.seq)).all()
    assert answer.status == Status.COMPLETED and answer.content
    assert [e.seq for e in logged] == list(range(1, len(logged) + 1))
    types = [e.type for e in logged]
    assert types[:3] == ["run.queued", "run.started", "step.started"] and types[-1] == "message.completed", types
    assert types.count("message.completed") == 1
    assert "".join(e.data["text"] for e in logged if e.type == "message.delta") == answer.content
