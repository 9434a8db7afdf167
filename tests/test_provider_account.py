"""time.php and balance.php: the client against the simulator and httpx.MockTransport."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from app.provider import (
    AuthenticationFailed,
    Balance,
    MalformedRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    SmsLeft,
    TargetSMSClient,
)
from app.simulator import SimulatorServer, SimulatorState

pytestmark = pytest.mark.anyio

LOGIN, PASSWORD = "acct-login", "acct-pw-9f3k"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    state = SimulatorState(LOGIN, PASSWORD, zone="Asia/Novosibirsk", balance="10")
    with SimulatorServer(state) as server:
        yield server


def client(api_url: str, password: str = PASSWORD, **extra: object) -> TargetSMSClient:
    options: dict[str, object] = {"timeout": 5.0, "retries": 1, "backoff_base": 0.001}
    options |= {"backoff_cap": 0.002} | extra
    return TargetSMSClient(api_url, LOGIN, SecretStr(password), **options)  # type: ignore[arg-type]


def answering(body: bytes, status: int = 200) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body))


async def test_time_is_the_accounts_wall_clock(sim: SimulatorServer) -> None:
    async with client(sim.api_url) as provider:
        answer = await provider.account_time()
    assert isinstance(answer, datetime)
    novosibirsk = datetime.now(ZoneInfo("Asia/Novosibirsk")).replace(tzinfo=None)
    assert abs((answer - novosibirsk).total_seconds()) < 5


async def test_balance_decreases_by_parts_times_price(sim: SimulatorServer) -> None:
    async with client(sim.api_url) as provider:
        before = await provider.balance()
        sim.state.create(2, num_parts=2, price="1.5")  # 6.00 spent
        after = await provider.balance()
    assert before == Balance(Decimal("10"), "RUR", (SmsLeft("Россия", 8), SmsLeft("Украина", 4)))
    assert after.money == Decimal("4.0")
    assert after.sms == (SmsLeft("Россия", 3), SmsLeft("Украина", 1))


async def test_the_manuals_answers_are_read() -> None:
    bare = b"<?xml version='1.0' encoding='utf-8'?><response><time>15:34:05</time></response>"
    async with client("http://p.test/xml/", transport=answering(bare)) as provider:
        assert await provider.account_time() == time(15, 34, 5)
    example = (
        "<response><money>8</money><sms area='Россия'>8</sms><sms area='Украина'>4</sms>"
        "<sms area=''>3</sms><sms area='X'>many</sms></response>"
    ).encode()
    async with client("http://p.test/xml/", transport=answering(example)) as provider:
        assert await provider.balance() == Balance(
            Decimal("8"), None, (SmsLeft("Россия", 8), SmsLeft("Украина", 4))
        )


async def test_a_decimal_comma_is_read_as_a_point() -> None:
    body = b"<response><money>150,25</money></response>"
    async with client("http://p.test/xml/", transport=answering(body)) as provider:
        assert (await provider.balance()).money == Decimal("150.25")


@pytest.mark.parametrize(
    "body",
    [
        b"<response></response>",
        b"<response><time>yesterday</time></response>",
        b"<response><time>2026-02-31 10:00:00</time></response>",
        b"<response><time>2026-01-01 25:00:00</time></response>",
        b"<html>maintenance",
    ],
)
async def test_unreadable_time_is_a_protocol_error(body: bytes) -> None:
    async with client("http://p.test/xml/", transport=answering(body)) as provider:
        with pytest.raises(ProviderProtocolError, match=r"time\.php"):
            await provider.account_time()


@pytest.mark.parametrize(
    "body",
    [b"<response></response>", b"<response><money>1e9</money></response>", b"<oops"],
)
async def test_unreadable_balance_is_a_protocol_error(body: bytes) -> None:
    async with client("http://p.test/xml/", transport=answering(body)) as provider:
        with pytest.raises(ProviderProtocolError, match=r"balance\.php"):
            await provider.balance()


async def test_refusals_and_timeouts_are_the_clients_errors(sim: SimulatorServer) -> None:
    async with client(sim.api_url, password="wrong") as provider:
        with pytest.raises(AuthenticationFailed):
            await provider.account_time()
        with pytest.raises(AuthenticationFailed):
            await provider.balance()
    refused = "<response><error>Неправильный формат XML документа</error></response>".encode()
    async with client("http://p.test/xml/", transport=answering(refused)) as provider:
        with pytest.raises(MalformedRequest):
            await provider.balance()

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with client("http://p.test/xml/", transport=httpx.MockTransport(slow)) as provider:
        with pytest.raises(ProviderUnavailable, match=r"time\.php: ReadTimeout"):
            await provider.account_time()


async def test_the_request_is_just_security() -> None:
    seen: list[bytes] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, content=b"<response><time>10:00:00</time></response>")

    async with client("http://p.test/xml/", transport=httpx.MockTransport(record)) as provider:
        await provider.account_time()
    assert seen == [
        (
            '<?xml version="1.0" encoding="utf-8"?><request><security>'
            f'<login value="{LOGIN}"/><password value="{PASSWORD}"/></security></request>'
        ).encode()
    ]
