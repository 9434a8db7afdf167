"""stats.php: the client's request and parsing, and the simulator's answers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import defusedxml.ElementTree as SafeET
import httpx
import pytest
from pydantic import SecretStr

from app.provider import (
    AuthenticationFailed,
    BadDate,
    ProviderProtocolError,
    ProviderRejected,
    TargetSMSClient,
    stats_request,
)
from app.simulator import TOO_MANY_ROWS, SimulatorServer, SimulatorState

pytestmark = pytest.mark.anyio

LOGIN, PASSWORD = "stats-login", "pw-stats-Xq9-never-logged"
DAY = datetime(2026, 11, 20)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


def client_for(api_url: str, password: str = PASSWORD, **options: object) -> TargetSMSClient:
    return TargetSMSClient(
        api_url, LOGIN, SecretStr(password), timeout=5.0, backoff_base=0.001, **options
    )  # type: ignore[arg-type]


def sent(state: SimulatorState, when: str, *, parts: int = 1, price: str = "1.15") -> str:
    (id_sms,) = state.create(1, num_parts=parts, price=price)
    state.describe(id_sms, time=when, originator="SHOP", text="Hello there")
    return id_sms


def test_request_carries_minute_precision_bounds() -> None:
    element = SafeET.fromstring(stats_request(DAY.replace(hour=9, minute=5), DAY.replace(hour=17)))
    assert element.attrib == {
        "date_start": "2026-11-20",
        "date_stop": "2026-11-20",
        "state": "",
        "originator": "",
        "phone": "",
        "operator": "",
        "from_hour": "09",
        "from_minute": "05",
        "to_hour": "17",
        "to_minute": "00",
    }
    with pytest.raises(ValueError, match="before"):
        stats_request(DAY.replace(hour=1), DAY)


async def test_rows_per_part_from_the_simulator(sim: SimulatorServer) -> None:
    two = sent(sim.state, "2026-11-20 10:00:05", parts=2, price="0.95")
    sim.state.advance(two, "deliver", "2026-11-20 10:00:40")
    one = sent(sim.state, "2026-11-20 11:30:00")
    sent(sim.state, "2026-11-21 00:00:00")  # the next day: outside
    async with client_for(sim.api_url) as client:
        answer = await client.stats(DAY, DAY.replace(hour=23, minute=59))
    assert not answer.truncated and answer.skipped == 0
    assert [(r.id_sms, r.part_no, r.num_parts) for r in answer.rows] == [
        (two, 1, 2),
        (two, 2, 2),
        (one, 1, 1),
    ]
    first = answer.rows[0]
    assert (first.status, first.time_change_state, first.time) == (
        "deliver",
        "2026-11-20 10:00:40",
        "2026-11-20 10:00:05",
    )
    assert (first.price, first.originator, first.operator) == ("0.95", "SHOP", "Beeline")
    assert first.phone.endswith("****") and first.text + answer.rows[1].text == "Hello there"
    assert answer.rows[2].status == "send" and answer.rows[2].time_change_state == ""


async def test_window_bounds_are_inclusive_minutes(sim: SimulatorServer) -> None:
    inside = [sent(sim.state, t) for t in ("2026-11-20 10:00:00", "2026-11-20 10:29:59")]
    sent(sim.state, "2026-11-20 10:30:00")
    sent(sim.state, "2026-11-20 09:59:59")
    async with client_for(sim.api_url) as client:
        answer = await client.stats(DAY.replace(hour=10), DAY.replace(hour=10, minute=29))
    assert [r.id_sms for r in answer.rows] == inside
    assert sim.state.stats_requests == [("2026-11-20 10:00:00", "2026-11-20 10:29:59")]


async def test_too_big_an_answer_is_the_providers_error(sim: SimulatorServer) -> None:
    for _ in range(3):
        sent(sim.state, "2026-11-20 10:00:00")
    sim.state.stats_limit = 2
    async with client_for(sim.api_url) as client:
        with pytest.raises(ProviderRejected) as refused:
            await client.stats(DAY, DAY.replace(hour=23))
    assert refused.value.text == TOO_MANY_ROWS


async def test_wrong_password(sim: SimulatorServer) -> None:
    async with client_for(sim.api_url, password="wrong") as client:
        with pytest.raises(AuthenticationFailed):
            await client.stats(DAY, DAY)


def _answer(body: str) -> httpx.MockTransport:
    document = f'<?xml version="1.0" encoding="utf-8"?>{body}'.encode()
    return httpx.MockTransport(lambda request: httpx.Response(200, content=document))


async def test_bad_date_is_its_own_error() -> None:
    transport = _answer("<response><error>Некорректный формат даты</error></response>")
    async with client_for("http://provider.test/xml/", transport=transport) as client:
        with pytest.raises(BadDate):
            await client.stats(DAY, DAY)


@pytest.mark.parametrize("body", ["<response></response>", "<response><stats>", "<other/>"])
async def test_unreadable_answers_are_protocol_errors(body: str) -> None:
    async with client_for("http://provider.test/xml/", transport=_answer(body)) as client:
        with pytest.raises(ProviderProtocolError):
            await client.stats(DAY, DAY)


async def test_invalid_rows_are_skipped_and_a_short_answer_is_noticed() -> None:
    body = (
        '<response><stats num_stats="4">'
        '<stat id_sms="12" status="deliver" price="1.5" part_no="1" num_parts="1"/>'
        '<stat id_sms="１２" status="deliver"/>'
        '<stat id_sms="13" status=""/>'
        '<stat id_sms="14" status="expired" price="abc" part_no="x"/>'
        "</stats></response>"
    )
    async with client_for("http://provider.test/xml/", transport=_answer(body)) as client:
        answer = await client.stats(DAY, DAY)
    assert [(r.id_sms, r.price, r.part_no) for r in answer.rows] == [
        ("12", "1.5", 1),
        ("14", None, None),
    ]
    assert answer.skipped == 2 and not answer.truncated
    short = body.replace('num_stats="4"', 'num_stats="5"')
    async with client_for("http://provider.test/xml/", transport=_answer(short)) as client:
        assert (await client.stats(DAY, DAY)).truncated


def test_simulator_control_api_creates_unpushed_messages_with_their_record(
    sim: SimulatorServer,
) -> None:
    created = httpx.post(
        f"{sim.url}/sim/messages",
        json={"count": 2, "push": False, "time": "2026-11-20 08:30:00", "originator": "BANK"},
    )
    assert created.status_code == 200
    ids = created.json()["ids"]
    sim.state.callback_url = "http://127.0.0.1:9/nowhere"
    sim.state.advance(ids[0], "deliver")
    assert [lost.id_sms for lost in sim.state.lost] == [ids[0]]  # never pushed
    rows = sim.state.stat_rows("2026-11-20 08:30:00", "2026-11-20 08:30:59")
    assert [(r["id_sms"], r["originator"], r["status"]) for r in rows] == [
        (ids[0], "BANK", "deliver"),
        (ids[1], "BANK", "send"),
    ]


@pytest.mark.parametrize(
    "fields",
    [
        'date_start="2026-13-01"',
        'date_start="20.11.2026"',
        'from_hour="24"',
        'to_minute="x"',
    ],
)
def test_simulator_refuses_bad_dates_like_the_provider(sim: SimulatorServer, fields: str) -> None:
    body = (
        f'<request><security><login value="{LOGIN}"/><password value="{PASSWORD}"/></security>'
        f"<stats {fields}/></request>"
    )
    answer = httpx.post(f"{sim.api_url}stats.php", content=body.encode())
    assert answer.status_code == 200
    assert "<error>Некорректный формат даты</error>" in answer.text
