"""The garbage collector tuned for a server process (issue 10).

Start-up (FastAPI, pydantic, SQLAlchemy, the routes) leaves hundreds of
thousands of long-lived objects, and every full collection walks them all
again. `gc.freeze()` moves them out of the collector's sight, and a higher
first-generation threshold lets a request's short-lived objects die by
reference counting rather than in a collection: together about 15-25% of the
CPU a 1-state callback costs (bench/RESULTS.md). Reference cycles are still
collected, only less often.
"""

from __future__ import annotations

import gc

# Allocations between two young-generation collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def freeze_startup_objects() -> None:
    """Collect once, then freeze what survives; call when start-up is over."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def thaw() -> None:
    """Hand the frozen objects back to the collector (at shutdown: an app made
    and dropped in one process, as the tests do, is then collected)."""
    gc.unfreeze()
