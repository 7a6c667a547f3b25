"""Leases read the database's clock, never the worker's: a worker host whose clock is skewed can
neither take a live run away from its owner nor hand out a lease that is already expired.

Before this was so, ``claim``/``renew_lease``/``sweep`` compared and stamped leases with the calling
process's ``utcnow()``. A worker host whose clock ran ``LEASE_SECONDS`` ahead took over every run in
progress on the other hosts (two workers answering one run, the first one's answer refused at the
end); one whose clock lagged wrote leases already in the past, so any sweep requeued its runs at
once. The skew here is a process clock an hour off, applied to every ``utcnow()`` of this process
(the function the services used to read), while PostgreSQL keeps the true time.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from shared.models import Run, Status, base
from shared.services import runs
from shared.services.messages import post_user_message
from shared.services.runs import Outcome

RUNS = Run.__table__
SKEW = timedelta(hours=1)  # far beyond any LEASE_SECONDS


def skew_process_clock(monkeypatch, offset: timedelta) -> None:
    """This process's ``utcnow()`` runs ``offset`` off the true time (as on a badly synced host)."""

    class SkewedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + offset

    monkeypatch.setattr(base, "datetime", SkewedDatetime)
    assert abs(base.utcnow() - datetime.now(timezone.utc) - offset) < timedelta(seconds=5)


def lease_of(connection, run_id):
    return connection.execute(select(RUNS.c.lease_owner, RUNS.c.lease_expires_at, RUNS.c.attempts, RUNS.c.status)
                              .where(RUNS.c.id == run_id)).one()


def test_a_worker_whose_clock_runs_ahead_cannot_take_over_a_live_lease(connection, principal, thread, monkeypatch):
    exchange = post_user_message(principal, thread.id, content="hold on")
    owner = runs.claim(exchange.run_id, "worker-on-time")
    assert owner is not None

    skew_process_clock(monkeypatch, SKEW)  # from here on we are a worker host an hour ahead
    assert runs.claim(exchange.run_id, "worker-ahead") is None
    assert runs.sweep() == ([], [])  # its beat does not see an expired lease either
    assert runs.renew_lease(exchange.run_id, "worker-ahead") is False
    row = lease_of(connection, exchange.run_id)
    assert (row.lease_owner, row.attempts, row.status) == ("worker-on-time", 1, Status.IN_PROGRESS)

    monkeypatch.undo()
    assert runs.finish(owner, Outcome(content="answered once")) is not None


def test_a_worker_whose_clock_lags_hands_out_a_lease_that_lasts(connection, principal, thread, monkeypatch):
    exchange = post_user_message(principal, thread.id, content="slow clock")
    skew_process_clock(monkeypatch, -SKEW)  # a worker host an hour behind
    job = runs.claim(exchange.run_id, "worker-behind")
    assert job is not None
    assert runs.renew_lease(exchange.run_id, "worker-behind") is True
    monkeypatch.undo()

    database_now = connection.scalar(select(runs._PG_CLOCK.selected_columns[0])) \
        if connection.dialect.name == "postgresql" else datetime.now(timezone.utc)
    expires = lease_of(connection, exchange.run_id).lease_expires_at
    assert database_now < expires <= database_now + timedelta(seconds=runs.settings.lease_seconds + 1)
    assert runs.claim(exchange.run_id, "worker-on-time") is None  # the lease is live for everyone
    assert runs.sweep() == ([], [])
    assert runs.finish(job, Outcome(content="mine")) is not None
