"""Alembic, driven from code: `migrate`, `serve` on SQLite, and the tests.

The migrations are installed inside the package (`app.migrations`, mapped
from the repository's top-level `migrations/` folder by pyproject.toml), so
the Alembic configuration is built here and nothing has to be found next to
the working directory. `alembic.ini` is only for developers running the
`alembic` command itself (e.g. `alembic revision --autogenerate`).
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config

from app.config import Settings


def script_location() -> str:
    """The installed migrations folder: site-packages, or the checkout when editable."""
    return str(files("app.migrations"))


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)
