"""`GET /api/v1/stats`, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import Engine

from app.config import Settings
from tests.api_helpers import READ, get, push, store, track

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_stats_of_an_empty_database(client: httpx.Client) -> None:
    assert get(client, "/api/v1/stats") == {
        "since": None,
        "until": None,
        "messages": 0,
        "by_status": {},
        "final": 0,
        "delivered": 0,
        "delivery_rate": None,
        "duplicates": 0,
        "conflicts": 0,
    }


def test_stats_count_statuses_rate_duplicates_and_conflicts(client: httpx.Client) -> None:
    push(client, ("1", "deliver", "2024-03-01 12:00:00"), ("2", "deliver", "2024-03-01 12:00:00"))
    push(client, ("3", "not_deliver", "2024-03-01 12:00:00"), ("4", "send", ""))
    push(client, ("1", "deliver", "2024-03-01 12:00:00"), ("4", "send", ""))  # 2 duplicates
    push(client, ("2", "expired", "2024-03-01 12:05:00"))  # a conflict

    stats = get(client, "/api/v1/stats")

    assert stats["messages"] == 4
    assert stats["by_status"] == {"deliver": 2, "not_deliver": 1, "send": 1}
    assert (stats["final"], stats["delivered"], stats["delivery_rate"]) == (3, 2, 0.6667)
    assert (stats["duplicates"], stats["conflicts"]) == (2, 1)


def test_stats_over_a_time_range(client: httpx.Client, engine: Engine, settings: Settings) -> None:
    store(engine, settings, [("1", "deliver", "2024-03-01 12:00:00")], now=T0, body=b"<r/>")
    store(engine, settings, [("1", "deliver", "2024-03-01 12:00:00")], now=T0, body=b"<r/>")
    store(engine, settings, [("2", "send", "")], now=T0 + HOUR, body=b"<r/>")
    store(engine, settings, [("2", "send", "")], now=T0 + 2 * HOUR, body=b"<r/>")
    store(engine, settings, [("3", "expired", "2024-03-01 12:00:00")], now=T0 + 2 * HOUR)
    store(engine, settings, [("3", "deliver", "2024-03-01 12:00:00")], now=T0 + 3 * HOUR)
    track(engine, "4", T0 + 3 * HOUR)

    def stats(**bounds: datetime) -> dict[str, object]:
        return get(client, "/api/v1/stats", **{k: v.isoformat() for k, v in bounds.items()})

    everything = stats()
    assert everything["by_status"] == {"deliver": 1, "expired": 1, "send": 1, "tracked": 1}
    assert (everything["duplicates"], everything["conflicts"]) == (2, 1)

    first_hours = stats(since=T0, until=T0 + 2 * HOUR)
    assert first_hours["since"] == "2024-03-01T12:00:00Z"
    # A duplicate changes nothing: message 2 was last updated at T0 + 1 h.
    assert first_hours["by_status"] == {"deliver": 1, "send": 1}
    assert (first_hours["final"], first_hours["delivery_rate"]) == (1, 1.0)
    assert (first_hours["duplicates"], first_hours["conflicts"]) == (1, 0)

    later = stats(since=T0 + 2 * HOUR)
    assert later["by_status"] == {"expired": 1, "tracked": 1}  # the conflict updated 3
    assert (later["final"], later["delivered"], later["delivery_rate"]) == (1, 0, 0.0)
    assert (later["duplicates"], later["conflicts"]) == (1, 1)
    assert later["until"] is None

    in_moscow = stats(until=(T0 + HOUR).astimezone(settings.zone))
    assert in_moscow["until"] == "2024-03-01T13:00:00Z"
    assert in_moscow["messages"] == 1


def test_bad_stats_parameters_are_422(client: httpx.Client) -> None:
    for params in ({"since": "yesterday"}, {"until": "2024-03-01T12:00:00"}):
        response = client.get("/api/v1/stats", params=params, headers=READ)
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_parameters"
