"""The Alembic migrations, installed as `app.migrations` (see pyproject.toml)."""
