"""Grant memories.read and memories.delete wherever ai_thread_messages.read is held (issues 15 and 16)

Before 0011 there was no memories permission: the assistant's memory tools, and recalling memories into
the prompt, went with ``ai_thread_messages.read``. They now need ``memories.read`` (``delete_memory``:
``memories.delete``), the permissions the new memories endpoints check, so that a token cannot reach
through the assistant what it cannot read directly. Users and tokens that held
``ai_thread_messages.read`` keep what they could do by getting both; a token without an explicit list
(NULL: all of its user's) needs nothing. Downgrade takes the two names away again.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
GRANTED = ("memories.read", "memories.delete")
WITNESS = "ai_thread_messages.read"


def _rewrite(table_name: str, key_type, change) -> None:
    table = sa.table(table_name, sa.column("id", key_type), sa.column("permissions", JSON))
    bind = op.get_bind()
    for row in bind.execute(sa.select(table.c.id, table.c.permissions)).all():
        if row.permissions is None:
            continue
        updated = change(list(row.permissions))
        if updated != list(row.permissions):
            bind.execute(table.update().where(table.c.id == row.id).values(permissions=updated))


def _grant(perms: list) -> list:
    return perms + [p for p in GRANTED if p not in perms] if WITNESS in perms else perms


def _revoke(perms: list) -> list:
    return [p for p in perms if p not in GRANTED]


def upgrade() -> None:
    _rewrite("users", sa.String(64), _grant)
    _rewrite("api_tokens", sa.Uuid(), _grant)


def downgrade() -> None:
    _rewrite("users", sa.String(64), _revoke)
    _rewrite("api_tokens", sa.Uuid(), _revoke)
