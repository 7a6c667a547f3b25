"""the permissions of the credential that posted a run's message, on the run

A token may hold a subset of its user's permissions; the agent offers only the tools that subset
allows (shared/tools.py, TOOL_PERMISSIONS) and checks again before each call. Runs stored before this
column keep NULL and are treated as holding only ai_thread_messages.create, the one permission their
post certainly had (shared/tools.py, LEGACY_RUN_PERMISSIONS).

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column(
            "permissions", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("permissions")
