"""`targetsms-receiver reconcile`: compare the provider's statistics with what we hold.

Exit codes: 0 every day reconciled (or skipped: another reconciler had it);
1 a day ended with an error (its report row says which); 2 bad usage;
3 the provider is not configured or refused our credentials.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

import click

from app import callback_url
from app.config import Settings
from app.db import create_db_engine
from app.logs import configure_logging
from app.provider import AccountBlocked, AuthenticationFailed
from app.reconcile import DayResult, Reconciler, default_days

EXIT_FAILED, EXIT_USAGE, EXIT_CREDENTIALS = 1, 2, 3
# stats.php keeps the last 3 months.
MAX_DAYS = 93
# Splitting windows multiplies the calls a dead provider gets: one retry each.
RETRIES = 1


def days_between(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


@click.command()
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First day (default: yesterday).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day (default: today).")
def reconcile(since: datetime | None, until: datetime | None) -> None:
    """Reconcile days (in TARGETSMS_TIMEZONE) against stats.php; one report row per day.

    Stores messages we never saw, final statuses we missed, and the context the
    statistics give; flags final statuses that differ from ours.
    """
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    yesterday, today = default_days(settings, datetime.now(UTC))
    first = since.date() if since else yesterday
    last = until.date() if until else today
    if last < first or (last - first).days >= MAX_DAYS:
        _fail(f"--until must be on or after --since, at most {MAX_DAYS} days", EXIT_USAGE)
    try:
        client = callback_url.provider_client(settings, retries=RETRIES)
    except callback_url.ProviderNotConfigured:
        _fail("set TARGETSMS_LOGIN and TARGETSMS_PASSWORD first", EXIT_CREDENTIALS)
    engine = create_db_engine(settings)

    async def run() -> list[DayResult]:
        async with client:
            return await Reconciler(settings, engine, client).run(days_between(first, last))

    try:
        results = asyncio.run(run())
    except (AuthenticationFailed, AccountBlocked) as exc:
        _fail(f"the provider refused our credentials: {exc.text}", EXIT_CREDENTIALS)
    finally:
        engine.dispose()
    for result in results:
        click.echo(_line(result))
    sys.exit(EXIT_FAILED if any(result.error for result in results) else 0)


def _line(result: DayResult) -> str:
    if result.skipped:
        return f"{result.day}: skipped, another reconciler is on this day"
    tally = result.tally
    line = (
        f"{result.day}: {tally.messages} messages ({tally.parts} parts, {tally.windows} answers);"
        f" added {tally.added}, updated {tally.updated}, flagged {tally.flagged}"
    )
    return f"{line}; FAILED: {result.error}" if result.error else line


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
