"""Alembic environment: the URL comes from shared.config; SQLite gets batch mode for ALTERs."""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from shared.config import settings
from shared.db import make_engine
from shared.models import Base
from shared.text_search import include_object  # keeps autogenerate off the hand-made search objects

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

url = config.attributes.get("url") or settings.database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=url.startswith("sqlite"),
                      include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite", include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
