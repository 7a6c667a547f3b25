"""runs.cancel_requested_at: a cancel asked for while a worker holds the run (issue 13)

A queued run is cancelled at once (its status becomes ``cancelled``); a run in progress is only
marked here, and the worker that holds it stores the partial answer as ``cancelled``. The mark also
makes the ending deterministic: the worker's final conditional UPDATE turns into ``cancelled``
whenever the mark is set, and the sweeper ends a lost run that carries it as ``cancelled`` instead
of handing it to another worker. A nullable column without a default: no table rewrite.

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "cancel_requested_at")
