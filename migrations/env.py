"""Alembic environment: our URL, our tables only, our own version table."""

from __future__ import annotations

from alembic import context
from sqlalchemy.pool import NullPool

from service.db import make_engine, migration_options
from service.models import Base
from service.settings import get_settings

config = context.config
url = config.attributes.get("sqlalchemy.url") or get_settings().database_url

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, **migration_options())
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, **migration_options()
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
