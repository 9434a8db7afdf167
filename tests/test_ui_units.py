"""Dashboard parts on their own: cached counts, the chart, the limiter, languages, packaging."""

from __future__ import annotations

import itertools
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.messages.extract import extract_from_dir
from sqlalchemy import Engine

from app.config import Settings
from app.ui import chart
from app.ui.buckets import BUCKET_SECONDS, SETTLE_SECONDS, EventBuckets, bucket_of
from app.ui.i18n import STATUS_MEANINGS, choose_language, translations
from app.ui.limits import AttemptLimiter
from app.ui.overview import chart_intervals
from tests.api_helpers import store

ROOT = Path(__file__).resolve().parent.parent


def _totals(counts: dict[int, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for by_status in counts.values():
        for status, count in by_status.items():
            total[status] = total.get(status, 0) + count
    return total


def test_closed_intervals_are_counted_once_and_the_open_tail_always(
    settings: Settings, engine: Engine
) -> None:
    now = datetime(2026, 3, 1, 12, 40, tzinfo=UTC)  # 12:30 bucket open, 12:15 settled
    old = now - timedelta(hours=5)
    store(engine, settings, [("1", "send", ""), ("2", "send", "")], old)
    store(engine, settings, [("1", "deliver", "2026-03-01 10:00:00")], now - timedelta(minutes=2))
    buckets = EventBuckets()
    first = bucket_of(now - timedelta(days=1))
    with engine.connect() as conn:
        assert _totals(buckets.counts(conn, first, now)) == {"send": 2, "deliver": 1}
    # A row appearing late in a closed interval is not re-counted (it cannot
    # happen for real: commits land within seconds); one in the open tail is.
    store(engine, settings, [("3", "send", "")], old)
    store(engine, settings, [("2", "expired", "2026-03-01 10:00:00")], now - timedelta(minutes=1))
    with engine.connect() as conn:
        assert _totals(buckets.counts(conn, first, now)) == {"send": 2, "deliver": 1, "expired": 1}
        # A fresh cache (a restart) reads the stored intervals: not counted again either.
        assert _totals(EventBuckets().counts(conn, first, now))["send"] == 2
        # Asking from further back loads only the older part.
        earlier = bucket_of(now - timedelta(days=2))
        assert _totals(buckets.counts(conn, earlier, now))["send"] == 2
        # Later, the tail settles and is kept; a later start drops older buckets from the answer.
        later = now + timedelta(seconds=BUCKET_SECONDS + SETTLE_SECONDS)
        counts = buckets.counts(conn, bucket_of(now - timedelta(hours=1)), later)
        assert _totals(counts) == {"deliver": 1, "expired": 1}


def test_conflicting_finals_are_not_counted(settings: Settings, engine: Engine) -> None:
    now = datetime.now(UTC)
    store(engine, settings, [("1", "deliver", "2026-03-01 10:00:00")], now)
    store(engine, settings, [("1", "not_deliver", "2026-03-01 10:05:00")], now)
    with engine.connect() as conn:
        counts = EventBuckets().counts(conn, bucket_of(now - timedelta(hours=1)), now)
    assert _totals(counts) == {"deliver": 1}


def test_chart_stacks_statuses_in_proportion() -> None:
    drawn = chart.stacked([("a", {"deliver": 30, "send": 10}), ("b", {}), ("c", {"read": 5})])
    first, empty, other = drawn.bars
    assert [s.status for s in first.segments] == ["deliver", "send"]
    deliver, send = first.segments
    assert abs(deliver.height / send.height - 3) < 0.01
    assert abs(deliver.y + deliver.height - drawn.baseline) < 0.01  # sits on the axis
    assert empty.segments == [] and empty.total == 0
    assert other.segments[0].status == chart.OTHER
    assert drawn.ticks[-1][1] >= 40 and not drawn.empty
    assert drawn.statuses == ["deliver", "send", "other"]
    assert chart.stacked([("a", {})]).empty


def test_chart_intervals_follow_the_local_clock() -> None:
    now = datetime(2026, 3, 29, 10, 20, tzinfo=UTC)  # Berlin moves to summer time that night
    hours = chart_intervals(now, ZoneInfo("Asia/Kolkata"), "day")
    assert len(hours) == 24 and hours[-1].label == "15:00"  # 15:50 in Kolkata
    assert hours[-1].start == datetime(2026, 3, 29, 9, 30, tzinfo=UTC)
    days = chart_intervals(now, ZoneInfo("Europe/Berlin"), "month")
    assert len(days) == 30 and days[-1].label == "29.03"
    assert days[-1].end - days[-1].start == timedelta(hours=23)  # the short day
    assert all(b.start == a.end for a, b in itertools.pairwise(days))


def test_the_limiter_allows_a_minute_s_worth_then_waits() -> None:
    clock = [100.0]
    limiter = AttemptLimiter(3, clock=lambda: clock[0])
    assert [limiter.attempt("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.attempt("a") == 60.0
    assert limiter.attempt("b") == 0.0  # per client
    clock[0] += 60.5
    assert limiter.attempt("a") == 0.0


def test_language_from_cookie_then_accept_language() -> None:
    assert choose_language(None, "ru-RU,ru;q=0.9,en-US;q=0.8") == "ru"
    assert choose_language(None, "en-GB,ru;q=0.5") == "en"
    assert choose_language(None, "fr, de;q=0.5") == "en"
    assert choose_language(None, "en;q=0, ru;q=0.1") == "ru"
    assert choose_language(None, ";;;,q=x, *") == "en"
    assert choose_language("ru", "en") == "ru"
    assert choose_language("xx", "ru") == "ru"


def test_every_string_has_a_russian_translation() -> None:
    found = extract_from_dir(
        str(ROOT / "app" / "ui"),
        method_map=[("**.py", "python"), ("templates/**.html", "jinja2")],
        options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
        keywords={"_": None, "gettext": None, "N_": None},
    )
    ids = {message for _, _, message, _, _ in found if isinstance(message, str)}
    assert len(ids) > 100
    russian = translations("ru")
    missing = sorted(i for i in ids if russian.gettext(i) == i and i not in {"UTC"})
    assert missing == []
    for status in STATUS_MEANINGS:
        assert russian.gettext(STATUS_MEANINGS[status]) != STATUS_MEANINGS[status]


def test_the_wheel_ships_templates_static_files_and_catalogs(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("targetsms_receiver-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "app/ui/templates/base.html",
        "app/ui/templates/_figures.html",
        "app/ui/static/ui.css",
        "app/ui/static/ui.js",
        "app/ui/i18n/ru/LC_MESSAGES/messages.po",
        "app/ui/i18n/en/LC_MESSAGES/messages.po",
    ):
        assert needed in names
    shipped = {n for n in names if n.startswith("app/ui/templates/")}
    on_disk = {f"app/ui/templates/{p.name}" for p in (ROOT / "app/ui/templates").iterdir()}
    assert shipped == on_disk
