"""The `targetsms-receiver` command."""

from __future__ import annotations

import click
import uvicorn

from app import cli_doctor, cli_provider, cli_reconcile, cli_webhooks
from app import migrate as migrations
from app.config import Settings
from app.db import create_db_engine
from app.logs import configure_logging
from app.metrics import clear_multiprocess_directory
from app.retention import purge_documents
from app.tokens import callback_path, callback_token


@click.group()
# The installed distribution's version (importlib.metadata), not a copy kept here.
@click.version_option(package_name="targetsms-receiver", message="%(package)s %(version)s")
def main() -> None:
    """Receives TargetSMS status callbacks and serves them."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
@click.option(
    "--migrate/--no-migrate",
    default=None,
    help="Apply pending migrations first. Default: on for SQLite, off for PostgreSQL "
    "(there `migrate` is a one-off step: replicas would race).",
)
def serve(host: str, port: int, workers: int, migrate: bool | None) -> None:
    """Run the HTTP service under uvicorn."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if migrate if migrate is not None else settings.is_sqlite:
        migrations.upgrade(settings)
    clear_multiprocess_directory()
    uvicorn.run(
        "app.main:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # it prints the path, token included; ours redacts it
        log_config=None,
        server_header=False,
        # The app reads X-Forwarded-For itself, from TRUSTED_PROXIES only (app/network.py).
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )


@main.command()
def migrate() -> None:
    """Apply pending database migrations."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    migrations.upgrade(settings)


@main.command("callback-path")
def show_callback_path() -> None:
    """Print the callback path (with its secret token) to register with the provider."""
    settings = Settings()
    engine = create_db_engine(settings)
    try:
        path = callback_path(callback_token(settings, engine))
    finally:
        engine.dispose()
    base = settings.public_url.rstrip("/")
    click.echo(f"{base}{path}" if base else path)


@main.command()
def purge() -> None:
    """Delete raw callback documents older than RAW_RETENTION_DAYS."""
    settings = Settings()
    engine = create_db_engine(settings)
    try:
        deleted = purge_documents(engine, settings.raw_retention_days)
    finally:
        engine.dispose()
    click.echo(f"purged {deleted} documents")


main.add_command(cli_provider.poll)
main.add_command(cli_provider.callback_url_command)
main.add_command(cli_provider.simulator)
# Self-healing (issue 12).
main.add_command(cli_doctor.doctor)
main.add_command(cli_webhooks.webhooks)  # outbound webhooks (issue 11)
main.add_command(cli_webhooks.deliver)
main.add_command(cli_reconcile.reconcile)  # reconciliation (issue 12)
