"""The overview page, and its figures alone (what the page's script re-fetches)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app import callback_url
from app.logs import redact
from app.ui import chart, overview, panels
from app.ui.state import SignedIn, View

router = APIRouter(prefix="/ui")
ChartKind = Annotated[str, Query(alias="chart", max_length=10)]


@router.get("/")
async def overview_page(view: SignedIn, chart_kind: ChartKind = "day") -> Response:
    return view.page("overview.html", **await _figures(view, chart_kind))


@router.get("/overview/figures")
async def figures(view: SignedIn, chart_kind: ChartKind = "day") -> Response:
    """The figures alone, for the page's script to swap in."""
    return view.page("_figures.html", **await _figures(view, chart_kind))


async def _figures(view: View, chart_kind: str) -> dict[str, Any]:
    chart_kind = chart_kind if chart_kind in ("day", "month") else "day"

    def read() -> overview.Overview:
        with view.runtime.engine.connect() as conn:
            return overview.build(
                conn, view.ui.buckets, view.runtime.settings, view.zone, chart_kind, view.now
            )

    figures = await run_in_threadpool(read)
    extra = await run_in_threadpool(panels.build, view.runtime.engine, view.ui.cost, view.now)
    series = [(interval.label, counts) for interval, counts in figures.series]
    expected = callback_url.expected_url(view.runtime.settings, view.runtime.callback_token)
    return {
        "o": figures,
        "panels": extra,
        "chart": chart.stacked(series),
        "chart_kind": chart_kind,
        "expected_url": redact(expected) if expected else None,
    }
