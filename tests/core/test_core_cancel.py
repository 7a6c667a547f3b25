"""Cancel and the thread-busy policies (issue 13), in process on real PostgreSQL.

The state changes are conditional UPDATEs, so the tests drive every order in which a cancel, the
worker's claim and the worker's finish can reach the database, and check that each order ends in
exactly one final state whose stored text matches it.
"""
from __future__ import annotations

import itertools
import random
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared.db import transaction as runs_transaction
from shared.models import Message, Run, RunStep, Status, StepStatus, utcnow
from shared.services import messages, runs
from shared.services.messages import AlreadyFinished, cancel_message, post_user_message
from shared.services.runs import BusyPolicy, Outcome, StepRecord

RUNS, MESSAGES = Run.__table__, Message.__table__


def run_row(connection, run_id):
    return connection.execute(select(RUNS).where(RUNS.c.id == run_id)).one()


def seqs(connection, thread_id):
    return [(m.seq, m.role, m.content, m.status) for m in connection.execute(
        select(MESSAGES).where(MESSAGES.c.thread_id == thread_id).order_by(MESSAGES.c.seq))]


def test_a_queued_run_is_cancelled_at_once_and_never_starts(connection, principal, thread, enqueued):
    exchange = post_user_message(principal, thread.id, content="wrong question")
    cancelled = cancel_message(principal, thread.id, exchange.response.id)
    assert cancelled.status == Status.CANCELLED and cancelled.content == ""
    assert run_row(connection, exchange.run_id).status == Status.CANCELLED
    assert runs.claim(exchange.run_id, "worker-a") is None  # a late delivery does not start it
    again = cancel_message(principal, thread.id, exchange.request.id)  # idempotent, also by the user message
    assert (again.id, again.status) == (exchange.response.id, Status.CANCELLED)


def test_the_runs_queued_behind_a_cancelled_one_start_at_once(connection, principal, thread, enqueued):
    first = post_user_message(principal, thread.id, content="first")
    second = post_user_message(principal, thread.id, content="second")
    assert runs.claim(second.run_id, "worker-b") is None  # its turn has not come
    cancel_message(principal, thread.id, first.response.id)
    assert enqueued[-1] == second.run_id  # enqueued again by the cancel, not by a sweep
    assert runs.claim(second.run_id, "worker-b") is not None


def test_the_per_user_cap_counts_a_cancelled_run_as_finished(principal, thread, set_settings):
    set_settings(max_active_runs_per_user=1)
    first = post_user_message(principal, thread.id, content="one")
    with pytest.raises(runs.RateLimited):
        post_user_message(principal, thread.id, content="two")
    cancel_message(principal, thread.id, first.response.id)
    post_user_message(principal, thread.id, content="two")


def test_a_run_in_progress_is_marked_and_its_worker_stores_the_partial_text(connection, principal, thread):
    exchange = post_user_message(principal, thread.id, content="long answer please")
    job = runs.claim(exchange.run_id, "worker-a")
    pending = cancel_message(principal, thread.id, exchange.response.id, wait=0)
    assert pending.status == Status.IN_PROGRESS and run_row(connection, exchange.run_id).cancel_requested_at
    now = utcnow()
    tool = StepRecord(index=0, kind="tool_call", name="save_memory", arguments={"text": "x"}, output="{}",
                      status=StepStatus.COMPLETED, started_at=now, finished_at=now)
    finished = runs.finish(job, Outcome(content="Once upon a", cancelled=True, steps=[tool]))
    assert finished.status == Status.CANCELLED
    stored = cancel_message(principal, thread.id, exchange.response.id)  # idempotent
    assert (stored.status, stored.content) == (Status.CANCELLED, "Once upon a")
    steps = connection.execute(select(RunStep.__table__).where(RunStep.__table__.c.run_id == exchange.run_id)).all()
    assert [s.name for s in steps] == ["save_memory"]  # side effects already done stay listed


def test_cancelling_a_finished_answer_is_a_conflict_carrying_the_message(principal, thread):
    exchange = post_user_message(principal, thread.id, content="hi")
    runs.finish(runs.claim(exchange.run_id, "worker-a"), Outcome(content="hello"))
    with pytest.raises(AlreadyFinished) as refused:
        cancel_message(principal, thread.id, exchange.response.id)
    assert refused.value.status == 409 and refused.value.resource.content == "hello"


def test_unknown_ids_and_other_users_are_refused(principal, make_principal, thread):
    import uuid

    from shared.errors import Forbidden, NotFound

    with pytest.raises(NotFound):
        cancel_message(principal, thread.id, uuid.uuid4())
    exchange = post_user_message(principal, thread.id, content="mine")
    other = make_principal(tenant=None)
    with pytest.raises(NotFound):  # another tenant's thread does not exist for them
        cancel_message(other, thread.id, exchange.response.id)
    reader = make_principal(perms=["ai_thread_messages.read"])
    with pytest.raises(Forbidden):
        cancel_message(reader, thread.id, exchange.response.id)


# -- a cancel racing the run's own life: every order, many times --------------------------------------

STEPS = ("claim", "cancel", "finish")


@pytest.mark.parametrize("order", list(itertools.permutations(STEPS)))
def test_a_cancel_racing_claim_and_finish_ends_in_exactly_one_state(connection, principal, thread, order):
    """Each permutation is one interleaving at statement granularity (the statements are the units
    PostgreSQL serialises on the run row); repeated with random texts, 40 runs per order."""
    rng = random.Random(13)
    for _ in range(40):
        exchange = post_user_message(principal, thread.id, content="race")
        job, outcome, result = None, None, None
        for step in order:
            if step == "claim":
                job = runs.claim(exchange.run_id, "worker-a")
            elif step == "cancel":
                try:
                    result = cancel_message(principal, thread.id, exchange.response.id, wait=0)
                except AlreadyFinished as exc:
                    result = exc
            elif job is not None:
                outcome = runs.finish(job, Outcome(content=f"answer {rng.random()}"))
        if job is not None and outcome is None:  # finish listed before its claim: the worker ends it last
            outcome = runs.finish(job, Outcome(content=f"answer {rng.random()}"))
        run = run_row(connection, exchange.run_id)
        message = connection.execute(select(MESSAGES).where(MESSAGES.c.id == exchange.response.id)).one()
        assert run.status == message.status and run.status in (Status.COMPLETED, Status.CANCELLED)
        if isinstance(result, AlreadyFinished):  # the finish came first: the cancel was refused
            assert run.status == Status.COMPLETED and message.content.startswith("answer")
        else:  # the cancel came first: cancelled, with whatever text the run had (none if never started)
            assert run.status == Status.CANCELLED
            assert message.content == ("" if job is None else message.content)
            if outcome is not None:
                assert outcome.status == Status.CANCELLED


def test_a_lost_worker_with_a_cancel_pending_is_ended_cancelled_by_the_sweeper(connection, principal, thread,
                                                                                 enqueued):
    exchange = post_user_message(principal, thread.id, content="stop me")
    behind = post_user_message(principal, thread.id, content="next")
    runs.claim(exchange.run_id, "worker-a")
    cancel_message(principal, thread.id, exchange.response.id, wait=0)
    connection.execute(update(RUNS).where(RUNS.c.id == exchange.run_id)
                       .values(lease_expires_at=utcnow() - timedelta(seconds=1)))  # the worker died
    assert runs.claim(exchange.run_id, "worker-b") is None  # not handed to another worker
    requeue, ended = runs.sweep()
    assert ended == [exchange.run_id] and behind.run_id in requeue
    assert run_row(connection, exchange.run_id).status == Status.CANCELLED


# -- interrupt and rollback ----------------------------------------------------------------------------

def test_interrupt_cancels_the_active_run_keeps_its_partial_answer_and_answers_next(connection, principal, thread,
                                                                                    enqueued):
    """No worker runs here, so the interrupting post's grace time runs out and it ends the run itself,
    with the text the run's event log holds; the worker's late finish stores nothing more."""
    from shared import events
    from shared.events import EventType

    first = post_user_message(principal, thread.id, content="first")
    job = runs.claim(first.run_id, "worker-a")
    events.append(first.run_id, EventType.MESSAGE_DELTA, {"text": "partial"}, job.attempt)
    second = post_user_message(principal, thread.id, content="actually", busy_policy=BusyPolicy.INTERRUPT)
    assert run_row(connection, first.run_id).status == Status.CANCELLED and enqueued[-1] == second.run_id
    assert runs.finish(job, Outcome(content="the whole first answer")) is None
    assert [s[:4] for s in seqs(connection, thread.id)] == [
        (1, "user", "first", Status.COMPLETED), (2, "assistant", "partial", Status.CANCELLED),
        (3, "user", "actually", Status.COMPLETED), (4, "assistant", "", Status.QUEUED)]
    following = runs.claim(second.run_id, "worker-a")
    assert {"role": "assistant", "content": "partial"} in following.history  # the partial answer is history


def test_interrupt_lets_a_worker_that_stops_in_time_store_its_own_partial_text(connection, principal, thread,
                                                                              enqueued):
    first = post_user_message(principal, thread.id, content="first")
    job = runs.claim(first.run_id, "worker-a")
    with runs_transaction() as session:  # the interrupt's own statements, without its wait
        cancels, _ = runs.apply_busy_policy(session, thread.id, BusyPolicy.INTERRUPT)
    assert [c.effect for c in cancels] == [runs.CancelEffect.REQUESTED]
    finished = runs.finish(job, Outcome(content="the worker's partial", cancelled=True))
    assert finished.status == Status.CANCELLED


def test_rollback_deletes_the_active_exchanges_and_the_new_post_takes_their_seqs(connection, principal, thread,
                                                                                 enqueued):
    done = post_user_message(principal, thread.id, content="kept")
    runs.finish(runs.claim(done.run_id, "worker-a"), Outcome(content="kept answer"))
    active = post_user_message(principal, thread.id, content="oops")
    runs.claim(active.run_id, "worker-a")
    queued = post_user_message(principal, thread.id, content="oops again")
    new = post_user_message(principal, thread.id, content="what I meant", busy_policy=BusyPolicy.ROLLBACK)
    assert [s[:3] for s in seqs(connection, thread.id)] == [
        (1, "user", "kept"), (2, "assistant", "kept answer"), (3, "user", "what I meant"), (4, "assistant", "")]
    assert connection.scalar(select(RUNS.c.id).where(RUNS.c.id.in_([active.run_id, queued.run_id]))) is None
    assert runs.claim(new.run_id, "worker-b") is not None  # nothing active before it any more


def test_rollback_closes_the_gap_under_a_later_direct_message(connection, principal, thread):
    active = post_user_message(principal, thread.id, content="oops")
    messages.create_message(principal, thread.id, role="system", content="note")  # seq 3, after the pending pair
    post_user_message(principal, thread.id, content="again", busy_policy=BusyPolicy.ROLLBACK)
    assert [s[:3] for s in seqs(connection, thread.id)] == [
        (1, "system", "note"), (2, "user", "again"), (3, "assistant", "")]
    assert connection.scalar(select(Run.__table__.c.id).where(Run.__table__.c.id == active.run_id)) is None
    from shared.models import Thread

    assert connection.scalar(select(Thread.last_seq).where(Thread.id == thread.id)) == 3


def test_a_worker_that_does_not_stop_in_time_is_overtaken_and_only_adds_its_steps(connection, principal, thread,
                                                                                    enqueued):
    """The model is silent before its first token (or a tool is slow): the cancel's grace time runs
    out, the cancel ends the run itself, and the worker's later finish stores no second answer."""
    exchange = post_user_message(principal, thread.id, content="think long")
    behind = post_user_message(principal, thread.id, content="next")
    job = runs.claim(exchange.run_id, "worker-a")
    stopped = cancel_message(principal, thread.id, exchange.response.id, wait=0.05)  # nobody stores it in time
    assert stopped.status == Status.CANCELLED and enqueued[-1] == behind.run_id
    now = utcnow()
    tool = StepRecord(index=0, kind="tool_call", name="save_memory", arguments={}, output="{}",
                      status=StepStatus.COMPLETED, started_at=now, finished_at=now)
    assert runs.finish(job, Outcome(content="the full late answer", steps=[tool])) is None
    message = connection.execute(select(MESSAGES).where(MESSAGES.c.id == exchange.response.id)).one()
    assert (message.status, message.content) == (Status.CANCELLED, "")
    assert connection.scalar(select(RunStep.__table__.c.name).where(
        RunStep.__table__.c.run_id == exchange.run_id)) == "save_memory"


def test_a_cancel_and_the_finish_racing_on_two_connections_end_in_one_state(core_engine, monkeypatch, make_principal):
    """The same race with real concurrency: the cancel and the worker's finish start together (a
    barrier) on two connections of their own, committing for real (this test leaves the savepoint
    isolation: its rows stay in the session's throwaway database, under a tenant of its own)."""
    import threading

    from sqlalchemy.orm import sessionmaker

    from shared import db
    from shared.services import threads

    monkeypatch.setattr(db, "_bound", sessionmaker(bind=core_engine, expire_on_commit=False))
    principal = make_principal()
    thread = threads.create_thread(principal, title="race")
    tally = {Status.COMPLETED: 0, Status.CANCELLED: 0}
    for i in range(60):
        exchange = post_user_message(principal, thread.id, content=f"race {i}")
        job = runs.claim(exchange.run_id, "worker-a")
        start, results = threading.Barrier(2), {}

        def do_cancel():
            start.wait()
            try:
                results["cancel"] = cancel_message(principal, thread.id, exchange.response.id, wait=0)
            except AlreadyFinished as exc:
                results["cancel"] = exc

        def do_finish():
            start.wait()
            results["finish"] = runs.finish(job, Outcome(content=f"full answer {i}"))

        racers = [threading.Thread(target=do_cancel), threading.Thread(target=do_finish)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=30)
        with core_engine.connect() as conn:
            run = conn.execute(select(RUNS).where(RUNS.c.id == exchange.run_id)).one()
            message = conn.execute(select(MESSAGES).where(MESSAGES.c.id == exchange.response.id)).one()
        assert run.status == message.status and message.content == f"full answer {i}"  # one text, the worker's
        assert results["finish"] is not None and results["finish"].status == run.status
        if isinstance(results["cancel"], AlreadyFinished):
            assert run.status == Status.COMPLETED
        else:
            assert run.status == Status.CANCELLED
        tally[run.status] += 1
    assert sum(tally.values()) == 60
    print(f"race outcomes: {tally}")


def test_a_message_no_run_produces_is_a_conflict_carrying_it(principal, thread):
    direct, _ = messages.create_message(principal, thread.id, role="assistant", content="imported")
    with pytest.raises(AlreadyFinished) as refused:
        cancel_message(principal, thread.id, direct.id)
    assert (refused.value.resource.id, refused.value.resource.content) == (direct.id, "imported")


@pytest.mark.parametrize("policy", [runs.BusyPolicy.INTERRUPT, runs.BusyPolicy.ROLLBACK])
def test_a_user_at_the_cap_can_still_replace_the_answer_in_progress(principal, thread, set_settings, policy):
    """interrupt and rollback end the thread's active run in the same transaction: it does not count
    against the cap, so a user at the cap can still stop and replace it (enqueue stays refused)."""
    set_settings(max_active_runs_per_user=1)
    first = post_user_message(principal, thread.id, content="one")
    with pytest.raises(runs.RateLimited):
        post_user_message(principal, thread.id, content="two")
    replaced = post_user_message(principal, thread.id, content="two", busy_policy=policy)
    assert replaced.response.status == Status.QUEUED
    with pytest.raises(runs.RateLimited):  # the new answer holds the one place
        post_user_message(principal, thread.id, content="three")
    assert first.run_id != replaced.run_id


def test_interrupting_one_thread_frees_no_place_held_by_another(principal, set_settings):
    from shared.services import threads

    set_settings(max_active_runs_per_user=1)
    busy, idle = threads.create_thread(principal), threads.create_thread(principal)
    post_user_message(principal, busy.id, content="one")
    with pytest.raises(runs.RateLimited):  # nothing to interrupt on the idle thread
        post_user_message(principal, idle.id, content="two", busy_policy=runs.BusyPolicy.INTERRUPT)
