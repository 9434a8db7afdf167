"""The cost panel's figures in memory: one worker at a time, none while fresh, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event

from app.config import Settings
from app.ui.cost_panel import MAX_AGE, CostPanel, compute
from tests.api_helpers import store


def test_none_until_the_first_figures_then_them_without_a_query(
    settings: Settings, engine: Engine
) -> None:
    store(engine, settings, [("1", "deliver", "2026-11-20 10:00:00")])
    panel = CostPanel(engine, settings)
    now = datetime.now(UTC)
    assert panel.current(now) is None  # never waits: the worker adds up meanwhile
    assert not panel.start(now)  # one at a time, and not again within MAX_AGE
    assert panel.idle.wait(timeout=30)
    figures = panel.current(now + timedelta(seconds=1))
    assert figures is not None and figures == compute(engine, settings, figures.computed_at)
    assert figures.periods[2].messages == 1

    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    try:
        assert panel.current(now + MAX_AGE - timedelta(seconds=1)) is figures
        assert panel.idle.is_set()  # no worker started
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements == []


def test_stale_figures_are_served_while_the_next_are_added_up(
    settings: Settings, engine: Engine
) -> None:
    panel = CostPanel(engine, settings)
    first = panel.refresh()
    later = datetime.now(UTC) + MAX_AGE
    assert panel.start(later - MAX_AGE)
    assert panel.idle.wait(timeout=30)
    store(engine, settings, [("1", "deliver", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"))])
    second = panel.figures
    assert second is not None and second is not first
    assert panel.current(later) is second  # the stale ones, at once
    assert panel.idle.wait(timeout=30)
    third = panel.figures
    assert second.periods[2].messages == 0
    assert third is not None and third.periods[2].messages == 1
