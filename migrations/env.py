"""Alembic environment: the URL and engine come from the service's settings."""

from __future__ import annotations

from alembic import context

from app.config import Settings
from app.db import create_db_engine
from app.models import Base

config = context.config
settings: Settings = config.attributes.get("settings") or Settings()


def run_migrations() -> None:
    engine = create_db_engine(settings)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=engine.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
