"""partial indexes for the sweeper and the post's last context key (issue 14, PostgreSQL's CPU per message)

Every claim and every finish changes ``runs.status``, so no run UPDATE is HOT: each one inserts a new
entry into every index of ``runs`` whose predicate the new row satisfies. ``ix_runs_status_queued``
and ``ix_runs_status_lease`` held every run ever stored, finished ones too, and took an entry on
every UPDATE; what reads them only ever asks for one status (the sweeper: runs in progress whose
lease expired, runs queued too long; the queue gauges: the queued runs and the oldest, the runs in
progress). They become partial indexes on exactly those rows: ``ix_runs_queued`` (``queued_at``
of the queued runs) and ``ix_runs_leased`` (``lease_expires_at`` of the runs in progress). A claim
now enters its run into ``ix_runs_leased`` only, a finish into neither (with the active-run indexes
of 0004 and 0005 also partial, a finish maintains three of the seven indexes instead of seven).

``ix_messages_context_key``: the post reads the context key the thread's client last used, walking
the thread's messages newest first until one has a key (``uq_messages_thread_seq``): every message of
a thread whose client never sent one. This index holds only the messages with a key: one probe.

The predicates are the texts shared/models/runs.py and conversation.py declare.

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")
IN_PROGRESS = sa.text("status = 'in_progress'")
WITH_KEY = sa.text("context_key IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_runs_status_queued", table_name="runs")
    op.drop_index("ix_runs_status_lease", table_name="runs")
    op.create_index("ix_runs_queued", "runs", ["queued_at"], postgresql_where=QUEUED, sqlite_where=QUEUED)
    op.create_index("ix_runs_leased", "runs", ["lease_expires_at"], postgresql_where=IN_PROGRESS,
                    sqlite_where=IN_PROGRESS)
    op.create_index("ix_messages_context_key", "messages", ["thread_id", "seq"], postgresql_where=WITH_KEY,
                    sqlite_where=WITH_KEY)


def downgrade() -> None:
    op.drop_index("ix_messages_context_key", table_name="messages")
    op.drop_index("ix_runs_leased", table_name="runs")
    op.drop_index("ix_runs_queued", table_name="runs")
    op.create_index("ix_runs_status_lease", "runs", ["status", "lease_expires_at"], unique=False)
    op.create_index("ix_runs_status_queued", "runs", ["status", "queued_at"], unique=False)
