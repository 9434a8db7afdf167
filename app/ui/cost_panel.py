"""The overview's cost panel, added up in the background and served from memory.

Adding up a month of cost reads every message of it into Python (money is
`Decimal` from the provider's strings, so the database cannot sum it): 780 ms
at 100,000 messages (so about 8 s at 1,000,000), and the overview re-renders every
`UI_REFRESH_SECONDS`. So each process keeps the last figures, and one worker
thread at a time recomputes them when they are older than `MAX_AGE`; renders
show the last figures meanwhile (stale while revalidate), with the time they
were read, and until the first have been read, that they are being computed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from app.config import Settings
from app.costs import money_text, totals_since
from app.ui.i18n import N_

log = logging.getLogger("app.ui")
MAX_AGE = timedelta(seconds=60)
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
class CostFigures:
    computed_at: datetime  # when the messages were read
    periods: list[CostPeriod]


def compute(engine: Engine, settings: Settings, now: datetime) -> CostFigures:
    """The panel's periods as `GET /api/v1/costs` totals them, from one read."""
    today = now.astimezone(settings.zone).date()
    sinces = [today - timedelta(days=days) for _, days in COST_PERIODS]
    with engine.connect() as conn:
        lines = totals_since(conn, sinces, today, settings.zone)
    periods = [
        CostPeriod(
            name,
            since,
            today,
            line.messages,
            line.parts,
            money_text(line.money),
            line.unpriced_messages,
        )
        for (name, _), since, line in zip(COST_PERIODS, sinces, lines, strict=True)
    ]
    return CostFigures(now, periods)


class CostPanel:
    """One process's last cost figures, and at most one worker recomputing them."""

    def __init__(self, engine: Engine, settings: Settings, max_age: timedelta = MAX_AGE) -> None:
        self.engine, self.settings, self.max_age = engine, settings, max_age
        self.figures: CostFigures | None = None
        self.idle = threading.Event()  # clear while a worker runs
        self.idle.set()
        self._started_at: datetime | None = None  # of the last worker, ended or not
        self._lock = threading.Lock()

    def current(self, now: datetime) -> CostFigures | None:
        """The last figures (None before the first), never waiting for new ones;
        starts a worker when they are due."""
        figures = self.figures
        self.start(now)
        return figures

    def start(self, now: datetime) -> bool:
        """A worker, unless one runs or the last started under `max_age` ago
        (a failed one too: a database that is down is asked once a minute)."""
        with self._lock:
            if not self.idle.is_set():
                return False
            if self._started_at is not None and now - self._started_at < self.max_age:
                return False
            self._started_at = now
            self.idle.clear()
        threading.Thread(target=self._work, name="ui-cost", daemon=True).start()
        return True

    def refresh(self) -> CostFigures:
        """Recompute now, in the caller's thread (the worker's body)."""
        self.figures = compute(self.engine, self.settings, datetime.now(UTC))
        return self.figures

    def _work(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # the last figures stay; the next render tries again
            log.warning("cost panel refresh failed (%s)", type(exc).__name__)
        finally:
            self.idle.set()
