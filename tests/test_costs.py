"""`GET /api/v1/costs` (JSON and CSV) and `GET /api/v1/reconciliations`, on both databases."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import Engine, insert

from app.config import Settings
from app.costs import costs as costs_of
from app.costs import total, totals_since
from app.db import write_transaction
from app.ingest import Submission
from app.models import MessageContext
from app.protocol import IncomingState
from app.simulator import SimulatorState
from app.store import store_batch
from tests.api_helpers import READ
from tests.reconcile_helpers import DAY, Provider, reconcile, sent
from tests.sim_helpers import LOGIN, PASSWORD

NEXT = DAY + timedelta(days=1)


@pytest.fixture
def sim() -> SimulatorState:
    return SimulatorState(LOGIN, PASSWORD)


def costs(client: httpx.Client, **params: str) -> dict[str, object]:
    response = client.get("/api/v1/costs", params=params, headers=READ)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, object] = response.json()
    return body


def test_many_small_prices_add_up_exactly(
    settings: Settings, engine: Engine, client: httpx.Client, sim: SimulatorState
) -> None:
    sent(sim, "10:00:00", 10, num_parts=3, price="0.1")
    reconcile(settings, engine, Provider(sim))
    assert sum([0.1] * 30) != 3.0  # what floats would have made of it
    body = costs(client, since=str(DAY), until=str(DAY))
    assert body["groups"] == [
        {"key": str(DAY), "messages": 10, "parts": 30, "money": "3.0", "unpriced_messages": 0}
    ]
    assert body["total"] == {
        "key": None,
        "messages": 10,
        "parts": 30,
        "money": "3.0",
        "unpriced_messages": 0,
    }


def poll_answer(engine: Engine, id_sms: str, at: datetime, parts: int, price: str | None) -> None:
    state = IncomingState(id_sms, "deliver", "2026-11-20 12:00:00", at, parts, price)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state], "poll", at)], at)


def test_groups_by_day_sender_and_status_with_state_php_prices_too(
    settings: Settings, engine: Engine, client: httpx.Client, sim: SimulatorState
) -> None:
    shop = sent(sim, "09:00:00", 2, num_parts=2, price="1.05")
    sent(sim, "23:59:00", 1, originator="BANK", price="2.50")
    sent(sim, f"{NEXT} 00:00:30", 1, originator="BANK", price="2.50")  # Moscow's next day
    sim.advance(shop[0], "deliver", f"{DAY} 09:00:10")
    reconcile(settings, engine, Provider(sim), [DAY, NEXT])
    # Two messages only state.php priced (1.15 a part), and one with no price at all.
    noon = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    poll_answer(engine, "900001", noon, 2, "1.15")
    poll_answer(engine, "900002", noon, 1, "1.15")
    poll_answer(engine, "900003", noon, 1, None)

    by_day = costs(client, since=str(DAY), until=str(NEXT))["groups"]
    assert by_day == [
        {"key": str(DAY), "messages": 6, "parts": 9, "money": "10.15", "unpriced_messages": 1},
        {"key": str(NEXT), "messages": 1, "parts": 1, "money": "2.50", "unpriced_messages": 0},
    ]
    assert Decimal("1.05") * 4 + Decimal("2.50") + Decimal("1.15") * 3 == Decimal("10.15")
    by_sender = costs(client, since=str(DAY), until=str(NEXT), group_by="originator")["groups"]
    assert [(g["key"], g["money"]) for g in by_sender] == [  # type: ignore[index]
        ("BANK", "5.00"),
        ("SHOP", "4.20"),
        (None, "3.45"),  # no statistics: no sender known
    ]
    by_status = costs(client, since=str(DAY), until=str(DAY), group_by="status")["groups"]
    assert [(g["key"], g["messages"]) for g in by_status] == [  # type: ignore[index]
        ("deliver", 4),
        ("send", 2),
    ]
    assert costs(client, since=str(NEXT + timedelta(days=1)))["groups"] == []


def test_csv_for_spreadsheets(
    settings: Settings, engine: Engine, client: httpx.Client, sim: SimulatorState
) -> None:
    sent(sim, "09:00:00", 2, originator="МАГАЗИН", price="0.95")
    sent(sim, "10:00:00", 1, originator="=HYPERLINK(1)", price="1")
    reconcile(settings, engine, Provider(sim))
    params = {"since": str(DAY), "until": str(DAY), "group_by": "originator"}
    by_param = client.get("/api/v1/costs", params=params | {"format": "csv"}, headers=READ)
    by_accept = client.get("/api/v1/costs", params=params, headers=READ | {"Accept": "text/csv"})
    for response in (by_param, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert "attachment" in response.headers["content-disposition"]
        assert response.content.startswith("\ufeff".encode())
    assert by_param.content == by_accept.content
    table = list(csv.reader(io.StringIO(by_param.content.decode("utf-8-sig"))))
    assert table == [
        ["originator", "messages", "parts", "money", "unpriced_messages"],
        ["'=HYPERLINK(1)", "1", "1", "1", "0"],  # never a formula in a spreadsheet
        ["МАГАЗИН", "2", "2", "1.90", "0"],
    ]
    json_wins = client.get("/api/v1/costs", params=params | {"format": "json"}, headers=READ)
    assert json_wins.json()["total"]["money"] == "2.90"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"since": "2026-11-21", "until": "2026-11-20"}, "invalid_range"),
        ({"since": "2020-01-01", "until": "2026-11-20"}, "invalid_range"),
        ({"since": "yesterday"}, "invalid_parameters"),
        ({"group_by": "operator"}, "invalid_parameters"),
        ({"format": "xlsx"}, "invalid_parameters"),
    ],
)
def test_bad_parameters_get_json_errors(
    client: httpx.Client, params: dict[str, str], error: str
) -> None:
    response = client.get("/api/v1/costs", params=params, headers=READ)
    assert response.status_code == 422
    assert response.json()["error"] == error


def test_keys_are_required(client: httpx.Client) -> None:
    for path in ("/api/v1/costs", "/api/v1/reconciliations"):
        response = client.get(path)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_reconciliation_reports(
    settings: Settings, engine: Engine, client: httpx.Client, sim: SimulatorState
) -> None:
    sent(sim, "09:00:00", 3)
    reconcile(settings, engine, Provider(sim), [DAY, NEXT])
    response = client.get("/api/v1/reconciliations", headers=READ)
    assert response.status_code == 200
    found = response.json()["reconciliations"]
    assert [(r["day"], r["status"], r["added"], r["messages"]) for r in found] == [
        (str(NEXT), "done", 0, 0),
        (str(DAY), "done", 3, 3),
    ]
    assert found[1]["provider_counts"] == {"send": 3}
    assert found[1]["our_counts"] == {"not_held": 3}
    assert found[1]["error"] is None and "lease_until" not in found[1]
    only = client.get(
        "/api/v1/reconciliations", params={"since": str(DAY), "until": str(DAY)}, headers=READ
    )
    assert [r["day"] for r in only.json()["reconciliations"]] == [str(DAY)]
    one = client.get("/api/v1/reconciliations", params={"limit": 1}, headers=READ)
    assert [r["day"] for r in one.json()["reconciliations"]] == [str(NEXT)]
    bad = client.get("/api/v1/reconciliations", params={"limit": 0}, headers=READ)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_parameters"


def answer(engine: Engine, id_sms: str, status: str, at: datetime, parts: int, price: str) -> None:
    state = IncomingState(id_sms, status, at.strftime("%Y-%m-%d %H:%M:%S"), at, parts, price)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state], "poll", at)], at)


def test_the_overview_periods_from_one_read_equal_three_cost_queries(
    settings: Settings, engine: Engine
) -> None:
    zone, now = settings.zone, datetime.now(UTC)
    statuses = ("deliver", "not_deliver", "expired", "send")
    for n, back in enumerate((0, 0, 1, 3, 6, 6.5, 7, 12, 29, 29.9, 31, 45)):
        at = now - timedelta(days=back)
        answer(engine, f"80{n}", statuses[n % 4], at, 1 + n % 3, ("0.1", "1.15", "2.333")[n % 3])
    answer(engine, "899", "deliver", now - timedelta(days=2), 2, "not a price")  # unpriced
    # Statistics' exact costs win over state.php's price, on a day of their own.
    with write_transaction(engine) as conn:
        for id_sms, back, cost in (("801", 4, "0.0001"), ("807", 20, "7.77"), ("808", 40, "1")):
            sent_at = now - timedelta(days=back)
            conn.execute(
                insert(MessageContext),
                {"id_sms": id_sms, "sent_at": sent_at, "num_parts": 5, "cost": cost}
                | {"updated_at": sent_at, "sent_time_raw": "x"},
            )
    today = now.astimezone(zone).date()
    sinces = [today, today - timedelta(days=6), today - timedelta(days=29)]
    with engine.connect() as conn:
        one_read = totals_since(conn, sinces, today, zone)
        three = [total(costs_of(conn, since, today, "day", zone)) for since in sinces]
    assert one_read == three  # Decimal money compared exactly
    assert 0 < three[0].messages < three[1].messages < three[2].messages
    assert three[2].unpriced_messages == 1
    assert all(isinstance(line.money, Decimal) for line in one_read)
