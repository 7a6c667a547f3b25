"""In-line transactions (shared.db.transaction(in_line=True)): BEGIN rides with the first statement and
COMMIT with the one marked ``commits()``; a lead (``led_by``) rides ahead of its statement. Nothing is
kept on an error, and no connection goes back to the pool inside a transaction.

Like test_round_trips, these use a database of their own through the production engine and pool (the
folder's rolled-back connection would turn every transaction into a savepoint)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared import db
from shared.models import ACTIVE_STATUSES, Run, Tenant
from tests.core.conftest import own_database

TENANTS = Tenant.__table__
_INSERT_TENANT = insert(TENANTS).values(id=bindparam("tenant_ref"), name=bindparam("tenant_name"))


@pytest.fixture(autouse=True)
def connection(monkeypatch) -> Iterator[None]:
    """Overrides the folder's rolled-back connection (see the module docstring)."""
    with own_database(monkeypatch, "threadline_inline"):
        yield


@pytest.fixture
def sent() -> Iterator[list[str]]:
    """The strings this thread sends, one per round trip (after the hook has combined them)."""
    texts: list[str] = []
    me = threading.get_ident()

    def record(_conn, _cursor, statement, *_args) -> None:
        if threading.get_ident() == me:
            texts.append(statement)

    engine = db.engine()
    event.listen(engine, "before_cursor_execute", record)
    yield texts
    event.remove(engine, "before_cursor_execute", record)


def tenant_names() -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(TENANTS.c.name).order_by(TENANTS.c.name)))


def assert_clean(raw) -> None:
    """The DBAPI connection is back in the pool as it was taken: no transaction open, autocommit off."""
    assert raw.info.transaction_status == 0 and raw.autocommit is False


def test_begin_and_commit_ride_with_the_first_and_the_marked_statement(sent):
    with db.transaction(in_line=True) as session:
        raw = session.connection().connection.dbapi_connection
        session.execute(_INSERT_TENANT, {"tenant_ref": uuid.uuid4(), "tenant_name": "first"})
        session.execute(db.commits(_INSERT_TENANT), {"tenant_ref": uuid.uuid4(), "tenant_name": "second"})
    assert len(sent) == 2, sent
    assert sent[0].startswith("BEGIN; INSERT") and "COMMIT" not in sent[0], sent
    assert sent[1].endswith("; COMMIT") and "BEGIN" not in sent[1], sent
    assert tenant_names() == ["first", "second"]
    assert_clean(raw)


def test_without_a_marked_statement_the_block_commits_at_its_end_orm_changes_included(sent):
    with db.transaction(in_line=True) as session:
        raw = session.connection().connection.dbapi_connection
        session.execute(_INSERT_TENANT, {"tenant_ref": uuid.uuid4(), "tenant_name": "core"})
        session.add(Tenant(id=uuid.uuid4(), name="orm"))  # flushed at the end of the block
    assert sent[0].startswith("BEGIN; ") and sent[-1] == "COMMIT", sent
    assert tenant_names() == ["core", "orm"]
    assert_clean(raw)


def test_an_error_in_the_block_rolls_everything_back():
    with pytest.raises(RuntimeError), db.transaction(in_line=True) as session:
        raw = session.connection().connection.dbapi_connection
        session.execute(_INSERT_TENANT, {"tenant_ref": uuid.uuid4(), "tenant_name": "lost"})
        raise RuntimeError("the service refuses")
    assert tenant_names() == []
    assert_clean(raw)


def test_a_failing_marked_statement_skips_its_commit_and_rolls_back():
    taken = uuid.uuid4()
    with pytest.raises(IntegrityError), db.transaction(in_line=True) as session:
        raw = session.connection().connection.dbapi_connection
        session.execute(_INSERT_TENANT, {"tenant_ref": taken, "tenant_name": "lost"})
        session.execute(db.commits(_INSERT_TENANT), {"tenant_ref": taken, "tenant_name": "duplicate"})
    assert tenant_names() == []
    assert_clean(raw)
    with db.transaction(in_line=True) as session:  # the pooled connection is usable again
        session.execute(db.commits(_INSERT_TENANT), {"tenant_ref": taken, "tenant_name": "kept"})
    assert tenant_names() == ["kept"]


def test_a_lead_runs_first_in_the_same_round_trip(sent):
    tenant = uuid.uuid4()
    with db.transaction() as session:
        session.execute(_INSERT_TENANT, {"tenant_ref": tenant, "tenant_name": "before"})
    sent.clear()
    # the lead's parameters are parameters of the statement too
    lead = update(TENANTS).where(TENANTS.c.id == bindparam("tenant_ref")).values(name=bindparam("tenant_name"))
    statement = db.led_by(select(func.count()).select_from(TENANTS).where(
        TENANTS.c.id == bindparam("tenant_ref"), TENANTS.c.name == bindparam("tenant_name")), lead)
    with db.transaction(in_line=True) as session:
        counted = db.execute_led(session, statement, lead, {"tenant_ref": tenant, "tenant_name": "led"})
        assert counted.scalar() == 1  # the statement ran after the lead
    assert len(sent) == 2 and sent[0].startswith("BEGIN; EXECUTE tl_") and sent[1] == "COMMIT", sent
    assert tenant_names() == ["led"]


def test_concurrent_posts_of_one_user_never_pass_the_cap(set_settings, enqueued):
    """The user lock rides ahead of the count in one round trip: the count still sees every run
    committed before the lock was granted, so racing posts cannot pass the cap."""
    from shared import permissions
    from shared.errors import RateLimited
    from shared.permissions import Principal
    from shared.services import identity, messages, threads

    cap, posters = 3, 8
    set_settings(max_active_runs_per_user=cap)
    user = identity.create_user("inline-cap@example.com", "t-inline-cap")
    principal = Principal(user_id=user.id, tenant_id=user.tenant_id, permissions=frozenset(permissions.ALL))
    thread_ids = [threads.create_thread(principal, title=f"t{i}").id for i in range(posters)]
    barrier = threading.Barrier(posters)

    def post(thread_id: int) -> str:
        barrier.wait()
        try:
            messages.post_user_message(principal, thread_id, content="race")
            return "posted"
        except RateLimited:
            return "refused"

    with ThreadPoolExecutor(max_workers=posters) as pool:
        outcomes = list(pool.map(post, thread_ids))
    assert sorted(outcomes) == ["posted"] * cap + ["refused"] * (posters - cap), outcomes
    with db.read() as session:
        active = session.scalar(select(func.count()).select_from(Run)
                                .where(Run.user_id == user.id, Run.status.in_(ACTIVE_STATUSES)))
    assert active == cap
