"""A throwaway database at the head migration, on SQLite and on PostgreSQL, for the knowledge base and
memories unit tests (services talk to it through shared.db as they would in production)."""
from __future__ import annotations

import dataclasses
import uuid
from types import SimpleNamespace

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from devtools.stack import PG_ADMIN_URL, ROOT


def _migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory):
    """Point shared.db at a fresh, migrated database for the module's tests."""
    from shared import db

    name = f"threadline_kb_unit_{uuid.uuid4().hex[:8]}"
    admin = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('kb') / 'kb.db'}"
    else:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _migrate(url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db, "settings", dataclasses.replace(db.settings, database_url=url))
        db.dispose()
        try:
            yield request.param
        finally:
            db.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_person(database):
    """A user (in a new tenant unless one is given) as a namespace with id, tenant and tenant_id."""
    from shared.services import identity

    def make(tenant: str | None = None):
        tenant = tenant or f"tenant-{uuid.uuid4().hex[:8]}"
        user = identity.create_user(f"{uuid.uuid4().hex[:12]}@example.com", tenant)
        return SimpleNamespace(id=user.id, tenant=tenant, tenant_id=user.tenant_id)

    return make


def tool_context(person, thread_id: int | None = None):
    from worker.tools import ToolContext

    return ToolContext(tenant_id=person.tenant_id, user_id=person.id, thread_id=thread_id, run_id=uuid.uuid4(),
                       context=None)
