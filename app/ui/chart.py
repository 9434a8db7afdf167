"""The overview's chart as plain geometry: stacked bars, drawn by the template as SVG.

Server-rendered SVG needs no script (the CSP allows none inline, and nothing
is vendored), prints, and reads in a screen reader through each bar's <title>.
Colours come from CSS classes, one per known status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.ui.i18n import STATUS_MEANINGS

WIDTH, HEIGHT = 720, 240
LEFT, BOTTOM, TOP = 44, 22, 8  # room for the axis labels
ORDER = ("deliver", "partly_deliver", "send", "expired", "not_deliver")  # stacking, bottom up
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Segment:
    status: str  # a known status or OTHER
    count: int
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    x: float
    width: float
    total: int
    segments: list[Segment]
    show_label: bool


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    ticks: list[tuple[float, int]]  # (y, value) for the horizontal grid
    statuses: list[str]  # those drawn, for the legend
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: int = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return all(bar.total == 0 for bar in self.bars)


def stacked(series: Sequence[tuple[str, dict[str, int]]]) -> Chart:
    grouped = [(label, _grouped(counts)) for label, counts in series]
    top = _nice_ceiling(max((sum(c.values()) for _, c in grouped), default=0))
    plot_height = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT) / max(len(grouped), 1)
    every = max(1, len(grouped) // 12)  # at most ~12 labels under the bars
    bars = []
    for index, (label, counts) in enumerate(grouped):
        y = float(HEIGHT - BOTTOM)
        segments = []
        for status in [*ORDER, OTHER]:
            count = counts.get(status, 0)
            if count:
                height = plot_height * count / top
                y -= height
                segments.append(Segment(status, count, round(y, 2), round(height, 2)))
        x = LEFT + index * step + step * 0.1
        bars.append(
            Bar(
                label,
                round(x, 2),
                round(step * 0.8, 2),
                sum(counts.values()),
                segments,
                index % every == 0,
            )
        )
    ticks = [(round(HEIGHT - BOTTOM - plot_height * i / 4, 2), top * i // 4) for i in range(5)]
    drawn = {segment.status for bar in bars for segment in bar.segments}
    return Chart(bars, ticks, [s for s in [*ORDER, OTHER] if s in drawn])


def _grouped(counts: dict[str, int]) -> dict[str, int]:
    """Known statuses as they are; anything else (e.g. `read`) under OTHER."""
    grouped: dict[str, int] = {}
    for status, count in counts.items():
        key = status if status in STATUS_MEANINGS else OTHER
        grouped[key] = grouped.get(key, 0) + count
    return grouped


def _nice_ceiling(value: int) -> int:
    """The smallest of 4, 8, 20, 40, 80, 200, ... that is >= value: four whole ticks."""
    nice = 4
    while nice < value:
        for factor in (2, 2.5, 2):
            nice = int(nice * factor)
            if nice >= value:
                break
    return nice
