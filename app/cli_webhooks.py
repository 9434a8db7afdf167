"""`targetsms-receiver webhooks ...` (manage subscriptions) and `deliver` (the delivery role).

The subcommands work on the database directly, as the admin API does, for
operators without an HTTP client. Exit codes: 0 done; 1 no such subscription;
2 bad usage or a refused URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy import Engine

from app import cursors
from app.api.errors import ApiError
from app.config import Settings
from app.db import create_db_engine
from app.logs import configure_logging
from app.webhooks import subscriptions, targets
from app.webhooks.delivery import Deliverer

log = logging.getLogger("app.webhooks")

EXIT_NOT_FOUND, EXIT_USAGE = 1, 2
SUBSCRIPTION_ID = click.IntRange(1, 2**63 - 1)
T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _engine() -> Iterator[tuple[Settings, Engine]]:
    settings = Settings()
    engine = create_db_engine(settings)
    try:
        yield settings, engine
    finally:
        engine.dispose()


def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return call(*args, **kwargs)
    except subscriptions.NotFound:
        _fail("no such webhook subscription", EXIT_NOT_FOUND)
    except subscriptions.CursorAhead:
        _fail("the cursor is beyond the newest change", EXIT_USAGE)


def _echo(value: Any) -> None:
    click.echo(json.dumps(value, default=str, indent=2, ensure_ascii=False))


def _check_url(url: str, settings: Settings) -> None:
    try:
        asyncio.run(targets.check(url, settings))
    except targets.TargetRefused as exc:
        _fail(f"{exc.code}: {exc.detail}", EXIT_USAGE)


@click.group()
def webhooks() -> None:
    """Outbound webhook subscriptions (the admin API's /api/v1/admin/webhooks)."""


@webhooks.command("list")
def list_command() -> None:
    """Every subscription with its delivery state (JSON)."""
    with _engine() as (_, engine):
        _echo(subscriptions.list_all(engine))


@webhooks.command("add")
@click.argument("url")
@click.option("--status", "statuses", multiple=True, help="Only this status (repeatable).")
@click.option("--final-only", is_flag=True, help="Only final statuses.")
@click.option("--description", default="", help="A note for people.")
def add_command(url: str, statuses: tuple[str, ...], final_only: bool, description: str) -> None:
    """Subscribe URL; prints the subscription and its secret (shown only now)."""
    with _engine() as (settings, engine):
        _check_url(url, settings)
        created = subscriptions.create(
            engine, url, list(statuses) or None, final_only, description[:200]
        )
        _echo(created.view | {"secret": created.secret})


@webhooks.command("remove")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def remove_command(subscription_id: int) -> None:
    """Delete a subscription and its attempts."""
    with _engine() as (_, engine):
        _run(subscriptions.remove, engine, subscription_id)
    click.echo(f"removed webhook {subscription_id}")


@webhooks.command("rotate")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def rotate_command(subscription_id: int) -> None:
    """A new secret (printed); the old one signs too for WEBHOOK_SECRET_OVERLAP_HOURS."""
    with _engine() as (settings, engine):
        hours = settings.webhook_secret_overlap_hours
        created = _run(subscriptions.rotate, engine, subscription_id, hours)
        _echo(created.view | {"secret": created.secret})


@webhooks.command("replay")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
@click.option("--after", help="A change-feed cursor: resend everything after it.")
@click.option("--since", type=click.DateTime(), help="Resend changes received since (UTC).")
def replay_command(subscription_id: int, after: str | None, since: datetime | None) -> None:
    """Rewind a subscription: everything after the point is delivered again."""
    if (after is None) == (since is None):
        _fail("give exactly one of --after and --since", EXIT_USAGE)
    try:
        position = cursors.decode(cursors.CHANGES, after) if after is not None else None
    except ApiError as exc:
        _fail(exc.detail, EXIT_USAGE)
    when = since.replace(tzinfo=since.tzinfo or UTC) if since is not None else None
    with _engine() as (_, engine):
        _echo(_run(subscriptions.replay, engine, subscription_id, after=position, since=when))


@webhooks.command("pause")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def pause_command(subscription_id: int) -> None:
    """Stop delivering (the cursor stays; resume continues from it)."""
    with _engine() as (_, engine):
        _echo(_run(subscriptions.change, engine, subscription_id, {"enabled": False}))


@webhooks.command("resume")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def resume_command(subscription_id: int) -> None:
    """Deliver again from the cursor (also after 410 or retries running out)."""
    with _engine() as (_, engine):
        _echo(_run(subscriptions.change, engine, subscription_id, {"enabled": True}))


@click.command()
def deliver() -> None:
    """Deliver webhooks (the role of its own; the service also does it unless
    WEBHOOK_DELIVERY=false). Runs until SIGTERM/SIGINT."""
    with _engine() as (settings, engine):
        configure_logging(settings.log_level, settings.log_format)
        asyncio.run(_deliver(settings, engine))


async def _deliver(settings: Settings, engine: Engine) -> None:
    deliverer = Deliverer(settings, engine)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopping, deliverer, signum)
    await deliverer.run()
    await deliverer.stop()  # wait for the POSTs in flight


def _stopping(deliverer: Deliverer, signum: int) -> None:
    log.info("%s: stopping after the POSTs in flight", signal.Signals(signum).name)
    deliverer.stopping.set()
