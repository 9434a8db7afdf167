"""`GET /api/v1/costs`: parts, messages and money per day, sender or status (JSON or CSV)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import ReadKey
from app.api.deps import RuntimeDep
from app.api.errors import ApiError, error_responses
from app.costs import CostLine, GroupBy, costs, money_text, to_csv, total
from app.runtime import Runtime

router = APIRouter(tags=["costs"], dependencies=[ReadKey])
MAX_DAYS = 366
CSV_TYPE = "text/csv"

LINE_EXAMPLE: dict[str, Any] = {
    "key": "2026-11-20",
    "messages": 3,
    "parts": 5,
    "money": "4.75",
    "unpriced_messages": 0,
}


class CostGroup(BaseModel):
    key: str | None = Field(
        description="The day (YYYY-MM-DD, account zone), sender name, or status; "
        "null for messages whose sender is not known."
    )
    messages: int
    parts: int = Field(description="Parts (SMS segments) the provider counted.")
    money: str = Field(description="Sum of the parts' prices, a decimal string (exact).")
    unpriced_messages: int = Field(description="Messages with no price known: not in `money`.")


class Costs(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "since": "2026-11-20",
                "until": "2026-11-20",
                "group_by": "day",
                "groups": [LINE_EXAMPLE],
                "total": LINE_EXAMPLE | {"key": None},
            }
        }
    )

    since: date
    until: date
    group_by: GroupBy
    groups: list[CostGroup]
    total: CostGroup


def _today(runtime: Runtime) -> date:
    return datetime.now(runtime.settings.zone).date()


def _group(line: CostLine) -> dict[str, Any]:
    return {
        "key": line.key,
        "messages": line.messages,
        "parts": line.parts,
        "money": money_text(line.money),
        "unpriced_messages": line.unpriced_messages,
    }


def _wants_csv(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    accept = request.headers.get("accept", "")
    return CSV_TYPE in accept and "application/json" not in accept


@router.get(
    "/costs",
    summary="What the SMS cost: parts, messages and money (JSON, or CSV for spreadsheets)",
    response_model=Costs,
    responses=error_responses(401, 422)
    | {200: {"content": {CSV_TYPE: {"example": "day,messages,parts,money,unpriced_messages\r\n"}}}},
)
def get_costs(
    request: Request,
    runtime: RuntimeDep,
    since: Annotated[
        date | None, Query(description="First day, account zone (default: today).")
    ] = None,
    until: Annotated[
        date | None, Query(description="Last day, inclusive (default: today).")
    ] = None,
    group_by: Annotated[GroupBy, Query(description="One line per day, sender or status.")] = "day",
    format_: Annotated[
        Literal["json", "csv"] | None,
        Query(alias="format", description="csv: as `Accept: text/csv`."),
    ] = None,
) -> Any:
    """Money is each part's price added exactly (see the README, "Reconciliation and
    cost"). A message counts on its send day in TARGETSMS_TIMEZONE."""
    first, last = since or _today(runtime), until or _today(runtime)
    if last < first or (last - first).days >= MAX_DAYS:
        raise ApiError(
            422, "invalid_range", f"until must be on or after since, at most {MAX_DAYS} days."
        )
    with runtime.engine.connect() as conn:
        lines = costs(conn, first, last, group_by, runtime.settings.zone)
    if _wants_csv(request, format_):
        name = f"costs-{first}-{last}-by-{group_by}.csv"
        return Response(
            to_csv(lines, group_by),
            media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return {
        "since": first,
        "until": last,
        "group_by": group_by,
        "groups": [_group(line) for line in lines],
        "total": _group(total(lines)),
    }
