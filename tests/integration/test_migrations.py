"""The Alembic history upgrades an empty database to head, matches the models, and downgrades back."""
from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from shared.db import make_engine
from shared.models import Base
from shared.text_search import include_object
from tests.stack import PG_ADMIN_URL, ROOT


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"threadline_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {t for t in inspect(engine).get_table_names() if t != "alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_matches_models_and_downgrade_empties(empty_database):
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= tables(empty_database)
    engine = make_engine(empty_database)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_object": include_object}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"
    command.downgrade(config, "base")
    assert not (set(Base.metadata.tables) & tables(empty_database))
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= tables(empty_database)
