"""The overview's panels about other parts of the service: failing webhooks, cost, reconciliation.

Each reads through the owning module's own query (the admin API's subscription
views, GET /api/v1/costs's `costs`, GET /api/v1/reconciliations's `reports`),
so the dashboard and the API never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from app.api.reconciliations import reports
from app.config import Settings
from app.costs import costs, money_text, total
from app.ui.i18n import N_
from app.webhooks import subscriptions

# The cost periods, as days back from today inclusive (the account's days, as the cost API).
COST_PERIODS = ((N_("Today"), 0), (N_("7 days"), 6), (N_("30 days"), 29))


@dataclass(frozen=True, slots=True)
class CostPeriod:
    name: str
    since: date
    until: date
    messages: int
    parts: int
    money: str  # a decimal string, exact
    unpriced_messages: int


@dataclass(frozen=True, slots=True)
class Panels:
    failing_webhooks: list[dict[str, Any]]
    cost: list[CostPeriod]
    last_reconciliation: dict[str, Any] | None


def failing(view: dict[str, Any]) -> bool:
    """Retrying without success, or stopped because the retries ran out."""
    return view["failing_since"] is not None or view["disabled_reason"] == "failing"


def build(engine: Engine, settings: Settings, now: datetime) -> Panels:
    today = now.astimezone(settings.zone).date()
    webhooks = [view for view in subscriptions.list_all(engine) if failing(view)]
    with engine.connect() as conn:
        periods = []
        for name, days in COST_PERIODS:
            since = today - timedelta(days=days)
            whole = total(costs(conn, since, today, "day", settings.zone))
            periods.append(
                CostPeriod(
                    name,
                    since,
                    today,
                    whole.messages,
                    whole.parts,
                    money_text(whole.money),
                    whole.unpriced_messages,
                )
            )
        last = reports(conn, None, None, 1)
    return Panels(webhooks, periods, last[0] if last else None)
