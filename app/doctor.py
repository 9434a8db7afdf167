"""`targetsms-receiver doctor`: every check an operator would make by hand, in one run.

The order: the database (and, when it answers, what the roles recorded in it),
PUBLIC_URL, then the provider (credentials, callback URL, zone, balance).
Checks that need the database are left out when it is unreachable, and the
provider's when TARGETSMS_LOGIN/PASSWORD are not set (one WARN says so).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from app import doctor_local, doctor_remote
from app.callback_url import ProviderNotConfigured, provider_client
from app.config import Settings
from app.findings import Finding, Level, fail, warn
from app.models import InstanceSetting
from app.tokens import TOKEN_KEY


def local(engine: Engine, settings: Settings, now: datetime) -> list[Finding]:
    found = doctor_local.database(engine, settings)
    if found.level is Level.FAIL:
        return [found]
    try:
        with engine.connect() as conn:
            return [
                found,
                doctor_local.last_callback(conn, settings, now),
                doctor_local.poller(conn, settings, now),
                doctor_local.reconciliation(conn),
                doctor_local.webhooks(conn),
            ]
    except SQLAlchemyError as exc:
        failed = f"a query failed ({type(exc).__name__})"
        return [fail("database", failed, "check the database server and its log")]


def stored_token(engine: Engine, settings: Settings) -> str | None:
    """Our callback token, without making one (doctor changes nothing); None if unknown."""
    if settings.callback_token is not None and settings.callback_token.get_secret_value():
        return settings.callback_token.get_secret_value()
    try:
        with engine.connect() as conn:
            return conn.scalar(
                select(InstanceSetting.value).where(InstanceSetting.key == TOKEN_KEY)
            )
    except SQLAlchemyError:
        return None


async def remote(
    engine: Engine, settings: Settings, now: datetime, *, reach: bool
) -> list[Finding]:
    found = [doctor_remote.public_url(settings)]
    if reach:
        found.append(await doctor_remote.reach(settings))
    try:
        client = provider_client(settings, retries=1)
    except ProviderNotConfigured:
        return [*found, warn("provider", "not checked: TARGETSMS_LOGIN/PASSWORD not set", "")]
    token = stored_token(engine, settings)
    async with client:
        return found + await doctor_remote.provider(client, settings, token, now)


async def examine(
    engine: Engine, settings: Settings, now: datetime, *, reach: bool
) -> list[Finding]:
    return local(engine, settings, now) + await remote(engine, settings, now, reach=reach)
