"""The overview's panels about other parts of the service: failing webhooks, cost, reconciliation.

Each reads through the owning module's own query (the admin API's subscription
views, GET /api/v1/costs's sums, GET /api/v1/reconciliations's `reports`),
so the dashboard and the API never disagree. The cost is the process's last
figures (`cost_panel`), recomputed in the background, never in a render.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from app.api.reconciliations import reports
from app.ui.cost_panel import CostFigures, CostPanel
from app.webhooks import subscriptions


@dataclass(frozen=True, slots=True)
class Panels:
    failing_webhooks: list[dict[str, Any]]
    cost: CostFigures | None  # None: the first are being computed
    last_reconciliation: dict[str, Any] | None


def failing(view: dict[str, Any]) -> bool:
    """Retrying without success, or stopped because the retries ran out."""
    return view["failing_since"] is not None or view["disabled_reason"] == "failing"


def build(engine: Engine, cost: CostPanel, now: datetime) -> Panels:
    webhooks = [view for view in subscriptions.list_all(engine) if failing(view)]
    with engine.connect() as conn:
        last = reports(conn, None, None, 1)
    return Panels(webhooks, cost.current(now), last[0] if last else None)
