"""The post's reservation on SQLite (embedded mode), in process on a real SQLite file.

SQLAlchemy renders SQLite's RETURNING unqualified, so a correlated subquery in it compares the
subquery's own columns: the per-user cap counted every user's runs, and a follow-up lost the thread's
context key (seed 001's ``updated_state``). The services read those values with separate statements
on SQLite; these tests post through them on SQLite itself (the fixtures of conftest.py, with this
module's engine)."""
from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config

from shared import db
from shared.config import ROOT
from shared.errors import RateLimited
from shared.services.messages import post_user_message


@pytest.fixture(scope="module")
def core_engine(tmp_path_factory):
    """This module's database: a SQLite file at the head migration (overrides conftest's PostgreSQL)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite-post') / 'threadline.db'}"
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes.update(url=url, configure_logger=False)
    command.upgrade(config, "head")
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def test_the_cap_counts_only_the_posters_runs(make_principal, set_settings, enqueued):
    from shared.services import threads

    set_settings(max_active_runs_per_user=1)
    alice, bob = make_principal(), make_principal()
    post_user_message(alice, threads.create_thread(alice).id, content="a")
    post_user_message(bob, threads.create_thread(bob).id, content="b")  # Alice's active run does not count
    with pytest.raises(RateLimited):
        post_user_message(bob, threads.create_thread(bob).id, content="c")  # Bob's own does


def test_a_follow_up_keeps_the_threads_context_key_and_comes_after_every_message(principal, thread, enqueued):
    first = post_user_message(principal, thread.id, content="set it", context={"form": {}}, context_key="state")
    follow_up = post_user_message(principal, thread.id, content="hello")
    assert follow_up.request.context_key == follow_up.response.context_key == "state"
    assert follow_up.request.created_at > first.response.created_at
