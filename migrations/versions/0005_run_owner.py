"""the user who asked, on each run, with a partial index on that user's active runs

The per-user cap (MAX_ACTIVE_RUNS_PER_USER) counts a user's queued and running answers on every post.
Through threads that was one probe per thread the user ever had; with the owner on the run and this
index it reads only the user's active runs. Existing runs take the owner of their thread.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('queued', 'in_progress')")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("user_id", sa.String(), nullable=True))
    op.execute("UPDATE runs SET user_id = (SELECT threads.user_id FROM threads WHERE threads.id = runs.thread_id)")
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("user_id", existing_type=sa.String(), nullable=False)
        batch.create_foreign_key("fk_runs_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE")
    op.create_index("ix_runs_user_active", "runs", ["user_id"], postgresql_where=ACTIVE, sqlite_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("ix_runs_user_active", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_user_id_users", type_="foreignkey")
        batch.drop_column("user_id")
