"""Reconciliation against the simulator's stats.php (in process, over ASGI), on both databases."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta

import defusedxml.ElementTree as SafeET
import httpx
import pytest
from sqlalchemy import Engine, select

from app.config import Settings
from app.db import write_transaction
from app.ingest import Submission
from app.models import Event, MessageContext, ReconciliationReport
from app.protocol import IncomingState
from app.provider import AuthenticationFailed
from app.reconcile import DayResult, Window, day_windows
from app.reconcile_store import LEASE, claim_day
from app.simulator import SimulatorState
from app.store import store_batch
from app.tracking import Sent, track
from tests.conftest import rows
from tests.reconcile_helpers import DAY, Handler, Provider, reconcile, sent
from tests.sim_helpers import LOGIN, PASSWORD


@pytest.fixture
def sim() -> SimulatorState:
    return SimulatorState(LOGIN, PASSWORD)


def messages(engine: Engine) -> dict[str, tuple[object, ...]]:
    found = rows(engine, "SELECT id_sms, status, final, conflict, source FROM messages")
    return {str(row[0]): row[1:] for row in found}


def report(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        (row,) = conn.execute(select(ReconciliationReport.__table__)).mappings()
    values = dict(row)
    for key in ("provider_counts", "our_counts"):
        values[key] = json.loads(values[key])
    return values


CONTEXT_COLUMNS = (
    MessageContext.originator,
    MessageContext.operator,
    MessageContext.phone,
    MessageContext.sent_at,
    MessageContext.sent_time_raw,
    MessageContext.num_parts,
    MessageContext.price,
    MessageContext.cost,
    MessageContext.text,
)


def callback(engine: Engine, id_sms: str, status: str, time_raw: str) -> None:
    now = datetime.now(UTC)
    state = IncomingState(id_sms, status, time_raw, None)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state], "callback", now)], now)


def test_untracked_messages_are_found_and_stored_with_their_context(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    delivered = sent(sim, "09:15:00", 2, num_parts=2, price="0.95")
    waiting = sent(sim, "18:40:10")
    for id_sms in delivered:
        sim.advance(id_sms, "deliver", f"{DAY} 09:15:30")
    (result,) = reconcile(settings, engine, Provider(sim))
    assert result.error is None and not result.skipped
    assert messages(engine) == {
        delivered[0]: ("deliver", True, False, "reconcile"),
        delivered[1]: ("deliver", True, False, "reconcile"),
        waiting[0]: ("send", False, False, "reconcile"),
    }
    with engine.connect() as conn:
        context = conn.execute(
            select(*CONTEXT_COLUMNS).where(MessageContext.id_sms == delivered[0])
        ).all()
    assert [tuple(row) for row in context] == [
        (
            "SHOP",
            "Beeline",
            f"79{delivered[0][-5:]}****",
            datetime(2026, 11, 20, 6, 15, tzinfo=UTC),  # Moscow wall clock, stored in UTC
            f"{DAY} 09:15:00",
            2,
            "0.95",
            "1.90",
            None,  # RECONCILE_STORE_TEXT is off: no text
        )
    ]
    assert rows(engine, "SELECT count(*) FROM message_context") == [(3,)]
    got = report(engine)
    assert (got["status"], got["error"], got["day"]) == ("done", None, DAY)
    assert got["provider_counts"] == {"deliver": 2, "send": 1}
    assert got["our_counts"] == {"not_held": 3}
    assert (got["parts"], got["messages"], got["added"], got["updated"], got["flagged"]) == (
        5,
        3,
        3,
        0,
        0,
    )
    assert got["lease_until"] is None and got["finished_at"] is not None


def test_final_there_and_not_here_is_stored_through_the_status_rules(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    only_tracked, sent_here, both_final = sent(sim, "10:00:00", 3)
    track(engine, [Sent(only_tracked)], datetime.now(UTC))
    callback(engine, sent_here, "send", "")
    callback(engine, both_final, "deliver", f"{DAY} 10:00:20")
    for id_sms in (only_tracked, sent_here, both_final):
        sim.advance(id_sms, "deliver", f"{DAY} 10:00:20")
    (result,) = reconcile(settings, engine, Provider(sim))
    assert (result.tally.added, result.tally.updated, result.tally.flagged) == (0, 2, 0)
    assert messages(engine) == {
        only_tracked: ("deliver", True, False, "reconcile"),
        sent_here: ("deliver", True, False, "reconcile"),
        both_final: ("deliver", True, False, "callback"),  # already right: left alone
    }
    assert report(engine)["our_counts"] == {"deliver": 1, "send": 1, "tracked": 1}
    # Through the write path: the missing state is an event, once.
    with engine.connect() as conn:
        query = select(Event.status, Event.source).where(Event.id_sms == sent_here)
        history = [tuple(row) for row in conn.execute(query.order_by(Event.id))]
    assert history == [
        ("send", "callback"),
        ("deliver", "reconcile"),
    ]


def test_another_final_status_there_is_flagged_not_applied(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    (id_sms,) = sent(sim, "11:00:00")
    callback(engine, id_sms, "deliver", f"{DAY} 11:00:09")
    sim.advance(id_sms, "not_deliver", f"{DAY} 11:00:09")
    (result,) = reconcile(settings, engine, Provider(sim))
    assert result.tally.flagged == 1 and result.tally.updated == 0
    assert messages(engine) == {id_sms: ("deliver", True, True, "callback")}
    assert rows(engine, "SELECT status, source, conflict FROM events ORDER BY id") == [
        ("deliver", "callback", False),
        ("not_deliver", "reconcile", True),
    ]


def test_a_second_run_adds_nothing(settings: Settings, engine: Engine, sim: SimulatorState) -> None:
    ids = sent(sim, "12:00:00", 4)
    sim.advance(ids[0], "expired", f"{DAY} 13:00:00")
    first, second = (reconcile(settings, engine, Provider(sim))[0] for _ in range(2))
    assert (first.tally.added, second.tally.added, second.tally.updated) == (4, 0, 0)
    assert rows(engine, "SELECT count(*) FROM events") == [(4,)]
    assert rows(engine, "SELECT count(*), min(status) FROM reconciliation_reports") == [(2, "done")]


def test_text_is_kept_only_when_switched_on(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    sent(sim, "08:00:00", num_parts=3)
    keep = settings.model_copy(update={"reconcile_store_text": True})
    reconcile(keep, engine, Provider(sim))
    assert rows(engine, "SELECT num_parts, text FROM message_context") == [
        (3, "Your code is 1234")  # the three parts joined in order
    ]


def test_too_big_answers_are_asked_again_in_halves(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    times = ["00:00:00", "03:10:00", "11:59:59", "12:00:00", "17:45:00", "23:59:59"]
    ids = [id_sms for at in times for id_sms in sent(sim, at, 2)]
    sim.stats_limit = 4
    (result,) = reconcile(settings, engine, Provider(sim))
    assert result.error is None and result.tally.added == len(ids)
    assert set(messages(engine)) == set(ids)
    asked = sim.stats_requests
    assert asked[0] == (f"{DAY} 00:00:00", f"{DAY} 23:59:59")  # the whole day first
    assert (f"{DAY} 00:00:00", f"{DAY} 11:59:59") in asked  # then halves
    answered = [window for window in asked if len(sim.stat_rows(*window)) <= 4]
    covered = sorted(answered)
    # The answered windows tile the day: no gap, no overlap.
    assert covered[0][0] == f"{DAY} 00:00:00" and covered[-1][1] == f"{DAY} 23:59:59"
    for (_, stop), (start, _) in itertools.pairwise(covered):
        assert datetime.fromisoformat(start) - datetime.fromisoformat(stop) == timedelta(seconds=1)
    assert result.tally.windows == len(answered)


def _window_of(request: httpx.Request) -> Window:
    asked = SafeET.fromstring(request.content).find("stats").attrib
    start = f"{asked['date_start']} {asked['from_hour']}:{asked['from_minute']}"
    stop = f"{asked['date_stop']} {asked['to_hour']}:{asked['to_minute']}"
    return Window(datetime.fromisoformat(start), datetime.fromisoformat(stop))


def test_failing_windows_are_split_until_they_answer(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    ids = [i for at in ("01:00:00", "07:30:00", "15:00:00", "22:00:00") for i in sent(sim, at)]

    def slow_for_big_windows(request: httpx.Request) -> httpx.Response | None:
        if _window_of(request).minutes > 360:
            return httpx.Response(504)
        return None

    (result,) = reconcile(settings, engine, Provider(sim, slow_for_big_windows))
    assert result.error is None
    assert set(messages(engine)) == set(ids)
    assert result.tally.windows == 4  # four answered quarters of the day


XML = b'<?xml version="1.0" encoding="utf-8"?>'
BAD_ANSWERS: dict[str, Handler] = {
    "error document": lambda r: httpx.Response(
        200, content=XML + "<response><error>Внутренняя ошибка</error></response>".encode()
    ),
    "malformed XML": lambda r: httpx.Response(200, content=XML + b"<response><stats"),
    "HTTP 503": lambda r: httpx.Response(503),
    "timeout": lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)),
}


@pytest.mark.parametrize("kind", BAD_ANSWERS)
def test_a_provider_that_never_answers_ends_the_day_with_an_error(
    settings: Settings, engine: Engine, sim: SimulatorState, kind: str
) -> None:
    sent(sim, "10:00:00")
    transport = Provider(sim, BAD_ANSWERS[kind])
    results = reconcile(settings, engine, transport, [DAY, DAY + timedelta(days=1)])
    assert [bool(result.error) for result in results] == [True, True]
    assert "stats.php" in (results[0].error or "")
    # Halving 1,440 minutes down to one: 11 windows, at most 2 attempts each.
    assert transport.requests <= 2 * 2 * 11
    found = rows(engine, "SELECT status, error FROM reconciliation_reports ORDER BY day")
    assert [status for status, _ in found] == ["failed", "failed"]
    assert all(error and PASSWORD not in str(error) for _, error in found)
    assert messages(engine) == {}


def test_wrong_login_ends_the_run_with_a_report_and_raises(
    settings: Settings, engine: Engine
) -> None:
    other = SimulatorState(LOGIN, "another-password")
    with pytest.raises(AuthenticationFailed):
        reconcile(settings, engine, Provider(other), [DAY, DAY + timedelta(days=1)])
    found = rows(engine, "SELECT status, error FROM reconciliation_reports")
    assert found == [("failed", "stats.php refused our credentials: Неправильный логин или пароль")]


def test_day_windows_tile_the_day() -> None:
    windows = day_windows(DAY, 500)
    assert [str(w) for w in windows] == [
        "2026-11-20 00:00..08:19",
        "2026-11-20 08:20..16:39",
        "2026-11-20 16:40..23:59",
    ]
    assert sum(w.minutes for w in windows) == 1440
    assert [
        w.minutes for w in Window(datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 2)).halves()
    ] == [
        1,
        2,
    ]


def test_an_abandoned_lease_is_taken_over(settings: Settings, engine: Engine) -> None:
    now = datetime.now(UTC)
    first = claim_day(engine, DAY, "dead", now)
    assert first is not None
    assert claim_day(engine, DAY, "alive", now + LEASE / 2) is None  # still held
    second = claim_day(engine, DAY, "alive", now + LEASE * 2)
    assert second is not None and second != first
    found = rows(engine, "SELECT owner, status, error FROM reconciliation_reports ORDER BY id")
    assert found == [
        ("dead", "failed", "abandoned: its lease ran out"),
        ("alive", "running", None),
    ]


def test_two_reconcilers_never_work_on_one_day_at_once(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    for hour in range(0, 24, 2):
        sent(sim, f"{hour:02d}:00:00", 3)
    sim.stats_limit = 10  # several windows per run: each run takes a while

    def slow(_request: httpx.Request) -> None:
        threading.Event().wait(0.01)

    start = threading.Barrier(2)
    results: dict[str, list[DayResult]] = {"A": [], "B": []}

    def reconciler(owner: str) -> None:
        start.wait()
        for _ in range(6):
            results[owner] += reconcile(settings, engine, Provider(sim, slow), owner=owner)

    threads = [threading.Thread(target=reconciler, args=(owner,)) for owner in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with engine.connect() as conn:
        runs = conn.execute(select(ReconciliationReport)).all()
    done = [result for owner in results for result in results[owner] if not result.skipped]
    skipped = [result for owner in results for result in results[owner] if result.skipped]
    assert len(done) == len(runs) and len(done) + len(skipped) == 12
    assert skipped, "the two never met: no contention was tested"
    assert all(run.status == "done" for run in runs)
    spans = sorted((run.started_at, run.finished_at) for run in runs)
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert end <= begin, f"two runs overlapped: {spans}"


def test_context_is_written_again_only_when_it_changed(
    settings: Settings, engine: Engine, sim: SimulatorState
) -> None:
    same, renamed = sent(sim, "07:00:00", 2)
    reconcile(settings, engine, Provider(sim))
    before = dict(rows(engine, "SELECT id_sms, updated_at FROM message_context"))
    sim.describe(renamed, originator="RENAMED")
    reconcile(settings, engine, Provider(sim))
    after = dict(rows(engine, "SELECT id_sms, updated_at FROM message_context"))
    assert after[same] == before[same]
    assert after[renamed] != before[renamed]
    assert rows(engine, "SELECT originator FROM message_context ORDER BY id_sms") == [
        ("SHOP",),
        ("RENAMED",),
    ]
