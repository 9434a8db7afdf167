"""Every provider `time` string is either converted or stored as unknown: no
year, field value or zone makes a state (or its document) fail (issue 9, item 1).

Property-based over the whole space of times: years 1 to 9999, each field at
and past its bounds, and every zone the tz database has.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from zoneinfo import ZoneInfo, available_timezones

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.poller import incoming_state
from app.protocol import IncomingState, parse_document
from app.provider import TargetSMSClient

SPECIAL_ZONES = [
    "UTC",
    "Europe/Moscow",
    "Pacific/Kiritimati",
    "Etc/GMT+12",
    "Etc/GMT-14",
    "America/Los_Angeles",
]
ZONES = sorted(available_timezones() | set(SPECIAL_ZONES))


def two_digits(low: int, high: int) -> st.SearchStrategy[int]:
    # The field's valid range, its bounds, and what lies past them (00..99).
    return st.one_of(st.integers(low, high), st.sampled_from([0, low, high, high + 1, 99]))


@st.composite
def provider_times(draw: st.DrawFn) -> str:
    year = draw(st.one_of(st.integers(1, 9999), st.sampled_from([1, 2, 9998, 9999, 0])))
    fields = (
        draw(two_digits(1, 12)),
        draw(two_digits(1, 31)),
        draw(two_digits(0, 23)),
        draw(two_digits(0, 59)),
        draw(two_digits(0, 59)),
    )
    month, day, hour, minute, second = fields
    return f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"


zones = st.one_of(st.sampled_from(SPECIAL_ZONES), st.sampled_from(ZONES)).map(ZoneInfo)
EDGES = [
    ("0001-01-01 00:00:00", "Europe/Moscow"),
    ("0001-01-01 00:00:00", "Pacific/Kiritimati"),
    ("9999-12-31 23:59:59", "Europe/Moscow"),
    ("9999-12-31 23:59:59", "Etc/GMT+12"),
    ("9999-12-31 23:59:59", "America/Los_Angeles"),
]


def with_edges(test):  # type: ignore[no-untyped-def]
    for raw, zone in EDGES:
        test = example(raw, ZoneInfo(zone))(test)
    return test


def check(state: IncomingState | None, raw: str) -> None:
    assert state is not None
    assert state.time_raw == raw  # kept whole
    assert state.status_at is None or state.status_at.tzinfo is UTC


@settings(max_examples=2500, deadline=None)
@with_edges
@given(provider_times(), zones)
def test_any_time_in_a_callback_keeps_every_valid_state(raw: str, zone: ZoneInfo) -> None:
    body = (
        f'<request><state id_sms="1" time="{raw}">deliver</state>'
        '<state id_sms="2" time="2026-11-20 12:00:00">deliver</state></request>'
    ).encode()
    document = parse_document(body, zone, 100)
    assert [s.id_sms for s in document.states] == ["1", "2"]
    assert document.skipped == 0
    check(document.states[0], raw)


def state_php_answer(raw: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><response>'
        f'<state id_sms="1" time="{raw}" num_parts="1" price="1.5">deliver</state>'
        '<state id_sms="2" time="2026-11-20 12:00:00">send</state></response>'
    ).encode()


@settings(max_examples=1000, deadline=None)
@with_edges
@given(provider_times(), zones)
def test_any_time_in_a_poll_answer_keeps_every_valid_state(raw: str, zone: ZoneInfo) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=state_php_answer(raw)))

    async def fetch() -> list[IncomingState | None]:
        async with TargetSMSClient(
            "http://provider.invalid/xml/",
            "login",
            SecretStr("pw"),
            timeout=1.0,
            retries=0,
            transport=transport,
        ) as client:
            polled = await client.fetch_states(["1", "2"])
        return [incoming_state(p, zone) for p in polled]

    states = asyncio.run(fetch())
    assert [s.id_sms if s else None for s in states] == ["1", "2"]
    check(states[0], raw)
