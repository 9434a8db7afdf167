"""`GET /api/v1/reconciliations`: the report rows that reconciliation runs leave, newest first."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, select

from app.api.auth import ReadKey
from app.api.deps import RuntimeDep
from app.api.errors import error_responses
from app.models import ReconciliationReport

router = APIRouter(tags=["reconciliation"], dependencies=[ReadKey])
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000

EXAMPLE: dict[str, Any] = {
    "id": 7,
    "day": "2026-11-20",
    "status": "done",
    "owner": "poller-1:4242",
    "started_at": "2026-11-21T03:00:00Z",
    "finished_at": "2026-11-21T03:00:41Z",
    "windows": 3,
    "parts": 5120,
    "messages": 4096,
    "provider_counts": {"deliver": 4000, "not_deliver": 90, "send": 6},
    "our_counts": {"deliver": 3990, "not_held": 12, "send": 94},
    "added": 12,
    "updated": 88,
    "flagged": 1,
    "error": None,
}


class Reconciliation(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE})

    id: int
    day: date = Field(description="The day reconciled, in the account's zone.")
    status: str = Field(description="running, done or failed.")
    owner: str = Field(description="host:pid of the reconciler.")
    started_at: datetime
    finished_at: datetime | None
    windows: int = Field(description="stats.php answers used (after splitting).")
    parts: int
    messages: int
    provider_counts: dict[str, int] = Field(description="Messages per status at the provider.")
    our_counts: dict[str, int] = Field(
        description="The same messages per status here, before this run "
        '("not_held": never seen; "tracked": no status yet).'
    )
    added: int = Field(description="Messages we did not hold, stored.")
    updated: int = Field(description="Messages given the provider's state.")
    flagged: int = Field(description="Final here with another final status there: a conflict.")
    error: str | None = Field(description="Why the run for this day failed.")


class Reconciliations(BaseModel):
    reconciliations: list[Reconciliation]


COLUMNS = [
    column for column in ReconciliationReport.__table__.columns if column.name != "lease_until"
]


@router.get(
    "/reconciliations",
    summary="Reconciliation reports: one per day per run, newest first",
    response_model=Reconciliations,
    responses=error_responses(401, 422),
)
def list_reconciliations(
    runtime: RuntimeDep,
    since: Annotated[date | None, Query(description="First day (inclusive).")] = None,
    until: Annotated[date | None, Query(description="Last day (inclusive).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        return {"reconciliations": reports(conn, since, until, limit)}


def reports(
    conn: Connection, since: date | None, until: date | None, limit: int
) -> list[dict[str, Any]]:
    """The report rows, newest first (also the dashboard's "last reconciliation")."""
    query = select(*COLUMNS).order_by(ReconciliationReport.id.desc()).limit(limit)
    if since is not None:
        query = query.where(ReconciliationReport.day >= since)
    if until is not None:
        query = query.where(ReconciliationReport.day <= until)
    found = [dict(row._mapping) for row in conn.execute(query)]
    for row in found:
        row["provider_counts"] = json.loads(row["provider_counts"])
        row["our_counts"] = json.loads(row["our_counts"])
    return found
