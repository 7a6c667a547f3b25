"""Runs: the one owner of the run lifecycle, from admission to the final answer.

- Admission (inside the message service's post transaction): the per-user cap on active runs, the
  thread-busy policy (``BusyPolicy``: enqueue, reject, interrupt, rollback) and the run insert. ``shared.services.messages`` stores the messages and
  calls these; it never writes a run row itself.
- Execution (the worker and the sweeper): every state change is one conditional UPDATE, so duplicate
  deliveries, expired leases and racing workers resolve in the database: a run is claimed by one
  worker at a time and answered once. On PostgreSQL the claim (with the prompt rows) and the finish
  (with the answer, steps, next queued run and webhook deliveries) are each one statement whose other
  writes are CTEs joined to that UPDATE (issue 14: round trips, see docs/performance.md).

- Cancel (issue 13): a queued run is cancelled at once by one conditional UPDATE (it never starts);
  a run in progress is only marked (``cancel_requested_at``) and the worker holding it, told by
  shared/notify.py, stores its partial answer as ``cancelled``. The worker's final UPDATE turns into
  ``cancelled`` whenever the mark is set, so a cancel racing the run's own finish ends in exactly one
  state: either the cancel's UPDATE found the run still in progress (then the run ends cancelled,
  whatever text it has), or it found it finished (then the cancel is refused with 409).

Statuses are ``Status`` members (shared/models/status.py), also inside the Core statements;
``ACTIVE_STATUSES`` is the one definition of "still running".
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (Boolean, DateTime, Integer, Interval, String, Text, and_, bindparam, case, column, delete, func,
                        insert, or_, select, true, update)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from shared import events, storable
from shared.config import settings
from shared.db import engine, fetch_prepared, one_statement, prepared, read, transaction
from shared.errors import Conflict, RateLimited
from shared.models import (ACTIVE_STATUSES, Message, Run, RunEvent, RunStep, Status, StepStatus, Thread, User, Workflow,
                           utcnow)
from shared.observability import context as observed
from shared.tools import LEGACY_RUN_PERMISSIONS
from shared.services import memories as memory_store
from shared.services import webhooks

FAILED_TEXT = "Sorry, I could not produce an answer this time. Please try again."


@dataclass
class RunJob:
    """Everything the agent needs, read in one short transaction at claim time."""

    run_id: uuid.UUID
    attempt: int
    owner: str
    thread_id: int
    tenant_id: uuid.UUID
    user_id: str
    model_id: str | None
    request_message_id: uuid.UUID
    response_message_id: uuid.UUID
    content: str
    context: dict[str, Any] | None
    context_key: str | None
    history: list[dict[str, str]]
    system_prompt: str | None = None
    allowed_tools: list[str] | None = None
    # The poster's effective permissions (runs.permissions): which tools the agent may offer and run.
    permissions: frozenset[str] = LEGACY_RUN_PERMISSIONS
    # The user's settings.memory_prompt_limit + 1 newest memories, read by the claim on PostgreSQL
    # (None elsewhere: the agent reads them itself), see memories.recall_from.
    newest_memories: list[Any] | None = None


@dataclass
class StepRecord:
    index: int
    kind: str
    name: str
    arguments: dict[str, Any] | None
    output: str | None
    status: StepStatus
    started_at: datetime
    finished_at: datetime
    usage: dict[str, Any] | None = None


@dataclass
class Outcome:
    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    updated_context: dict[str, Any] | None = None
    # True when a tool changed the context during the run: only then is the thread's stored context
    # rewritten (see worker/tools/base.py, ToolContext.context_changed).
    context_changed: bool = False
    steps: list[StepRecord] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    is_error: bool = False
    error: str | None = None
    # The worker stopped because the run was cancelled: ``content`` is the partial answer.
    cancelled: bool = False


class BusyPolicy(StrEnum):
    """What a post does when its thread is still answering an earlier message (``Thread-Busy`` header)."""

    ENQUEUE = "enqueue"  # answer it after the earlier ones (the default)
    REJECT = "reject"  # refuse with 409 (``If-Thread-Idle: true`` is an alias)
    INTERRUPT = "interrupt"  # cancel the active runs, keep their partial answers, answer this one
    ROLLBACK = "rollback"  # cancel the active runs, delete their messages and steps, answer this one


def _predecessor_active(session, thread_id: int, seq: int) -> bool:
    """An earlier message of the same thread is still being answered: answer in order."""
    earlier = (
        select(Run.id)
        .join(Message, Message.id == Run.request_message_id)
        .where(Run.thread_id == thread_id, Run.status.in_(ACTIVE_STATUSES), Message.seq < seq)
        .limit(1)
    )
    return session.scalar(earlier) is not None


# The hot statements (every answer runs them) are Core statements on the tables, built once with
# bind parameters: building an ORM statement and running it through the ORM costs more CPU than the
# round trip itself.
RUNS, MESSAGES, THREADS, USERS = Run.__table__, Message.__table__, Thread.__table__, User.__table__
WORKFLOWS = Workflow.__table__
HISTORY_LIMIT = max(1, settings.history_messages)  # a constant of the prepared claim statement


# -- admission: called by shared.services.messages inside its post transaction ----------------------

_LOCK_USER = prepared(select(USERS.c.id).where(USERS.c.id == bindparam("user_id")).with_for_update())
# The post's lock of its user, sent ahead of the thread's reservation (shared.db.led_by): the
# reservation's parameter ``owner_user_id`` is the posting user.
LOCK_OWNER = select(USERS.c.id).where(USERS.c.id == bindparam("owner_user_id")).with_for_update()
_ACTIVE_RUNS_OF_USER = (  # reads only the user's active runs (ix_runs_user_active)
    select(func.count()).select_from(RUNS)
    .where(RUNS.c.user_id == bindparam("user_id"), RUNS.c.status.in_(ACTIVE_STATUSES))
)
_ACTIVE_RUN_OF_THREAD = (  # ix_runs_thread_active
    select(RUNS.c.id).where(RUNS.c.thread_id == bindparam("thread_id"), RUNS.c.status.in_(ACTIVE_STATUSES))
    .limit(1)
)
_INSERT_RUN = insert(RUNS)


def check_capacity(session: Session, user_id: str) -> None:
    """Refuse a post that would let one user fill the queue (more than MAX_ACTIVE_RUNS_PER_USER
    answers pending). Locking the user row serialises one user's posts, so the check cannot be
    raced past by concurrent requests; the lock is held until the post's transaction ends.

    The post itself runs the two halves apart: the lock (LOCK_OWNER) first, then the count inside
    its next statement (a statement started after the lock was granted sees every run committed
    before it), then refuse_over_capacity; the two statements go in one round trip on psycopg2."""
    lock_user(session, user_id)
    if settings.max_active_runs_per_user > 0:
        refuse_over_capacity(session.scalar(_ACTIVE_RUNS_OF_USER, {"user_id": user_id}) or 0)


def lock_user(session: Session, user_id: str) -> None:
    """Take the user's row lock for the rest of the transaction (see check_capacity)."""
    session.execute(_LOCK_USER, {"user_id": user_id})


def active_runs_of_user(user_id):
    """The number of the user's active runs, as a scalar subquery to put in a statement that runs
    after lock_user (ix_runs_user_active)."""
    return (select(func.count()).select_from(RUNS)
            .where(RUNS.c.user_id == user_id, RUNS.c.status.in_(ACTIVE_STATUSES)).scalar_subquery())


def refuse_over_capacity(active: int, cancels: Sequence[Cancel] = ()) -> None:
    """RateLimited when ``active`` (counted with the user row locked) has reached the cap.

    The runs this post's own ``interrupt`` or ``rollback`` policy is ending (``cancels``, made in the
    same transaction) do not count: a user at the cap must still be able to replace the answer in
    progress, which is what those policies are for; the post's answer takes the cancelled one's
    place, so the user's total never rises above the cap. Call it after apply_busy_policy."""
    active -= sum(1 for cancel in cancels if cancel.effect != CancelEffect.FINISHED)
    cap = settings.max_active_runs_per_user
    if cap > 0 and active >= cap:
        raise RateLimited(f"You already have {active} answers in progress (the limit is {cap}); "
                          "wait for some to finish before sending more.", retry_after=5)


def check_idle(session: Session, thread_id: int) -> None:
    """The caller asked (``If-Thread-Idle: true``) to be refused rather than queued behind an active
    run. Call it with the thread row locked, so no run can be admitted between the check and the insert."""
    if session.scalar(_ACTIVE_RUN_OF_THREAD, {"thread_id": thread_id}) is not None:
        raise Conflict("The thread is still answering an earlier message; retry when it is idle "
                       "(or send the message without If-Thread-Idle to queue it).", retry_after=1)


_CANCEL_QUEUED = (  # a queued run never starts: the claim's own condition (status = queued) loses this race
    update(RUNS)
    .where(RUNS.c.id == bindparam("run_id"), RUNS.c.status == Status.QUEUED)
    .values(status=Status.CANCELLED, finished_at=bindparam("now", type_=RUNS.c.finished_at.type),
            lease_owner=None, lease_expires_at=None)
    .returning(RUNS.c.thread_id, RUNS.c.response_message_id)
)
_MARK_CANCEL = (  # a run in progress: its worker ends it (see _END_RUN); keeps the first request's time
    update(RUNS)
    .where(RUNS.c.id == bindparam("run_id"), RUNS.c.status == Status.IN_PROGRESS)
    .values(cancel_requested_at=func.coalesce(RUNS.c.cancel_requested_at,
                                              bindparam("now", type_=RUNS.c.cancel_requested_at.type)))
    .returning(RUNS.c.thread_id, RUNS.c.response_message_id)
)
_MARK_MESSAGE_CANCELLED = (
    update(MESSAGES).where(MESSAGES.c.id == bindparam("message_id"))
    .values(status=Status.CANCELLED, updated_at=bindparam("now", type_=MESSAGES.c.updated_at.type))
)


class CancelEffect(StrEnum):
    CANCELLED = "cancelled"  # it was queued and is now cancelled: announce it, start the next one
    REQUESTED = "requested"  # it is in progress: tell its worker
    FINISHED = "finished"  # it had already ended (completed, failed or cancelled): nothing to do


@dataclass
class Cancel:
    """What cancelling one run did, for the caller to announce after its commit."""

    run_id: uuid.UUID
    response_message_id: uuid.UUID
    effect: CancelEffect
    next_run: uuid.UUID | None = None  # the thread's next queued run, to enqueue (CANCELLED only)
    attempt: int = 0  # the attempt its run.cancelled event belongs to


def cancel_run(session: Session, run_id: uuid.UUID, response_message_id: uuid.UUID) -> Cancel:
    """Cancel one run inside the caller's transaction: conditional UPDATEs, so the run's claim, its
    finish and other cancels resolve in the database. A queued run (the claim has not taken it) is
    cancelled here with its message; a run in progress is marked for its worker; a finished run is
    left alone (the caller decides whether that is a 409 or, for a cancelled one, idempotence)."""
    now = database_now(session)
    for _ in range(3):  # queued → claimed between our two statements: look again (bounded: states only advance)
        if (row := session.execute(_CANCEL_QUEUED, {"run_id": run_id, "now": now}).first()) is not None:
            session.execute(_MARK_MESSAGE_CANCELLED, {"message_id": row.response_message_id, "now": now})
            return Cancel(run_id, row.response_message_id, CancelEffect.CANCELLED,
                          next_run=session.scalar(_NEXT_QUEUED, {"thread_id": row.thread_id}))
        if session.execute(_MARK_CANCEL, {"run_id": run_id, "now": now}).first() is not None:
            return Cancel(run_id, response_message_id, CancelEffect.REQUESTED)
        status = session.scalar(select(RUNS.c.status).where(RUNS.c.id == run_id))
        if status is None or status not in ACTIVE_STATUSES:
            return Cancel(run_id, response_message_id, CancelEffect.FINISHED)
    return Cancel(run_id, response_message_id, CancelEffect.REQUESTED)


_ACTIVE_RUNS_OF_THREAD = (
    select(RUNS.c.id, RUNS.c.request_message_id, RUNS.c.response_message_id)
    .where(RUNS.c.thread_id == bindparam("thread_id"), RUNS.c.status.in_(ACTIVE_STATUSES))
)


def apply_busy_policy(session: Session, thread_id: int, policy: BusyPolicy) -> tuple[list[Cancel], int]:
    """Run the post's thread-busy policy with the thread row locked (so no run is admitted meanwhile).

    Returns the cancels to announce after the commit and how many seqs the rollback freed (the post
    takes its seqs that much lower). ``reject`` raises Conflict; ``enqueue`` does nothing."""
    if policy == BusyPolicy.REJECT:
        check_idle(session, thread_id)
    if policy not in (BusyPolicy.INTERRUPT, BusyPolicy.ROLLBACK):
        return [], 0
    active = session.execute(_ACTIVE_RUNS_OF_THREAD, {"thread_id": thread_id}).all()
    cancels = [cancel_run(session, run.id, run.response_message_id) for run in active]
    if policy == BusyPolicy.INTERRUPT or not active:
        return cancels, 0
    doomed = [m for run in active for m in (run.request_message_id, run.response_message_id)]
    return cancels, _delete_and_close_gaps(session, thread_id, [run.id for run in active], doomed)


def _delete_and_close_gaps(session: Session, thread_id: int, run_ids: list[uuid.UUID],
                           message_ids: list[uuid.UUID]) -> int:
    """Delete the rolled-back runs (their steps and event rows with them) and their messages, then
    renumber the thread's later messages so ``seq`` stays 1..n without gaps; returns how many seqs
    were freed (the caller lowers the thread's ``last_seq`` by that much).

    Renumbering rather than leaving holes: every dialect lists by ``seq`` and v1 shows it
    (``sequence_number``, ``path``), and a client paging by offset must not see a gap. In the usual
    case the rolled-back messages are the thread's last ones, nothing is renumbered and the new post
    simply reuses their seqs; only messages stored after them (a direct v1 message) move down. Two
    UPDATEs per moved row (through negative seqs) keep ``uq_messages_thread_seq`` satisfied at every
    row on PostgreSQL and SQLite alike; the thread row is locked, so nobody reads a half-renumbered thread.
    """
    freed = sorted(session.scalars(select(MESSAGES.c.seq).where(MESSAGES.c.id.in_(message_ids))))
    session.execute(delete(RunStep.__table__).where(RunStep.__table__.c.run_id.in_(run_ids)))
    # embedded mode's event rows go too (Redis keys expire on their own)
    session.execute(delete(RunEvent.__table__).where(RunEvent.__table__.c.run_id.in_(run_ids)))
    session.execute(delete(RUNS).where(RUNS.c.id.in_(run_ids)))
    session.execute(delete(MESSAGES).where(MESSAGES.c.id.in_(message_ids)))
    if not freed:
        return 0
    later = session.execute(
        select(MESSAGES.c.id, MESSAGES.c.seq)
        .where(MESSAGES.c.thread_id == thread_id, MESSAGES.c.seq > freed[0]).order_by(MESSAGES.c.seq)
    ).all()
    moves = {row.id: row.seq - sum(1 for s in freed if s < row.seq) for row in later}
    for row in later:
        session.execute(update(MESSAGES).where(MESSAGES.c.id == row.id).values(seq=-row.seq))
    for row in later:
        session.execute(update(MESSAGES).where(MESSAGES.c.id == row.id).values(seq=moves[row.id]))
    session.execute(update(THREADS).where(THREADS.c.id == thread_id).values(last_seq=THREADS.c.last_seq - len(freed)))
    return len(freed)


def create_run(session: Session, **run: Any) -> uuid.UUID:
    """Insert a queued run answering ``request_message_id`` into ``response_message_id``; the caller
    enqueues it after its transaction commits (never before: a worker must find the row)."""
    return insert_run(session, new_run(**run))


def insert_run(session: Session, row: dict[str, Any]) -> uuid.UUID:
    """Insert a run row made by new_run (see create_run)."""
    session.execute(_INSERT_RUN, row)
    return row["id"]


def new_run(*, thread_id: int, user_id: str, request_message_id: uuid.UUID, response_message_id: uuid.UUID,
            model_id: str | None, workflow_id: uuid.UUID | None, queued_at: datetime,
            permissions: frozenset[str] | set[str]) -> dict[str, Any]:
    """The row of a new queued run (create_run inserts it; a post on PostgreSQL inserts it along with
    its messages, see insert_run_after).

    ``permissions`` are the effective permissions of the credential that posted (a token's subset of
    its user's, or a session's full role): stored on the run so the agent, later and elsewhere, uses
    only the tools that credential could (issue 15; shared/tools.py, TOOL_PERMISSIONS)."""
    return {
        "id": uuid.uuid4(), "thread_id": thread_id, "user_id": user_id, "request_message_id": request_message_id,
        "response_message_id": response_message_id, "status": Status.QUEUED, "attempts": 0,
        "model_id": model_id, "workflow_id": workflow_id, "queued_at": queued_at,
        "request_id": observed.get("request_id"),  # the POST's X-Request-Id, for the logs of every attempt
        "permissions": sorted(permissions),
    }


_NEW_RUN_COLUMNS = ("id", "thread_id", "user_id", "request_message_id", "response_message_id", "status", "attempts",
                    "model_id", "workflow_id", "queued_at", "request_id", "permissions")


def insert_run_after(cte):
    """PostgreSQL: the run's INSERT carrying ``cte`` (the post's insert of its two messages), so the
    post stores both messages and the run in one statement (the foreign keys are checked at its
    end). Its parameters are new_run's, each named ``run_<column>`` (run_params): a parameter named
    like a column of the table would be added to the INSERT by Core."""
    return (insert(RUNS).values({name: bindparam(f"run_{name}", type_=RUNS.c[name].type) for name in _NEW_RUN_COLUMNS})
            .add_cte(cte))


def run_params(row: dict[str, Any]) -> dict[str, Any]:
    return {f"run_{name}": row[name] for name in _NEW_RUN_COLUMNS}


def run_for_request(session: Session, request_message_id: uuid.UUID) -> Run | None:
    """The run answering a user message (None for a message posted without asking for an answer)."""
    return session.scalar(select(Run).where(Run.request_message_id == request_message_id))


# -- execution: the worker and the sweeper ----------------------------------------------------------


def _build_claim(now=None, lease_until=None):
    """The claim as one conditional UPDATE: the run is queued (or its lease expired), has attempts
    left, and no earlier message of its thread is still being answered. ``now`` and ``lease_until``
    default to bind parameters (the clock read before it); the one-statement claim passes SQL."""
    earlier_run, earlier_request, own_request = RUNS.alias("earlier_run"), MESSAGES.alias("earlier_request"), \
        MESSAGES.alias("own_request")
    own_seq = (select(own_request.c.seq).where(own_request.c.id == RUNS.c.request_message_id)
               .correlate(RUNS).scalar_subquery())
    predecessor = (
        select(earlier_run.c.id)
        .join(earlier_request, earlier_request.c.id == earlier_run.c.request_message_id)
        .where(earlier_run.c.thread_id == RUNS.c.thread_id, earlier_run.c.status.in_(ACTIVE_STATUSES),
               earlier_request.c.seq < own_seq)
        .correlate(RUNS)
    )
    if now is None:
        now = bindparam("now", type_=RUNS.c.started_at.type)
        lease_until = bindparam("lease_until", type_=RUNS.c.lease_expires_at.type)
    return (
        update(RUNS)
        .where(
            RUNS.c.id == bindparam("run_id"),
            or_(RUNS.c.status == Status.QUEUED,
                and_(RUNS.c.status == Status.IN_PROGRESS, RUNS.c.lease_expires_at < now)),
            RUNS.c.attempts < bindparam("max_attempts"),
            RUNS.c.cancel_requested_at.is_(None),  # a lost run with a cancel pending: the sweeper ends it
            ~predecessor.exists(),
        )
        .values(status=Status.IN_PROGRESS, attempts=RUNS.c.attempts + 1, lease_owner=bindparam("owner"),
                lease_expires_at=lease_until, started_at=now)
        .returning(RUNS.c.attempts, RUNS.c.thread_id, RUNS.c.request_message_id, RUNS.c.response_message_id,
                   RUNS.c.model_id, RUNS.c.workflow_id, RUNS.c.started_at, RUNS.c.permissions)
    )


def _build_prompt_rows():
    """The request and the completed messages before it, newest first (so the request comes first),
    each with the thread's owner and context: everything the prompt needs in one query. A cancelled
    answer's partial text is history too (the ``interrupt`` policy keeps it for the next answer)."""
    request = MESSAGES.alias("request")
    request_seq = select(request.c.seq).where(request.c.id == bindparam("request_id")).scalar_subquery()
    return (
        select(MESSAGES.c.id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.context, MESSAGES.c.context_key,
               THREADS.c.tenant_id, THREADS.c.user_id, THREADS.c.context.label("thread_context"))
        .join(THREADS, THREADS.c.id == MESSAGES.c.thread_id)
        .where(MESSAGES.c.thread_id == bindparam("thread_id"), MESSAGES.c.seq <= request_seq,
               MESSAGES.c.status.in_((Status.COMPLETED, Status.CANCELLED)))
        .order_by(MESSAGES.c.seq.desc())
        .limit(HISTORY_LIMIT + 1)
    )


def _build_claim_in_one_statement():
    """PostgreSQL: the claim, the response message marked in progress and the prompt rows (with the
    thread and the workflow) as one statement, run in autocommit: one round trip instead of six
    (BEGIN, the clock, the claim, the mark, the prompt rows, COMMIT). The conditions are those of
    _build_claim, evaluated in one statement as before; ``clock_timestamp()`` is read once (a
    materialized CTE), so the lease and ``started_at`` share one reading of the database's clock.

    The data-modifying CTEs see the snapshot the statement started with, as the separate statements
    did: the prompt rows are the completed messages before the request, untouched by the mark. No
    row means not claimed; a row with no message id means the request is missing. The user's
    newest memories come along (memories.newest_as_json), saving the agent its own read. SQLite has no
    data-modifying CTEs: it keeps the separate statements (no round trips there, it is in process)."""
    clock = select(func.clock_timestamp().label("now")).cte("claim_clock").prefix_with("MATERIALIZED")
    now = select(clock.c.now).scalar_subquery()
    claimed = _build_claim(now, now + bindparam("lease_for", type_=Interval())).cte("claimed")
    marked = (
        update(MESSAGES).where(MESSAGES.c.id == claimed.c.response_message_id)
        .values(status=Status.IN_PROGRESS, updated_at=claimed.c.started_at)
        .returning(MESSAGES.c.id).cte("marked")
    )
    request = MESSAGES.alias("request")
    request_seq = (select(request.c.seq).where(request.c.id == claimed.c.request_message_id)
                   .correlate(claimed).scalar_subquery())
    prompt = (
        select(MESSAGES.c.id, MESSAGES.c.seq, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.context,
               MESSAGES.c.context_key)
        .where(MESSAGES.c.thread_id == claimed.c.thread_id, MESSAGES.c.seq <= request_seq,
               MESSAGES.c.status.in_((Status.COMPLETED, Status.CANCELLED)))
        .order_by(MESSAGES.c.seq.desc())
        .limit(HISTORY_LIMIT + 1)
        .lateral("prompt")
    )
    memories = memory_store.newest_as_json(THREADS.c.tenant_id, THREADS.c.user_id,
                                           bindparam("memory_limit")).lateral("recall")
    def on_request_row(value, name: str):
        """The values the job reads from the request's row only: NULL on the history rows, so the
        driver does not decode them once per row (up to HISTORY_LIMIT times): the JSON values, and
        the run's, thread's and workflow's columns, which are the same on every row (five UUIDs a
        row among them: psycopg2 builds a uuid.UUID for each). A history row is its id, role and
        content."""
        return case((prompt.c.id == claimed.c.request_message_id, value)).label(name)

    return (
        select(on_request_row(claimed.c.attempts, "attempts"), on_request_row(claimed.c.thread_id, "thread_id"),
               on_request_row(claimed.c.request_message_id, "request_message_id"),
               on_request_row(claimed.c.response_message_id, "response_message_id"),
               on_request_row(claimed.c.model_id, "model_id"), prompt.c.id, prompt.c.role, prompt.c.content,
               on_request_row(prompt.c.context, "context"), on_request_row(prompt.c.context_key, "context_key"),
               on_request_row(THREADS.c.tenant_id, "tenant_id"), on_request_row(THREADS.c.user_id, "user_id"),
               on_request_row(THREADS.c.context, "thread_context"),
               on_request_row(WORKFLOWS.c.system_prompt, "system_prompt"),
               on_request_row(WORKFLOWS.c.tools, "workflow_tools"), on_request_row(WORKFLOWS.c.id, "found_workflow_id"),
               on_request_row(memories.c.memories, "memories"), on_request_row(claimed.c.permissions, "permissions"))
        .select_from(
            claimed.join(THREADS, THREADS.c.id == claimed.c.thread_id)
            .join(memories, true())
            .outerjoin(prompt, true())
            .outerjoin(WORKFLOWS, WORKFLOWS.c.id == claimed.c.workflow_id)
        )
        .order_by(prompt.c.seq.desc())
        .add_cte(marked)
    )


_CLAIM = _build_claim()
_PROMPT_ROWS = _build_prompt_rows()
_CLAIM_IN_ONE_STATEMENT = prepared(_build_claim_in_one_statement())
_MARK_IN_PROGRESS = (
    update(MESSAGES).where(MESSAGES.c.id == bindparam("message_id"))
    .values(status=Status.IN_PROGRESS, updated_at=bindparam("now", type_=MESSAGES.c.updated_at.type))
)


_PG_CLOCK = select(func.clock_timestamp())
_SQLITE_CLOCK = select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))


def database_now(session: Session) -> datetime:
    """The database server's clock: the one clock every lease decision reads.

    Leases are compared across hosts (a worker takes over a run when *its* view says the lease
    expired), so they must not depend on the worker's own clock: a worker whose clock runs ahead
    would take live runs away from their owner, one whose clock lags would hand out leases that are
    already expired. ``clock_timestamp()`` rather than ``now()``: the latter is frozen at the start
    of the transaction. SQLite is a file on this very host, so its clock is the host's (read through
    SQLite, not through Python)."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(_PG_CLOCK)
    return datetime.fromisoformat(session.scalar(_SQLITE_CLOCK)).replace(tzinfo=timezone.utc)


def claim(run_id: uuid.UUID, owner: str) -> RunJob | None:
    """Take the run if it is queued (or its lease expired) and its turn has come; None otherwise.

    On PostgreSQL one statement in autocommit (_build_claim_in_one_statement); elsewhere three in
    one transaction (after reading the database's clock): the conditional claim, the response
    message marked in progress, and the request with its history and thread."""
    if engine().dialect.name == "postgresql":
        with one_statement() as session:
            rows = fetch_prepared(session, _CLAIM_IN_ONE_STATEMENT, {
                "run_id": run_id, "max_attempts": settings.run_max_attempts, "owner": owner,
                "lease_for": timedelta(seconds=settings.lease_seconds),
                "memory_limit": max(settings.memory_prompt_limit, 0) + 1,
            })
        if not rows:
            with transaction() as session:
                _fail_if_out_of_attempts(session, run_id, database_now(session))
            return None
        claimed = rows[0]  # the request's row (the run's columns are on it only); without one, _job raises
        workflow = (SimpleNamespace(system_prompt=claimed.system_prompt, tools=claimed.workflow_tools)
                    if claimed.found_workflow_id is not None else None)
        job = _job(run_id, owner, claimed, [row for row in rows if row.id is not None], workflow)
        job.newest_memories = memory_store.views_from_json(claimed.memories)
        return job
    with transaction() as session:
        now = database_now(session)
        claimed = session.execute(_CLAIM, {
            "run_id": run_id, "now": now, "max_attempts": settings.run_max_attempts, "owner": owner,
            "lease_until": now + timedelta(seconds=settings.lease_seconds),
        }).first()
        if claimed is None:
            _fail_if_out_of_attempts(session, run_id, now)
            return None
        session.execute(_MARK_IN_PROGRESS, {"message_id": claimed.response_message_id, "now": now})
        rows = session.execute(
            _PROMPT_ROWS, {"request_id": claimed.request_message_id, "thread_id": claimed.thread_id}
        ).all()
        workflow = session.get(Workflow, claimed.workflow_id) if claimed.workflow_id else None
        return _job(run_id, owner, claimed, rows, workflow)


def _job(run_id: uuid.UUID, owner: str, claimed, rows, workflow) -> RunJob:
    """The RunJob from the claimed run, its prompt rows (the request first, then its history newest
    first) and its workflow (None without one)."""
    if not rows or rows[0].id != claimed.request_message_id:  # user messages are stored completed
        raise RuntimeError(f"run {run_id}: its request message is missing")
    request, history = rows[0], rows[1:]
    return RunJob(
        run_id=run_id, attempt=claimed.attempts, owner=owner, thread_id=claimed.thread_id,
        tenant_id=request.tenant_id, user_id=request.user_id, model_id=claimed.model_id,
        request_message_id=request.id, response_message_id=claimed.response_message_id, content=request.content,
        context=request.context if request.context is not None else request.thread_context,
        context_key=request.context_key,
        history=[{"role": m.role, "content": m.content} for m in reversed(history) if m.content],
        system_prompt=workflow.system_prompt if workflow else None,
        allowed_tools=list(workflow.tools) if workflow and workflow.tools is not None else None,
        # NULL: stored before the column existed; such a run gets only the one permission its post
        # certainly held (LEGACY_RUN_PERMISSIONS), never more than a token might have had.
        permissions=(frozenset(claimed.permissions) if claimed.permissions is not None
                     else LEGACY_RUN_PERMISSIONS),
    )


def _fail_if_out_of_attempts(session, run_id: uuid.UUID, now: datetime) -> None:
    """The claim did not match. If that is because the run used up its attempts (and it is its turn,
    and no live lease holds it), end it with an error answer instead of leaving it to the sweeper.

    The checks below read the run without a lock, so they only decide whether to try: the owner may
    finish (or a cancel arrive) between them and the write. The write itself is conditional on the same
    facts (still active, out of attempts, no cancel, no live lease by the database's clock), so a
    completed or cancelled answer is never overwritten (issue 15)."""
    run = session.scalar(select(Run).where(Run.id == run_id))
    if run is None or run.status not in ACTIVE_STATUSES or run.attempts < settings.run_max_attempts:
        return
    if run.cancel_requested_at is not None:
        return  # the holder (or, if it is gone, the sweeper) ends it as cancelled
    if run.status == Status.IN_PROGRESS and run.lease_expires_at is not None and run.lease_expires_at >= now:
        return  # a duplicate delivery while a worker holds a live lease: not ours to touch
    request_seq = session.scalar(select(Message.seq).where(Message.id == run.request_message_id))
    if not _predecessor_active(session, run.thread_id, request_seq):
        _finish(session, run, Outcome(content=FAILED_TEXT, is_error=True, error="too many attempts"), Status.FAILED,
                unless=or_(Run.attempts < settings.run_max_attempts, Run.cancel_requested_at.is_not(None),
                           and_(Run.status == Status.IN_PROGRESS, Run.lease_expires_at.is_not(None),
                                Run.lease_expires_at >= now)))


def renew_lease(run_id: uuid.UUID, owner: str) -> bool:
    """Extend the lease; False means another worker took the run over and this one must stop."""
    with transaction() as session:
        now = database_now(session)
        return session.execute(
            update(Run)
            .where(Run.id == run_id, Run.lease_owner == owner, Run.status == Status.IN_PROGRESS)
            .values(lease_expires_at=now + timedelta(seconds=settings.lease_seconds))
        ).rowcount == 1


_WRITE_ANSWER = (
    update(MESSAGES).where(MESSAGES.c.id == bindparam("message_id"))
    .values({column: bindparam(f"new_{column}", type_=MESSAGES.c[column].type)
             for column in ("content", "citations", "updated_context", "is_error", "status", "updated_at")})
)
# A cancel requested while the run was in progress wins over the worker's own outcome: the run ends
# cancelled even if the worker finished its text in the meantime (the cancel has already been
# answered "requested", so it must not be contradicted).
def _build_end_run(finished_at=None):
    """The lease-conditional end of a run; ``finished_at`` defaults to a bind parameter."""
    if finished_at is None:
        finished_at = bindparam("new_finished_at", type_=RUNS.c.finished_at.type)
    return (
        update(RUNS)
        .where(RUNS.c.id == bindparam("run_id"), RUNS.c.lease_owner == bindparam("owner"),
               RUNS.c.status == Status.IN_PROGRESS)
        .values({**{column: bindparam(f"new_{column}", type_=RUNS.c[column].type) for column in ("usage", "error")},
                 "finished_at": finished_at,
                 "status": case((RUNS.c.cancel_requested_at.is_not(None), Status.CANCELLED),
                                else_=bindparam("new_status", type_=RUNS.c.status.type)),
                 "lease_expires_at": None})
        .returning(RUNS.c.id, RUNS.c.attempts, RUNS.c.status, RUNS.c.finished_at, RUNS.c.thread_id,
                   RUNS.c.request_message_id, RUNS.c.response_message_id)
    )


_END_RUN = _build_end_run()
def _build_next_queued(thread_id=None):
    """The thread's next queued run (in message order)."""
    return (
        select(RUNS.c.id)
        .join(MESSAGES, MESSAGES.c.id == RUNS.c.request_message_id)
        .where(RUNS.c.thread_id == (thread_id if thread_id is not None else bindparam("thread_id")),
               RUNS.c.status.in_([Status.QUEUED]))  # an IN list: inlined when prepared (shared.db._constant_names)
        .order_by(MESSAGES.c.seq)
        .limit(1)
    )


_NEXT_QUEUED = _build_next_queued()


STEPS = RunStep.__table__
_STEP_COLUMNS = ("index", "kind", "name", "arguments", "output", "status", "usage", "started_at", "finished_at")


def _build_finish_in_one_statement():
    """PostgreSQL: finish() as one statement in autocommit, one round trip instead of seven (BEGIN,
    the clock, the run's end, the answer, the steps, the next queued run, COMMIT), and the webhook
    deliveries of the run's end (webhooks.insert_deliveries_after) instead of a read after it. Each write is a
    data-modifying CTE that joins ``ended`` (the lease-conditional end of the run, _END_RUN), so
    nothing is written unless this worker still held the run: the same all-or-nothing as the
    transaction it replaces. The steps arrive as one JSON array (``jsonb_to_recordset``), so the
    statement's text does not depend on how many there are. The next queued run is read in the
    statement's snapshot, as the separate look-up after the update read it in the transaction's.
    (No bind parameter is named like a column of a table it updates: Core would add it to the SET.)"""
    clock = select(func.clock_timestamp().label("now")).cte("finish_clock").prefix_with("MATERIALIZED")
    ended = _build_end_run(select(clock.c.now).scalar_subquery()).cte("ended")
    answer = (
        update(MESSAGES).where(MESSAGES.c.id == ended.c.response_message_id)
        .values({**{column: bindparam(f"new_{column}", type_=MESSAGES.c[column].type)
                    for column in ("content", "citations", "updated_context", "is_error")},
                 "status": ended.c.status, "updated_at": ended.c.finished_at})
        .returning(MESSAGES.c.id).cte("answer")
    )
    context = (  # only when a tool changed the context (see _write_answer)
        update(THREADS).where(THREADS.c.id == ended.c.thread_id, bindparam("write_context", type_=Boolean))
        .values(context=bindparam("new_thread_context", type_=THREADS.c.context.type))
        .returning(THREADS.c.id).cte("new_context")
    )
    types = {"index": Integer(), "kind": String(), "name": String(), "arguments": JSONB(), "output": Text(),
             "status": String(), "usage": JSONB(), "started_at": DateTime(timezone=True),
             "finished_at": DateTime(timezone=True)}
    step = (func.jsonb_to_recordset(bindparam("steps", type_=JSONB()))
            .table_valued(*(column(name, types[name]) for name in _STEP_COLUMNS))
            .render_derived(name="step", with_types=True))
    steps = (
        insert(STEPS)
        .from_select(["run_id", "attempt", *_STEP_COLUMNS],
                     select(bindparam("run_id", type_=RUNS.c.id.type), ended.c.attempts,
                            *(step.c[name] for name in _STEP_COLUMNS)).select_from(ended).join(step, true()))
        .returning(STEPS.c.id).cte("steps")
    )
    deliveries = webhooks.insert_deliveries_after(ended).cte("deliveries")
    return (
        select(ended.c.attempts, ended.c.status,
               _build_next_queued(ended.c.thread_id).correlate(ended).scalar_subquery().label("next_run"),
               select(func.array_agg(deliveries.c.id)).scalar_subquery().label("deliveries"))
        .select_from(ended)
        .add_cte(answer, context, steps)
    )


_FINISH_IN_ONE_STATEMENT = prepared(_build_finish_in_one_statement())


def _steps_json(steps: list[StepRecord]) -> list[dict[str, Any]]:
    return [{"index": s.index, "kind": s.kind, "name": s.name, "arguments": s.arguments, "output": s.output,
             "status": str(s.status), "usage": s.usage, "started_at": s.started_at.isoformat(),
             "finished_at": s.finished_at.isoformat()} for s in steps]


def _write_answer(session, *, run_id: uuid.UUID, attempt: int, thread_id: int, response_message_id: uuid.UUID,
                  outcome: Outcome, status: Status, now: datetime) -> None:
    """The response message, the thread's context (only when a tool changed it) and the run's steps.

    An unchanged context is not written back: the post already stored it on the thread, and a later
    post may have replaced it since, which an echo of this run's copy would undo."""
    session.execute(_WRITE_ANSWER, {
        "message_id": response_message_id, "new_content": outcome.content, "new_citations": outcome.citations,
        "new_updated_context": outcome.updated_context, "new_is_error": outcome.is_error,
        "new_status": status,
        "new_updated_at": now,
    })
    if outcome.context_changed and outcome.updated_context is not None:
        session.execute(update(THREADS).where(THREADS.c.id == thread_id).values(context=outcome.updated_context))
    if outcome.steps:
        session.execute(
            insert(RunStep.__table__),
            [
                dict(run_id=run_id, attempt=attempt, index=s.index, kind=s.kind, name=s.name,
                     arguments=s.arguments, output=s.output, status=s.status, usage=s.usage,
                     started_at=s.started_at, finished_at=s.finished_at)
                for s in outcome.steps
            ],
        )


def _finish(session, run: Run, outcome: Outcome, status: Status, unless=None) -> bool:
    """End a run the worker does not hold (out of attempts, lost): the run row, then its answer.

    The run's UPDATE is conditional: the run is still active, and ``unless`` (a condition on the row at
    that moment) does not hold. On PostgreSQL a concurrent end that committed first makes it match
    nothing (the UPDATE waits for that row lock and re-checks the new row), and then the answer is not
    touched: False."""
    now = database_now(session)
    condition = Run.status.in_(ACTIVE_STATUSES) if unless is None else and_(Run.status.in_(ACTIVE_STATUSES), ~unless)
    ended = session.execute(
        update(Run)
        .where(Run.id == run.id, condition)
        .values(status=status, finished_at=now, lease_expires_at=None, usage=outcome.usage, error=outcome.error)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if ended:
        _write_answer(session, run_id=run.id, attempt=run.attempts, thread_id=run.thread_id,
                      response_message_id=run.response_message_id, outcome=outcome, status=status, now=now)
    return ended


@dataclass
class Finished:
    """The answer is stored with ``status``; ``next_run`` is the thread's next queued run, to enqueue
    right away."""

    next_run: uuid.UUID | None
    status: Status = Status.COMPLETED
    deliveries: list[uuid.UUID] = field(default_factory=list)  # webhook deliveries to send after the commit
    logged: bool = False  # the run's last events, the terminal one included, went in with the answer


def finish(job: RunJob, outcome: Outcome, pending_events: Sequence[tuple[str, dict[str, Any]]] = ()) -> Finished | None:
    """Store the answer if this worker still holds the lease; None means someone else owns the run now
    (or a rollback deleted it).

    All or nothing: the lease-conditional run update (which yields ``cancelled`` when a cancel was
    requested meanwhile, see _END_RUN), the answer, the steps and the look-up of the thread's next
    queued message; on PostgreSQL as one statement (_build_finish_in_one_statement), elsewhere as
    one transaction. With the event log in the table (embedded mode) that transaction also inserts
    ``pending_events`` (what the worker's RunEvents still held) and then the terminal event, after the
    answer: one SQLite write for all of them (issue 10), and ``Finished.logged`` says so. Otherwise
    the caller appends the terminal event after the commit, as before."""
    if outcome.cancelled:
        status = Status.CANCELLED
    else:
        status = Status.FAILED if outcome.is_error else Status.COMPLETED
    if engine().dialect.name == "postgresql":
        with one_statement() as session:
            ended = next(iter(fetch_prepared(session, _FINISH_IN_ONE_STATEMENT, {
                "run_id": job.run_id, "owner": job.owner, "new_status": status, "new_usage": outcome.usage,
                "new_error": outcome.error, "new_content": outcome.content,
                "new_citations": outcome.citations, "new_updated_context": outcome.updated_context,
                "new_is_error": outcome.is_error,
                "write_context": bool(outcome.context_changed and outcome.updated_context is not None),
                "new_thread_context": outcome.updated_context, "steps": _steps_json(outcome.steps),
                "webhook_timestamp": utcnow().isoformat(), "webhook_now": utcnow(),
            })), None)
        if ended is not None:
            return Finished(next_run=ended.next_run, status=ended.status, deliveries=list(ended.deliveries or []))
        with transaction() as session:
            _keep_steps_after_cancel(session, job, outcome)
        return None
    with transaction() as session:
        now = database_now(session)
        ended = session.execute(_END_RUN, {
            "run_id": job.run_id, "owner": job.owner, "new_status": status, "new_finished_at": now,
            "new_usage": outcome.usage, "new_error": outcome.error,
        }).first()
        if ended is None:
            _keep_steps_after_cancel(session, job, outcome)
            return None
        _write_answer(session, run_id=job.run_id, attempt=ended.attempts, thread_id=job.thread_id,
                      response_message_id=job.response_message_id, outcome=outcome, status=ended.status, now=now)
        logged = False
        if events.in_table():  # after the answer, in its transaction: a reader sees both or neither
            last = events.ending(job.run_id, job.response_message_id, cancelled=ended.status == Status.CANCELLED,
                                 failed=outcome.is_error, error=outcome.content if outcome.is_error else None)
            logged = events.insert_in(session, job.run_id, [*pending_events, last], job.attempt)
        return Finished(next_run=session.scalar(_NEXT_QUEUED, {"thread_id": job.thread_id}), status=ended.status,
                        deliveries=webhooks.record_run_ended(session, job.run_id), logged=logged)


def _keep_steps_after_cancel(session, job: RunJob, outcome: Outcome) -> None:
    """The cancel ended this worker's run before the worker got there (``end_cancelled``): the answer
    stays as the cancel stored it, but the steps this worker did are still recorded (a tool's side
    effect must stay listed on the run)."""
    if not outcome.steps:
        return
    run = session.execute(select(RUNS.c.attempts).where(
        RUNS.c.id == job.run_id, RUNS.c.lease_owner == job.owner, RUNS.c.status == Status.CANCELLED)).first()
    if run is not None:
        session.execute(insert(RunStep.__table__), [
            dict(run_id=job.run_id, attempt=run.attempts, index=s.index, kind=s.kind, name=s.name,
                 arguments=s.arguments, output=s.output, status=s.status, usage=s.usage,
                 started_at=s.started_at, finished_at=s.finished_at) for s in outcome.steps])


_END_CANCELLED = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("run_id"), RUNS.c.status == Status.IN_PROGRESS,
           RUNS.c.cancel_requested_at.is_not(None))
    .values(status=Status.CANCELLED, finished_at=bindparam("now", type_=RUNS.c.finished_at.type),
            lease_expires_at=None)  # lease_owner stays: its worker may still add the steps it did
    .returning(RUNS.c.attempts, RUNS.c.thread_id, RUNS.c.response_message_id)
)


def end_cancelled(run_id: uuid.UUID) -> Cancel | None:
    """End a run whose worker has not stopped within the cancel's grace time (a model silent before
    its first token, a slow tool, a worker gone): the text it streamed so far (its event log) becomes
    the cancelled answer. The same conditional UPDATE as every other end, so the worker's own finish,
    arriving later, finds the run ended and only adds its steps. None if the run has ended meanwhile."""
    attempt = None
    with read() as session:
        attempt = session.scalar(select(RUNS.c.attempts).where(RUNS.c.id == run_id))
    content = partial_text(run_id, attempt or 0)
    with transaction() as session:
        now = database_now(session)
        row = session.execute(_END_CANCELLED, {"run_id": run_id, "now": now}).first()
        if row is None:
            return None
        _write_answer(session, run_id=run_id, attempt=row.attempts, thread_id=row.thread_id,
                      response_message_id=row.response_message_id, outcome=Outcome(content=content, cancelled=True),
                      status=Status.CANCELLED, now=now)
        return Cancel(run_id, row.response_message_id, CancelEffect.CANCELLED,
                      next_run=session.scalar(_NEXT_QUEUED, {"thread_id": row.thread_id}), attempt=row.attempts)


def lost_runs(now: datetime, stale_queued: datetime):
    """The sweeper's query: runs in progress whose lease expired, runs queued since before
    ``stale_queued``. Each half is a range scan of its partial index (ix_runs_leased, ix_runs_queued:
    migration 0013), which holds only the runs in that status; the status is compared with ``=`` so
    the planner can match those predicates (tests/core/test_core_runs.py checks the plan)."""
    return (
        select(Run)
        .where(
            or_(
                and_(Run.status == Status.IN_PROGRESS, Run.lease_expires_at < now),
                and_(Run.status == Status.QUEUED, Run.queued_at < stale_queued),
            )
        )
        .order_by(Run.queued_at)
        .limit(500)
        .with_for_update(skip_locked=True)
    )


def sweep() -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Find runs a worker lost (expired lease) or the broker lost (queued too long).

    Returns (runs to enqueue again, runs ended as failed or cancelled). A lost run with a cancel
    pending (its worker died while cancelling) ends ``cancelled`` with the partial text its event log
    holds, and the thread's next queued run is enqueued; runs out of attempts fail with an is_error
    answer; the others are marked queued and touched so one sweep does not repeat them.
    """
    requeue: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    with transaction() as session:
        now = database_now(session)
        stale_queued = now - timedelta(seconds=settings.queued_stale_seconds)
        lost = session.scalars(lost_runs(now, stale_queued)).all()
        for run in lost:
            if run.cancel_requested_at is not None:
                _finish(session, run, Outcome(content=partial_text(run.id, run.attempts), cancelled=True),
                        Status.CANCELLED)
                failed.append(run.id)
                if (next_run := session.scalar(_NEXT_QUEUED, {"thread_id": run.thread_id})) is not None:
                    requeue.append(next_run)
            elif run.attempts >= settings.run_max_attempts:
                _finish(session, run, Outcome(content=FAILED_TEXT, is_error=True, error="worker lost too often"),
                        Status.FAILED)
                failed.append(run.id)
            else:
                run.status, run.lease_owner, run.lease_expires_at, run.queued_at = Status.QUEUED, None, None, now
                requeue.append(run.id)
    return list(dict.fromkeys(requeue)), failed


def partial_text(run_id: uuid.UUID, attempt: int) -> str:
    """The text a run's attempt streamed before its worker was lost (its ``message.delta`` events);
    empty when the log has none (expired, Redis away)."""
    from shared import events

    return storable.text(events.streamed_text(run_id, attempt))  # what the model streamed may hold a NUL
