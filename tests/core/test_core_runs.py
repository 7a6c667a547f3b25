"""The run lifecycle (claim, renew_lease, finish, sweep) called in process on real PostgreSQL.

Each state change is one conditional UPDATE; these tests drive the conditions directly (a lease in
the past, attempts used up, an earlier message still being answered) instead of waiting for them.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared.models import Message, Run, RunStep, Status, StepStatus, Thread, utcnow
from shared.services import runs
from shared.services.messages import post_user_message
from shared.services.runs import FAILED_TEXT, Outcome, StepRecord

RUNS, MESSAGES, THREADS = Run.__table__, Message.__table__, Thread.__table__


def run_row(connection, run_id):
    return connection.execute(select(RUNS).where(RUNS.c.id == run_id)).one()


def message_row(connection, message_id):
    return connection.execute(select(MESSAGES).where(MESSAGES.c.id == message_id)).one()


def expire_lease(connection, run_id) -> None:
    connection.execute(update(RUNS).where(RUNS.c.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def step(index: int = 0, status: StepStatus = StepStatus.COMPLETED) -> StepRecord:
    now = utcnow()
    return StepRecord(index=index, kind="model_call", name="threadline-dev", arguments=None, output="hi",
                      status=status, started_at=now, finished_at=now)


@pytest.mark.parametrize("attempt", [1, 2])
def test_every_test_starts_from_an_empty_database(connection, principal, thread, attempt):
    """The savepoint-per-test isolation itself: the previous parametrization's rows are gone."""
    assert connection.scalar(select(THREADS.c.id).where(THREADS.c.title == "core", THREADS.c.id != thread.id)) is None
    post_user_message(principal, thread.id, content="rolled back at the end")


# -- claim -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_history", [False, True])
def test_a_claim_whose_request_message_is_not_there_raises(connection, principal, thread, with_history):
    """The run's columns come on the request's row only (the history rows carry NULL there): a run
    whose request is not among the prompt rows must still be refused, not turned into a job of NULLs."""
    if with_history:
        post_user_message(principal, thread.id, content="earlier")
        runs.finish(runs.claim(run_row_ids(connection, thread.id)[0], "worker-a"), Outcome(content="earlier answer"))
    exchange = post_user_message(principal, thread.id, content="hello")
    request_id = run_row(connection, exchange.run_id).request_message_id
    connection.execute(update(MESSAGES).where(MESSAGES.c.id == request_id).values(status=Status.IN_PROGRESS))

    with pytest.raises(RuntimeError, match="request message is missing"):
        runs.claim(exchange.run_id, "worker-a")

def test_claim_takes_a_queued_run_once_and_reads_what_the_agent_needs(connection, principal, thread):
    post_user_message(principal, thread.id, content="earlier")  # its run is answered first, below
    earlier = runs.claim(run_row_ids(connection, thread.id)[0], "worker-a")
    runs.finish(earlier, Outcome(content="earlier answer"))
    exchange = post_user_message(principal, thread.id, content="hello", context={"page": "x"}, context_key="state")

    job = runs.claim(exchange.run_id, "worker-a")

    assert (job.attempt, job.owner, job.thread_id, job.user_id) == (1, "worker-a", thread.id, principal.user_id)
    assert (job.content, job.context, job.context_key) == ("hello", {"page": "x"}, "state")
    assert job.history == [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "earlier answer"}]
    run = run_row(connection, exchange.run_id)
    assert (run.status, run.attempts, run.lease_owner) == (Status.IN_PROGRESS, 1, "worker-a")
    assert run.lease_expires_at > utcnow()
    assert message_row(connection, exchange.response.id).status == Status.IN_PROGRESS
    assert runs.claim(exchange.run_id, "worker-b") is None  # a duplicate delivery while the lease is live


def run_row_ids(connection, thread_id):
    return list(connection.scalars(select(RUNS.c.id).where(RUNS.c.thread_id == thread_id).order_by(RUNS.c.queued_at)))


def test_a_later_message_waits_for_its_turn(principal, thread):
    first = post_user_message(principal, thread.id, content="first")
    second = post_user_message(principal, thread.id, content="second")

    assert runs.claim(second.run_id, "worker-b") is None  # the first is still queued
    job = runs.claim(first.run_id, "worker-a")
    assert runs.claim(second.run_id, "worker-b") is None  # ... and now in progress
    finished = runs.finish(job, Outcome(content="one"))
    assert finished.next_run == second.run_id  # the worker enqueues it right away
    assert runs.claim(second.run_id, "worker-b").attempt == 1


def test_an_expired_lease_is_taken_over_and_the_old_owner_can_no_longer_write(connection, principal, thread):
    exchange = post_user_message(principal, thread.id, content="hello")
    lost = runs.claim(exchange.run_id, "worker-a")
    expire_lease(connection, exchange.run_id)

    taken = runs.claim(exchange.run_id, "worker-b")
    assert (taken.attempt, taken.owner) == (2, "worker-b")
    assert runs.renew_lease(exchange.run_id, "worker-a") is False
    assert runs.renew_lease(exchange.run_id, "worker-b") is True
    assert runs.finish(lost, Outcome(content="stale answer")) is None
    assert message_row(connection, exchange.response.id).content == ""
    runs.finish(taken, Outcome(content="fresh answer"))
    assert message_row(connection, exchange.response.id).content == "fresh answer"


def test_a_run_out_of_attempts_fails_with_an_error_answer_on_its_next_delivery(connection, principal, thread,
                                                                                set_settings):
    set_settings(run_max_attempts=1)
    exchange = post_user_message(principal, thread.id, content="hello")
    runs.claim(exchange.run_id, "worker-a")
    expire_lease(connection, exchange.run_id)

    assert runs.claim(exchange.run_id, "worker-b") is None
    run, answer = run_row(connection, exchange.run_id), message_row(connection, exchange.response.id)
    assert (run.status, run.error, run.lease_expires_at) == (Status.FAILED, "too many attempts", None)
    assert (answer.status, answer.is_error, answer.content) == (Status.FAILED, True, FAILED_TEXT)


@pytest.mark.parametrize("cancelled", [False, True], ids=["completed", "cancelled"])
def test_the_out_of_attempts_path_never_overwrites_an_answer_stored_after_it_looked(connection, principal, thread,
                                                                                    set_settings, cancelled):
    """Issue 15: the out-of-attempts check reads the run without a lock; its owner may store the answer
    between that read and the write. Here the read happens first (the session keeps the run as it saw
    it: in progress, lease expired, no attempts left), then the owner finishes, then the path goes on
    with what it saw. The answer stays as the owner stored it."""
    set_settings(run_max_attempts=1)
    exchange = post_user_message(principal, thread.id, content="hello")
    job = runs.claim(exchange.run_id, "worker-a")
    expire_lease(connection, exchange.run_id)  # a slow owner: a redelivery now finds the run out of attempts

    from shared import db
    with db.transaction() as session:
        seen = session.scalar(select(Run).where(Run.id == exchange.run_id))  # the unlocked read, stale from here
        assert (seen.status, seen.attempts) == (Status.IN_PROGRESS, 1)
        stored = runs.finish(job, Outcome(content="the real answer", cancelled=cancelled))
        assert stored is not None
        runs._fail_if_out_of_attempts(session, exchange.run_id, runs.database_now(session))

    status = Status.CANCELLED if cancelled else Status.COMPLETED
    run, answer = run_row(connection, exchange.run_id), message_row(connection, exchange.response.id)
    assert (run.status, run.error) == (status, None)
    assert (answer.status, answer.is_error, answer.content) == (status, False, "the real answer")


# -- finish ----------------------------------------------------------------------------------------

def test_finish_stores_the_answer_its_steps_and_ends_the_run(connection, principal, thread):
    exchange = post_user_message(principal, thread.id, content="hello")
    job = runs.claim(exchange.run_id, "worker-a")

    finished = runs.finish(job, Outcome(content="hi there", citations=[{"chunk_id": "c"}], steps=[step(0), step(1)],
                                        usage={"total_tokens": 3}))

    assert finished.next_run is None
    run, answer = run_row(connection, exchange.run_id), message_row(connection, exchange.response.id)
    assert (run.status, run.lease_expires_at, run.usage) == (Status.COMPLETED, None, {"total_tokens": 3})
    assert (answer.status, answer.content, answer.citations) == (Status.COMPLETED, "hi there", [{"chunk_id": "c"}])
    steps = connection.execute(select(RunStep.__table__).where(RunStep.run_id == exchange.run_id)).all()
    assert [(s.attempt, s.index, s.status) for s in steps] == [(1, 0, StepStatus.COMPLETED), (1, 1, StepStatus.COMPLETED)]
    assert runs.finish(job, Outcome(content="twice")) is None  # answered once


def test_an_error_outcome_fails_the_run_and_its_message(connection, principal, thread):
    exchange = post_user_message(principal, thread.id, content="hello")
    runs.finish(runs.claim(exchange.run_id, "worker-a"), Outcome(content="sorry", is_error=True, error="boom"))
    assert run_row(connection, exchange.run_id).status == Status.FAILED
    answer = message_row(connection, exchange.response.id)
    assert (answer.status, answer.is_error) == (Status.FAILED, True)


@pytest.mark.parametrize("changed", [True, False])
def test_the_threads_context_is_written_back_only_when_a_tool_changed_it(connection, principal, thread, changed):
    exchange = post_user_message(principal, thread.id, content="fill it", context={"name": ""})
    job = runs.claim(exchange.run_id, "worker-a")
    # Meanwhile a later post replaced the thread's context.
    post_user_message(principal, thread.id, content="newer", context={"name": "", "page": 2})
    updated = {"name": "Ada"} if changed else {"name": ""}

    runs.finish(job, Outcome(content="ok", updated_context=updated, context_changed=changed))

    assert message_row(connection, exchange.response.id).updated_context == updated  # shown either way
    stored = connection.scalar(select(THREADS.c.context).where(THREADS.c.id == thread.id))
    assert stored == (updated if changed else {"name": "", "page": 2})


# -- sweep -----------------------------------------------------------------------------------------

def test_sweep_requeues_lost_runs_and_fails_those_out_of_attempts(connection, principal, thread, make_principal,
                                                                  set_settings):
    from shared.services import threads

    set_settings(run_max_attempts=2, queued_stale_seconds=30)
    other = make_principal()
    fresh = post_user_message(other, threads.create_thread(other).id, content="just posted")
    never_sent = post_user_message(principal, thread.id, content="broker lost it")
    connection.execute(update(RUNS).where(RUNS.c.id == never_sent.run_id)
                       .values(queued_at=utcnow() - timedelta(minutes=5)))
    dead_worker = post_user_message(principal, threads.create_thread(principal).id, content="worker died")
    runs.claim(dead_worker.run_id, "worker-a")
    expire_lease(connection, dead_worker.run_id)
    hopeless = post_user_message(principal, threads.create_thread(principal).id, content="died twice")
    runs.claim(hopeless.run_id, "worker-a")
    connection.execute(update(RUNS).where(RUNS.c.id == hopeless.run_id)
                       .values(attempts=2, lease_expires_at=utcnow() - timedelta(seconds=1)))

    requeue, failed = runs.sweep()

    assert set(requeue) == {never_sent.run_id, dead_worker.run_id} and failed == [hopeless.run_id]
    requeued = run_row(connection, dead_worker.run_id)
    assert (requeued.status, requeued.lease_owner, requeued.lease_expires_at) == (Status.QUEUED, None, None)
    assert run_row(connection, fresh.run_id).status == Status.QUEUED
    answer = message_row(connection, hopeless.response.id)
    assert (answer.status, answer.is_error, answer.content) == (Status.FAILED, True, FAILED_TEXT)
    assert runs.sweep() == ([], [])  # touched: the next sweep does not repeat them
    assert runs.claim(dead_worker.run_id, "worker-b").attempt == 2


def _plan(connection, statement) -> str:
    """EXPLAIN of the statement as psycopg2 sends it (parameters inlined)."""
    sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    return "\n".join(connection.exec_driver_sql("EXPLAIN " + sql).scalars())


def test_the_sweeper_the_gauges_and_the_last_context_key_read_their_partial_indexes(connection, principal, thread):
    """Migration 0013: with thousands of finished runs, hundreds in progress and queued, the sweeper's
    two halves are served by ix_runs_leased and ix_runs_queued, the queue gauges by the same, and the
    post's last context key by ix_messages_context_key (not by a walk through the thread)."""
    from shared.services import messages
    from worker import observability

    connection.exec_driver_sql("""
        WITH m AS (
            INSERT INTO messages (id, thread_id, seq, role, content, context_key, citations, "references", is_error,
                                  status, created_at, updated_at)
            SELECT gen_random_uuid(), %(thread)s, s, 'user', 'x', CASE WHEN s = 7 THEN 'state' END, '[]', '[]',
                   false, 'completed', now(), now()
            FROM generate_series(1, 6000) s RETURNING id, seq)
        INSERT INTO runs (id, thread_id, user_id, request_message_id, response_message_id, status, attempts,
                          lease_owner, lease_expires_at, queued_at)
        SELECT gen_random_uuid(), %(thread)s, %(user)s, q.id, a.id,
               CASE WHEN q.seq <= 5600 THEN 'completed' WHEN q.seq <= 5800 THEN 'in_progress' ELSE 'queued' END, 1,
               'w', CASE WHEN q.seq BETWEEN 5601 AND 5800 THEN now() + interval '1 hour' END, now()
        FROM m q JOIN m a ON a.seq = q.seq + 1 WHERE q.seq %% 2 = 1""", {"thread": thread.id, "user": principal.user_id})
    connection.exec_driver_sql("ANALYZE runs; ANALYZE messages")
    now = utcnow()

    sweep = _plan(connection, runs.lost_runs(now, now - timedelta(minutes=5)))
    assert "ix_runs_leased" in sweep and "ix_runs_queued" in sweep and "Seq Scan" not in sweep, sweep
    assert "ix_runs_queued" in _plan(connection, observability._QUEUED)
    assert "ix_runs_leased" in _plan(connection, observability._IN_PROGRESS)
    last_key = _plan(connection, messages._LAST_CONTEXT_KEY.params(thread_id=thread.id))
    assert "ix_messages_context_key" in last_key, last_key


def test_a_finished_answer_is_read_back_with_its_steps(principal, thread):
    from shared.services import messages

    exchange = post_user_message(principal, thread.id, content="hello")
    runs.finish(runs.claim(exchange.run_id, "worker-a"), Outcome(content="hi", steps=[step(0)]))

    answer, steps = messages.get_message(principal, thread.id, exchange.response.id)
    assert (answer.status, answer.content, [s.index for s in steps]) == (Status.COMPLETED, "hi", [0])
    replayed = messages.await_response(messages.Exchange(request=exchange.request, response=answer,
                                                         run_id=exchange.run_id, replayed=True), 0)
    assert [s.name for s in replayed.steps] == ["threadline-dev"]  # read() inside the bound connection
    listed, total, by_message = messages.list_messages(principal, thread.id)
    assert total == 2 and [m.status for m in listed] == [Status.COMPLETED, Status.COMPLETED]
    assert list(by_message) == [exchange.response.id]


def test_the_waited_answer_is_what_a_later_get_returns(principal, thread):
    """await_response reads plain rows (messages.stored_answer), not ORM entities: every column of the
    message and of each step, and the run v1-threads renders as details, equal what GET reads."""
    from shared.services import messages

    exchange = post_user_message(principal, thread.id, content="hello")
    job = runs.claim(exchange.run_id, "worker-a")
    runs.finish(job, Outcome(content="hi", steps=[step(0), step(1, StepStatus.FAILED)], usage={"total_tokens": 3}))

    waited = messages.await_response(exchange, 1)
    answer, steps = messages.get_message(principal, thread.id, exchange.response.id)
    columns = [c.key for c in MESSAGES.columns]
    assert {c: getattr(waited.response, c) for c in columns} == {c: getattr(answer, c) for c in columns}
    assert waited.response.finished and type(waited.response.status) is type(answer.status)
    step_columns = [c.key for c in RunStep.__table__.columns]
    as_rows = lambda found: [{c: getattr(s, c) for c in step_columns} for s in found]  # noqa: E731
    assert as_rows(waited.steps) == as_rows(steps) and len(steps) == 2
    run, run_steps = messages.run_details([answer])[answer.id]
    assert {c: getattr(waited.run, c) for c in ("id", "status", "attempts", "model_id", "usage")} == \
        {c: getattr(run, c) for c in ("id", "status", "attempts", "model_id", "usage")}
    assert as_rows(waited.run_steps) == as_rows(run_steps)


def test_the_claim_brings_the_users_own_newest_memories_for_the_prompt(principal, thread, make_principal, set_settings,
                                                                       monkeypatch):
    """On PostgreSQL the claim reads the memories along with the run; the agent recalls from them what
    memories.recall would have read itself (the owner's only, newest first, the search when more)."""
    from shared.services import memories
    from worker.agent import loop

    monkeypatch.setattr(loop, "settings", set_settings(memory_prompt_limit=2))
    other = make_principal(tenant=None)
    memories.save(other.tenant_id, other.user_id, "someone else's secret")
    for fact in ("likes tea", "lives in Oslo", "works nights"):
        memories.save(principal.tenant_id, principal.user_id, fact)
    exchange = post_user_message(principal, thread.id, content="where do I live")

    job = runs.claim(exchange.run_id, "worker-a")

    if job.newest_memories is not None:  # PostgreSQL
        assert [m.content for m in job.newest_memories] == [
            m.content for m in memories.recent(principal.tenant_id, principal.user_id, 3)]
    expected = memories.recall(principal.tenant_id, principal.user_id, "where do I live", 2)
    assert loop.recall_memories(job) == expected and len(expected) == 2
    assert "lives in Oslo" in expected and "someone else's secret" not in expected


def test_the_runs_end_records_the_webhook_deliveries_its_tenant_subscribed_to(connection, principal, thread):
    """Written with the run's end (one statement on PostgreSQL), returned for the worker to send."""
    from shared.models import Tenant, WebhookDelivery
    from shared.models import Thread as ThreadModel
    from shared.services import webhooks

    tenant = connection.scalar(select(Tenant.name).where(Tenant.id == principal.tenant_id))
    wanted = webhooks.create_subscription(tenant, "https://example.com/hook", ["run.completed"])
    webhooks.create_subscription(tenant, "https://example.com/other", ["run.failed"])
    exchange = post_user_message(principal, thread.id, content="hello")
    job = runs.claim(exchange.run_id, "worker-a")

    finished = runs.finish(job, Outcome(content="hi"))

    assert len(finished.deliveries) == 1
    delivery = connection.execute(select(WebhookDelivery.__table__).where(
        WebhookDelivery.__table__.c.id == finished.deliveries[0])).one()
    public_id = connection.scalar(select(ThreadModel.public_id).where(ThreadModel.id == thread.id))
    assert (delivery.subscription_id, delivery.event, delivery.status, delivery.attempts) == (
        wanted.id, "run.completed", "pending", 0)
    assert delivery.payload["type"] == "run.completed" and delivery.payload["timestamp"]
    assert delivery.payload["data"] == {
        "run_id": str(exchange.run_id), "status": "completed", "thread_id": str(public_id),
        "thread_number": thread.id, "message_id": str(exchange.response.id),
        "request_message_id": str(exchange.request.id), "tenant_id": str(principal.tenant_id)}
