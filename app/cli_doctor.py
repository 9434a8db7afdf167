"""`targetsms-receiver doctor [--reach]`: exit 0 when nothing FAILs, 1 when something does."""

from __future__ import annotations

import asyncio
import sys

import click

from app.config import Settings
from app.db import create_db_engine
from app.doctor import examine
from app.findings import Level
from app.poller import utc_now

EXIT_OK, EXIT_FAIL = 0, 1


@click.command()
@click.option(
    "--reach",
    is_flag=True,
    help="Also send one request through PUBLIC_URL to our callback path (stores nothing).",
)
def doctor(reach: bool) -> None:
    """Check the database, the poller, callbacks, PUBLIC_URL and the provider account.

    One line per check: OK, WARN or FAIL, and what to do. Exit 1 on any FAIL.
    """
    settings = Settings()
    engine = create_db_engine(settings)
    try:
        found = asyncio.run(examine(engine, settings, utc_now(), reach=reach))
    finally:
        engine.dispose()
    for finding in found:
        click.echo(finding.line())
    failed = sum(f.level is Level.FAIL for f in found)
    warned = sum(f.level is Level.WARN for f in found)
    click.echo(f"{len(found)} checks: {failed} failed, {warned} warnings")
    sys.exit(EXIT_FAIL if failed else EXIT_OK)
