"""post_user_message and its idempotency paths, called in process on real PostgreSQL.

What the black-box suite cannot see cheaply: exactly which rows one post writes, that a replay writes
none and enqueues nothing, and that the cap and the idle check refuse before anything is stored.
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from shared.errors import Conflict, Forbidden, NotFound, RateLimited, ValidationFailed
from shared.models import Message, Run, Status, Tenant, Thread
from shared.services import messages, runs
from shared.services.messages import post_user_message


def count(connection, model, **where) -> int:
    query = select(func.count()).select_from(model).where(*(getattr(model, k) == v for k, v in where.items()))
    return connection.scalar(query)


def test_a_post_stores_the_exchange_and_a_queued_run_then_enqueues_it(connection, principal, thread, enqueued):
    exchange = post_user_message(principal, thread.id, content="hello", context={"form": {"name": ""}},
                                 context_key="context")

    request, response = exchange.request, exchange.response
    assert (request.seq, request.role, request.status) == (1, "user", Status.COMPLETED)
    assert (response.seq, response.role, response.status) == (2, "assistant", Status.QUEUED)
    assert request.created_at < response.created_at
    run = connection.execute(select(Run.__table__).where(Run.id == exchange.run_id)).one()
    assert (run.status, run.attempts, run.user_id) == (Status.QUEUED, 0, principal.user_id)
    assert (run.request_message_id, run.response_message_id) == (request.id, response.id)
    assert enqueued == [exchange.run_id]  # after the commit, once
    stored = connection.execute(select(Thread.__table__).where(Thread.id == thread.id)).one()
    assert (stored.last_seq, stored.context) == (2, {"form": {"name": ""}})


def test_posts_by_public_id_take_the_next_seqs(principal, thread):
    post_user_message(principal, thread.id, content="one")
    second = post_user_message(principal, thread.public_id, content="two")
    assert (second.request.seq, second.response.seq) == (3, 4)


@pytest.mark.parametrize("content", ["", "   ", "x" * (messages.MAX_CONTENT + 1)])
def test_bad_content_is_refused_before_anything_is_stored(connection, principal, thread, enqueued, content):
    with pytest.raises(ValidationFailed) as raised:
        post_user_message(principal, thread.id, content=content)
    assert "content" in raised.value.fields
    assert count(connection, Message, thread_id=thread.id) == 0 and enqueued == []


def test_a_colleagues_thread_is_forbidden_and_other_tenants_threads_do_not_exist(connection, make_principal,
                                                                                  principal, thread, enqueued):
    tenant_name = connection.scalar(select(Tenant.name).where(Tenant.id == principal.tenant_id))
    with pytest.raises(Forbidden):
        post_user_message(make_principal(tenant=tenant_name), thread.id, content="mine now?")
    with pytest.raises(NotFound):
        post_user_message(make_principal(), thread.public_id, content="across tenants")
    with pytest.raises(NotFound):
        post_user_message(principal, 10**12, content="no such thread")
    assert count(connection, Message, thread_id=thread.id) == 0 and enqueued == []


def test_the_create_permission_is_required(make_principal):
    reader = make_principal(perms=["ai_threads.create", "ai_thread_messages.read"])
    from shared.services import threads

    own = threads.create_thread(reader)
    with pytest.raises(Forbidden):
        post_user_message(reader, own.id, content="hi")


# -- idempotency ----------------------------------------------------------------------------------

def test_a_retry_with_the_same_key_returns_the_same_exchange_and_starts_no_run(connection, principal, thread,
                                                                               enqueued):
    first = post_user_message(principal, thread.id, content="hello", client_message_id="key-1")
    again = post_user_message(principal, thread.id, content="hello", client_message_id="key-1")

    assert again.replayed and not first.replayed
    assert (again.request.id, again.response.id, again.run_id) == (first.request.id, first.response.id, first.run_id)
    assert count(connection, Run, thread_id=thread.id) == 1 and count(connection, Message, thread_id=thread.id) == 2
    assert enqueued == [first.run_id]


def test_the_same_key_with_another_body_is_a_conflict(principal, thread):
    post_user_message(principal, thread.id, content="hello", client_message_id="key-2")
    with pytest.raises(Conflict, match="different request body"):
        post_user_message(principal, thread.id, content="something else", client_message_id="key-2")


def test_keys_are_per_thread(principal, thread):
    from shared.services import threads

    other = threads.create_thread(principal)
    first = post_user_message(principal, thread.id, content="hello", client_message_id="key-3")
    second = post_user_message(principal, other.id, content="hello", client_message_id="key-3")
    assert not second.replayed and second.run_id != first.run_id


def test_a_caller_chosen_message_id_taken_in_another_thread_is_a_conflict(principal, thread):
    from shared.services import threads

    other = threads.create_thread(principal)
    message_id = uuid.uuid4()
    post_user_message(principal, thread.id, content="hello", message_id=message_id, client_message_id=str(message_id))
    # The primary key collides in the insert: the IntegrityError path finds no replay in this thread.
    with pytest.raises(Conflict, match="already in use"):
        post_user_message(principal, other.id, content="hello", message_id=message_id,
                          client_message_id=str(message_id))


def test_a_key_used_by_a_direct_message_cannot_start_a_run(principal, thread):
    message_id = uuid.uuid4()
    messages.create_message(principal, thread.id, role="user", content="imported", message_id=message_id)
    with pytest.raises(Conflict):
        post_user_message(principal, thread.id, content="imported", client_message_id=str(message_id))


def test_direct_messages_are_idempotent_by_id(connection, principal, thread):
    message_id = uuid.uuid4()
    stored, created = messages.create_message(principal, thread.id, role="assistant", content="hi",
                                              message_id=message_id)
    again, created_again = messages.create_message(principal, thread.id, role="assistant", content="hi",
                                                   message_id=message_id)
    assert (created, created_again) == (True, False) and again.id == stored.id
    assert stored.status == Status.COMPLETED
    # Seed 004: "submitting the same message_id twice returns the existing message", whatever the body.
    replayed, created_replay = messages.create_message(principal, thread.id, role="assistant", content="changed",
                                                       message_id=message_id)
    assert not created_replay and replayed.id == stored.id and replayed.content == "hi"
    assert count(connection, Message, thread_id=thread.id) == 1


# -- admission: the per-user cap and If-Thread-Idle -----------------------------------------------

def test_the_per_user_cap_counts_active_runs_only(connection, principal, thread, set_settings, enqueued):
    set_settings(max_active_runs_per_user=2)
    first = post_user_message(principal, thread.id, content="one")
    post_user_message(principal, thread.id, content="two")
    with pytest.raises(RateLimited) as refused:
        post_user_message(principal, thread.id, content="three")
    assert refused.value.retry_after and count(connection, Run, thread_id=thread.id) == 2

    job = runs.claim(first.run_id, "worker-a")
    runs.finish(job, runs.Outcome(content="done"))
    post_user_message(principal, thread.id, content="three")  # one finished: room again
    assert len(enqueued) == 3


def test_the_cap_is_per_user(make_principal, set_settings):
    from shared.services import threads

    set_settings(max_active_runs_per_user=1)
    alice, bob = make_principal(), make_principal()
    post_user_message(alice, threads.create_thread(alice).id, content="a")
    post_user_message(bob, threads.create_thread(bob).id, content="b")  # Alice's run does not count


def test_reject_refuses_behind_an_active_run_and_stores_nothing(connection, principal, thread, enqueued):
    post_user_message(principal, thread.id, content="first", busy_policy=runs.BusyPolicy.REJECT)  # idle: accepted
    with pytest.raises(Conflict, match="still answering"):
        post_user_message(principal, thread.id, content="second", busy_policy=runs.BusyPolicy.REJECT)
    assert count(connection, Message, thread_id=thread.id) == 2 and len(enqueued) == 1
    queued = post_user_message(principal, thread.id, content="second")  # without it: queued behind
    assert queued.response.status == Status.QUEUED


def test_a_replay_is_answered_even_when_the_thread_is_busy(principal, thread, set_settings):
    set_settings(max_active_runs_per_user=1)
    first = post_user_message(principal, thread.id, content="hello", client_message_id="key-4")
    again = post_user_message(principal, thread.id, content="hello", client_message_id="key-4", busy_policy=runs.BusyPolicy.REJECT)
    assert again.replayed and again.run_id == first.run_id
