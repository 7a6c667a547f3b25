"""the request id (X-Request-Id) of the POST that started a run, on the run

The worker puts it on every log line of the run; the task header carries it on the first delivery,
and this column on a re-enqueue by the sweeper or after the thread's previous answer.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("request_id")
