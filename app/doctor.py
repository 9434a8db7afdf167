"""`targetsms-receiver doctor`: every check an operator would make by hand, in one run.

The order: the database (and, when it answers, what the roles recorded in it),
PUBLIC_URL, then the provider (credentials, callback URL, zone, balance).
Checks that need the database are left out when it is unreachable, and the
provider's when TARGETSMS_LOGIN/PASSWORD are not set (one WARN says so).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from app import doctor_local, doctor_remote
from app.callback_url import ProviderNotConfigured, provider_client
from app.config import Settings
from app.findings import Finding, Level, warn
from app.tokens import callback_token


def local(engine: Engine, settings: Settings, now: datetime) -> list[Finding]:
    found = doctor_local.database(engine, settings)
    if found.level is Level.FAIL:
        return [found]
    with engine.connect() as conn:
        return [
            found,
            doctor_local.last_callback(conn, settings, now),
            doctor_local.poller(conn, settings, now),
            doctor_local.reconciliation(conn),
            doctor_local.webhooks(conn),
        ]


async def remote(
    engine: Engine, settings: Settings, now: datetime, *, reach: bool, database_ok: bool
) -> list[Finding]:
    found = [doctor_remote.public_url(settings)]
    if reach:
        found.append(await doctor_remote.reach(settings))
    try:
        client = provider_client(settings, retries=1)
    except ProviderNotConfigured:
        return [*found, warn("provider", "not checked: TARGETSMS_LOGIN/PASSWORD not set", "")]
    # The token lives in the database when CALLBACK_TOKEN is not set.
    token = callback_token(settings, engine) if database_ok or settings.callback_token else ""
    async with client:
        return found + await doctor_remote.provider(client, settings, token, now)


async def examine(
    engine: Engine, settings: Settings, now: datetime, *, reach: bool
) -> list[Finding]:
    found = local(engine, settings, now)
    database_ok = found[0].level is not Level.FAIL
    return found + await remote(engine, settings, now, reach=reach, database_ok=database_ok)
