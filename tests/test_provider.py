"""The provider client against the simulator and small local servers, over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.provider import (
    AccountBlocked,
    AuthenticationFailed,
    MalformedRequest,
    NoPostData,
    PolledState,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
    TargetSMSClient,
)
from app.simulator import ServerThread, SimulatorServer, SimulatorState

pytestmark = pytest.mark.anyio

LOGIN = "demo-login"
SECRET_MARK = "hunter2zq"
PASSWORD = SECRET_MARK + '<&"x'
PROLOG = b'<?xml version="1.0" encoding="utf-8"?>'
PATHS = ("security/login", "security/password", "get_state")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


def make_client(api_url: str, password: str = PASSWORD, **options: object) -> TargetSMSClient:
    settings: dict[str, object] = {"timeout": 5.0, "backoff_base": 0.001, "backoff_cap": 0.005}
    settings.update(options)
    return TargetSMSClient(api_url, LOGIN, SecretStr(password), **settings)  # type: ignore[arg-type]


def error_doc(text: str) -> bytes:
    return PROLOG + f"<response><error>{text}</error></response>".encode()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Scripted:
    """A local provider that records raw requests and plays back (status, body) answers."""

    def __init__(self, *answers: tuple[int, bytes], delay: float = 0.0) -> None:
        self.answers, self.delay = answers, delay
        self.seen: list[Seen] = []
        routes = [Route("/xml/{endpoint}", self.endpoint, methods=["POST"])]
        self.server = ServerThread(Starlette(routes=routes))

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append(Seen(request.method, request.url.path, dict(request.headers), body))
        await asyncio.sleep(self.delay)
        status, content = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return Response(content, status_code=status, media_type="text/xml")

    def __enter__(self) -> Scripted:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()

    @property
    def api_url(self) -> str:
        return f"{self.server.url}/xml/"


class Tamper(httpx.AsyncBaseTransport):
    """Replaces the request body before it goes out over real HTTP."""

    def __init__(self, body: bytes) -> None:
        self.body, self.inner = body, httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
        tampered = httpx.Request(request.method, request.url, headers=headers, content=self.body)
        return await self.inner.handle_async_request(tampered)

    async def aclose(self) -> None:
        await self.inner.aclose()


def mock(*answers: tuple[int, bytes]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status, content = answers[min(len(calls), len(answers)) - 1]
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handler), calls


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET_MARK not in text


def assert_exception_clean(exc: BaseException) -> None:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        assert_no_secret(str(item), repr(item), repr(item.args), repr(vars(item)))
        for value in vars(item).values():
            assert not isinstance(value, httpx.Request | httpx.Response)
    assert_no_secret("".join(traceback.format_exception(exc)))
    # What a crash reporter would record: the locals of our own frames.
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename.endswith("app/provider.py"):
            for value in frame.f_locals.values():
                assert_no_secret(repr(value))
                assert not isinstance(value, httpx.Request | httpx.Response)


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    assert_no_secret(caplog.text)
    for record in caplog.records:
        assert_no_secret(record.getMessage(), repr(record.args))


# --- Every call against the simulator ---------------------------------------------


async def test_callback_url_round_trip(sim: SimulatorServer) -> None:
    async with make_client(sim.api_url) as client:
        assert await client.get_callback_url() == ""
        url = "https://receiver.example/callbacks/targetsms/abc?x=1&y=2"
        assert await client.set_callback_url(url) == url
        assert await client.get_callback_url() == url
    assert sim.state.callback_url == url


async def test_fetch_states(sim: SimulatorServer) -> None:
    sim.state.register("1001")
    sim.state.register("1002", num_parts=3, price="2.5")
    sim.state.register("1003")
    sim.state.advance("1002", "deliver", time="2020-01-01 12:57:46")
    sim.state.advance("1003", "expired")
    async with make_client(sim.api_url) as client:
        states = await client.fetch_states(["1001", "1002", "999999", "1003"])
    assert [s.id_sms for s in states] == ["1001", "1002", "1003"]
    assert states[0] == PolledState("1001", "send", "", 1, "1.15")
    assert states[1] == PolledState("1002", "deliver", "2020-01-01 12:57:46", 3, "2.5")
    assert states[2].status == "expired" and len(states[2].time_raw) == 19


async def test_fetch_states_without_ids_sends_nothing() -> None:
    transport, calls = mock((200, b"<response/>"))
    async with make_client("http://provider.test/xml/", transport=transport) as client:
        assert await client.fetch_states([]) == []
    assert calls == []


@pytest.mark.parametrize("bad", ["１２", "+1", "1_2", " 12", "", "1" * 20, "12\n"])
async def test_fetch_states_refuses_ids_that_are_not_ascii_digits(bad: str) -> None:
    transport, calls = mock((200, b"<response/>"))
    async with make_client("http://provider.test/xml/", transport=transport) as client:
        with pytest.raises(ValueError, match="not an id_sms"):
            await client.fetch_states(["1", bad])
    assert calls == []


async def test_fetch_states_skips_invalid_entries() -> None:
    answer = (
        '<response><state id_sms="１２" time="">send</state><state id_sms="+1">send</state>'
        '<state id_sms="1_2">send</state><state time="">send</state><state id_sms="7"></state>'
        '<state id_sms="8" time="2020-01-01 12:57:46" num_parts="２" price="1,15">deliver</state>'
        '<state id_sms="9" num_parts="-1" price="1.1234567">expired</state>'
        '<state id_sms="10" num_parts="4" price="0.5">not_deliver</state></response>'
    )
    transport, _ = mock((200, answer.encode()))
    async with make_client("http://provider.test/xml/", transport=transport) as client:
        states = await client.fetch_states(["8", "9", "10"])
    assert states == [
        PolledState("8", "deliver", "2020-01-01 12:57:46", None, None),
        PolledState("9", "expired", "", None, None),
        PolledState("10", "not_deliver", "", 4, "0.5"),
    ]


async def test_api_url_without_trailing_slash_still_joins() -> None:
    transport, calls = mock((200, b"<response><get_state>u</get_state></response>"))
    async with make_client("http://provider.test/xml", transport=transport) as client:
        await client.get_callback_url()
    assert str(calls[0].url) == "http://provider.test/xml/get_state.php"


# --- Error documents --------------------------------------------------------------


async def test_wrong_password_is_authentication_failed(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = SECRET_MARK + "-wrong"
    async with make_client(sim.api_url, password=wrong) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.fetch_states(["1"])
        assert_no_secret(repr(client), str(client))
    assert caught.value.text == "Неправильный логин или пароль"
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"", NoPostData), (b"<request><security>", MalformedRequest), (b"plain", MalformedRequest)],
)
async def test_simulator_refusals_reach_the_client(
    sim: SimulatorServer, body: bytes, expected: type[ProviderRejected]
) -> None:
    async with make_client(sim.api_url, transport=Tamper(body)) as client:
        with pytest.raises(expected):
            await client.get_callback_url()


async def test_unknown_sentence_is_plain_rejection() -> None:
    sentence = "Сервис временно недоступен"
    with Scripted((200, error_doc(sentence))) as provider:
        async with make_client(provider.api_url) as client:
            with pytest.raises(ProviderRejected) as caught:
                await client.fetch_states(["1"])
    assert type(caught.value) is ProviderRejected
    assert caught.value.text == sentence
    assert len(provider.seen) == 1  # an answer, not a failure: never retried


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Неправильный формат XML документа", MalformedRequest),
        ("POST данные отсутствуют", NoPostData),
        ("Ваш аккаунт заблокирован", AccountBlocked),
        ("Неправильный логин или пароль", AuthenticationFailed),
        ("  неправильный   логин или ПАРОЛЬ. \n", AuthenticationFailed),
        ("Ваш аккаунт заблокирован!", AccountBlocked),
        ("Что-то новое", ProviderRejected),
    ],
)
async def test_error_sentences_map_to_exceptions(
    text: str, expected: type[ProviderRejected]
) -> None:
    transport, calls = mock((200, error_doc(text)))
    async with make_client("http://provider.test/xml/", transport=transport) as client:
        with pytest.raises(ProviderRejected) as caught:
            await client.set_callback_url("https://x.example/")
    assert type(caught.value) is expected
    assert caught.value.text == text
    assert len(calls) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"<html><body>Bad gateway",
        b"<result><get_state>u</get_state></result>",
        b"<response></response>",
        b'<!DOCTYPE response SYSTEM "http://evil.example/x.dtd"><response/>',
        b'<!DOCTYPE r [<!ENTITY a "aaaa">]><response><get_state>&a;</get_state></response>',
        b'<?xml version="1.0" encoding="rot13"?><response/>',
        b'<?xml version="1.0" encoding="utf-32"?><response/>',
        b'<?xml version="1.0" encoding="idna"?><response/>',
    ],
)
async def test_unreadable_answers_are_protocol_errors(answer: bytes) -> None:
    transport, _ = mock((200, answer))
    async with make_client("http://provider.test/xml/", transport=transport) as client:
        with pytest.raises(ProviderProtocolError):
            await client.get_callback_url()


@pytest.mark.parametrize("status", [301, 400, 403, 404, 429])
async def test_unexpected_status_is_a_protocol_error_without_retry(status: int) -> None:
    transport, calls = mock((status, b"<response><get_state>u</get_state></response>"))
    async with make_client("http://provider.test/xml/", transport=transport) as client:
        with pytest.raises(ProviderProtocolError, match=str(status)):
            await client.get_callback_url()
    assert len(calls) == 1


# --- Retries, timeouts, unavailability ---------------------------------------------


async def test_503_twice_then_success(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.provider")
    ok = (200, b"<response><get_state>https://cb.example/</get_state></response>")
    with Scripted((503, b"busy"), (503, b"busy"), ok) as provider:
        async with make_client(provider.api_url) as client:
            assert await client.get_callback_url() == "https://cb.example/"
    assert len(provider.seen) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "app.provider"]
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["1", "2", "3"]
    assert "HTTP 503" in lines[0] and "get_state.php" in lines[0] and "HTTP 200" in lines[2]


async def test_5xx_until_retries_run_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Scripted((500, b"oops")) as provider:
        async with make_client(provider.api_url, retries=2) as client:
            with pytest.raises(ProviderUnavailable, match="HTTP 500") as caught:
                await client.fetch_states(["1"])
    assert len(provider.seen) == 3
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)


async def test_timeout_is_unavailable_after_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ok = (200, b"<response><get_state></get_state></response>")
    with Scripted(ok, delay=0.6) as provider:
        async with make_client(provider.api_url, timeout=0.15, retries=1) as client:
            with pytest.raises(ProviderUnavailable, match="Timeout") as caught:
                await client.get_callback_url()
    assert len(provider.seen) == 2
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)


async def test_connection_refused_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api_url = f"http://127.0.0.1:{closed_port()}/xml/"
    async with make_client(api_url, retries=2) as client:
        with pytest.raises(ProviderUnavailable, match="ConnectError, after 3 attempts") as caught:
            await client.fetch_states(["1"])
    attempts = [r for r in caplog.records if r.name == "app.provider"]
    assert len(attempts) == 3
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)


async def test_error_answer_is_never_retried() -> None:
    with Scripted((200, error_doc("Неправильный логин или пароль"))) as provider:
        async with make_client(provider.api_url) as client:
            with pytest.raises(AuthenticationFailed):
                await client.get_callback_url()
    assert len(provider.seen) == 1


# --- What goes out ----------------------------------------------------------------


async def test_request_format(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = SECRET_MARK + '<&"\nend'
    url = 'https://cb.example/?a=1&b=<2>"q"\nnext'
    answer = (200, b"<response><get_state>https://cb.example/</get_state></response>")
    with Scripted(answer) as provider:
        async with make_client(provider.api_url, password=password) as client:
            await client.set_callback_url(url)
    seen = provider.seen[0]
    assert (seen.method, seen.path) == ("POST", "/xml/get_state.php")
    assert seen.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"\n" not in seen.body and b"\r" not in seen.body
    assert seen.body.startswith(PROLOG)
    text = seen.body.decode("utf-8")
    assert 'value="' + SECRET_MARK + '&lt;&amp;&quot;\\nend"' in text
    assert "a=1&amp;b=&lt;2&gt;&quot;q&quot;\\nnext</get_state>" in text
    root = SafeET.fromstring(seen.body, forbid_dtd=True)
    assert root.tag == "request" and root[0].tag == "security"
    login, secret, get_state = (root.find(path) for path in PATHS)
    assert login is not None and secret is not None and get_state is not None
    assert login.get("value") == LOGIN
    assert secret.get("value") == password.replace("\n", "\\n")
    assert get_state.get("type") == "set"
    assert get_state.text == url.replace("\n", "\\n")
    assert_logs_clean(caplog)


async def test_state_request_format() -> None:
    get_answer = (200, b"<response><get_state></get_state></response>")
    with Scripted((200, b"<response/>"), get_answer) as provider:
        async with make_client(provider.api_url) as client:
            assert await client.fetch_states(["12345", "12346"]) == []
            await client.get_callback_url()
    state, get = provider.seen
    assert state.path == "/xml/state.php"
    assert state.body.endswith(
        b"</security><get_state><id_sms>12345</id_sms><id_sms>12346</id_sms></get_state></request>"
    )
    assert get.body.endswith(b'</security><get_state type="get"></get_state></request>')


async def test_login_is_escaped_too() -> None:
    transport, calls = mock((200, b"<response><get_state/></response>"))
    client = TargetSMSClient(
        "http://provider.test/xml/", 'a"b<c', SecretStr("pw"), timeout=1, transport=transport
    )
    async with client:
        assert await client.get_callback_url() == ""
    assert b'<login value="a&quot;b&lt;c"/>' in calls[0].content


# --- The password stays secret ------------------------------------------------------


def test_repr_hides_the_password() -> None:
    client = make_client("https://sms.targetsms.ru/xml/")
    assert_no_secret(repr(client), str(client))
    assert "sms.targetsms.ru" in repr(client) and LOGIN in repr(client)
    asyncio.run(client.aclose())


def test_password_that_xml_cannot_carry_is_refused_without_echo() -> None:
    with pytest.raises(ValueError) as caught:
        make_client("https://sms.targetsms.ru/xml/", password=SECRET_MARK + "\x00")
    assert_exception_clean(caught.value)


async def test_every_failure_is_a_provider_error(sim: SimulatorServer) -> None:
    async with make_client(sim.api_url, password="wrong") as client:
        with pytest.raises(ProviderError):
            await client.get_callback_url()
