"""Purging raw callback documents older than the retention period.

States and messages are kept for good; only the raw bodies (kept for audit and
replay) expire. The service purges hourly; `targetsms-receiver purge` does it
on demand. Events must stay: the dashboard stores their counts per closed
15-minute interval (`app/ui/bucket_store.py`), and deleting events would leave
those counts too high; `events.document_id` is a plain reference, so purging
documents deletes no event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete

from app.db import write_transaction
from app.models import Document

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 3600


def purge_documents(engine: Engine, retention_days: int, now: datetime | None = None) -> int:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    with write_transaction(engine) as conn:
        deleted = conn.execute(delete(Document).where(Document.received_at < cutoff)).rowcount
    if deleted:
        log.info("purged %d raw documents older than %d days", deleted, retention_days)
    return deleted


async def purge_periodically(engine: Engine, retention_days: int) -> None:
    while True:
        try:
            await asyncio.to_thread(purge_documents, engine, retention_days)
        except Exception as exc:  # the database may be down; try again later
            log.warning("purging raw documents failed: %s", type(exc).__name__)
        await asyncio.sleep(PURGE_EVERY_SECONDS)
