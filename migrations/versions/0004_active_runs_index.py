"""partial index on the runs that are still queued or in progress, by thread

Every claim (is an earlier message of the thread still being answered?), every finish (the thread's
next queued run) and every post (If-Thread-Idle, the per-user cap) asks for a thread's active runs.
ix_runs_thread holds every run the thread ever had, so those look-ups grew with the conversation; this
index holds only the few active ones.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('queued', 'in_progress')")


def upgrade() -> None:
    op.create_index("ix_runs_thread_active", "runs", ["thread_id"], postgresql_where=ACTIVE, sqlite_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("ix_runs_thread_active", table_name="runs")
