"""The provider simulator: its API answers, its pushes and their retries, over real HTTP."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as SafeET
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.provider import TargetSMSClient
from app.simulator import (
    BAD_CREDENTIALS,
    MALFORMED,
    NO_POST_DATA,
    PushedState,
    ServerThread,
    SimulatorServer,
    SimulatorState,
)

LOGIN, PASSWORD = "demo", "s3cret"
SECURITY = f'<security><login value="{LOGIN}"/><password value="{PASSWORD}"/></security>'
PROLOG = '<?xml version="1.0" encoding="utf-8"?>'


def error_doc(sentence: str) -> str:
    return f"{PROLOG}<response><error>{sentence}</error></response>"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


def post(sim: SimulatorServer, endpoint: str, body: bytes | str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(sim.api_url + endpoint, content=content, timeout=5)


class Receiver:
    """Our side of a push, reduced: acknowledges the ids `ack` accepts, after `failures` 500s."""

    def __init__(self, ack: Callable[[str], bool] = lambda _: True, failures: int = 0) -> None:
        self.ack, self.failures = ack, failures
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        app = Starlette(routes=[Route("/cb", self.endpoint, methods=["POST"])])
        self.server = ServerThread(app)

    async def endpoint(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        self.content_types.append(request.headers.get("content-type", ""))
        if len(self.bodies) <= self.failures:
            return Response("down", status_code=500)
        ids = [s.get("id_sms", "") for s in SafeET.fromstring(self.bodies[-1]).findall("state")]
        acked = "".join(f"<id_sms>{i}</id_sms>" for i in ids if self.ack(i))
        answer = f'<?xml version="1.0" encoding="utf-8" ?>\n<response>\n{acked}\n</response>'
        return Response(answer, media_type="text/xml")

    def pushed_ids(self) -> list[list[str]]:
        return [[s.get("id_sms", "") for s in SafeET.fromstring(b)] for b in self.bodies]

    def __enter__(self) -> Receiver:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return f"{self.server.url}/cb"


def fast_state(**options: object) -> SimulatorState:
    settings: dict[str, object] = {"retry_delay": 0.02}
    settings.update(options)
    return SimulatorState(LOGIN, PASSWORD, **settings)  # type: ignore[arg-type]


# --- The provider's answers ------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["get_state.php", "state.php"])
@pytest.mark.parametrize("body", [b"", b"  \r\n "])
def test_empty_post_is_no_post_data(sim: SimulatorServer, endpoint: str, body: bytes) -> None:
    response = post(sim, endpoint, body)
    assert response.status_code == 200
    assert response.text == error_doc(NO_POST_DATA)
    assert NO_POST_DATA == "POST данные отсутствуют"


@pytest.mark.parametrize(
    "body",
    [
        "not xml",
        f"<request>{SECURITY}<get_state>",
        f"<response>{SECURITY}<get_state/></response>",
        f'<!DOCTYPE request SYSTEM "http://x.example/d.dtd"><request>{SECURITY}<get_state/></request>',
        f"<request>{SECURITY}</request>",
        f'<request>{SECURITY}<get_state type="delete">u</get_state></request>',
    ],
)
def test_unreadable_request_is_malformed(sim: SimulatorServer, body: str) -> None:
    response = post(sim, "get_state.php", body)
    assert response.status_code == 200
    assert response.text == error_doc(MALFORMED)
    assert MALFORMED == "Неправильный формат XML документа"


@pytest.mark.parametrize(
    "security",
    [
        f'<security><login value="{LOGIN}"/><password value="wrong"/></security>',
        f'<security><login value="other"/><password value="{PASSWORD}"/></security>',
        f'<security><login value="{LOGIN}"/></security>',
        "",
    ],
)
@pytest.mark.parametrize("endpoint", ["get_state.php", "state.php"])
def test_bad_credentials(sim: SimulatorServer, security: str, endpoint: str) -> None:
    response = post(sim, endpoint, f'<request>{security}<get_state type="get"/></request>')
    assert response.text == error_doc(BAD_CREDENTIALS)
    assert BAD_CREDENTIALS == "Неправильный логин или пароль"


def test_get_state_sets_and_reads_the_url(sim: SimulatorServer) -> None:
    url = "https://r.example/cb?a=1&amp;b=2"
    answer = post(
        sim,
        "get_state.php",
        f'<request>{SECURITY}<get_state type="set">{url}</get_state></request>',
    )
    assert answer.text == f"{PROLOG}<response><get_state>{url}</get_state></response>"
    assert sim.state.callback_url == "https://r.example/cb?a=1&b=2"
    answer = post(
        sim, "get_state.php", f'<request>{SECURITY}<get_state type="get"></get_state></request>'
    )
    assert answer.text == f"{PROLOG}<response><get_state>{url}</get_state></response>"


def test_state_php_answers_known_ids_only(sim: SimulatorServer) -> None:
    sim.state.register("12345", num_parts=2)
    sim.state.register("12346", price="0.99")
    sim.state.advance("12345", "deliver", time="2020-01-01 12:57:46")
    ids = "".join(f"<id_sms>{i}</id_sms>" for i in ("12346", "404", "12345"))
    answer = post(
        sim, "state.php", f"{PROLOG}<request>{SECURITY}<get_state>{ids}</get_state></request>"
    )
    assert answer.status_code == 200
    assert answer.text == (
        f"{PROLOG}<response>"
        '<state id_sms="12346" time="" num_parts="1" price="0.99">send</state>'
        '<state id_sms="12345" time="2020-01-01 12:57:46" num_parts="2" price="1.15">'
        "deliver</state>"
        "</response>"
    )


def test_advance_stamps_moscow_wall_clock() -> None:
    state = SimulatorState()
    state.register("1")
    message = state.advance("1", "not_deliver")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", message.time)
    stamped = datetime.strptime(message.time, "%Y-%m-%d %H:%M:%S")
    moscow_now = datetime.now(ZoneInfo("Europe/Moscow")).replace(tzinfo=None)
    assert abs(moscow_now - stamped) < timedelta(minutes=1)


def test_state_rules() -> None:
    state = SimulatorState()
    state.register("1")
    with pytest.raises(ValueError, match="already registered"):
        state.register("1")
    with pytest.raises(ValueError, match="not an id_sms"):
        state.register("１２")
    with pytest.raises(ValueError, match="unknown status"):
        state.advance("1", "delivered")
    with pytest.raises(KeyError):
        state.advance("2", "deliver")
    state.advance("1", "deliver")
    with pytest.raises(ValueError, match="final"):
        state.advance("1", "not_deliver")
    assert state.create(2) == ["100001", "100002"]


# --- Pushes ----------------------------------------------------------------------


def test_push_document_and_acknowledgement() -> None:
    with Receiver() as receiver, SimulatorServer(fast_state()) as sim:
        sim.state.callback_url = receiver.url
        sim.state.register("77")
        sim.state.advance("77", "deliver", time="2020-01-01 12:57:46")
        assert sim.state.wait_settled(10)
    assert receiver.bodies == [
        b'<?xml version="1.0" encoding="utf-8"?><request>'
        b'<state id_sms="77" time="2020-01-01 12:57:46">deliver</state></request>'
    ]
    assert receiver.content_types == ["text/xml; charset=utf-8"]
    assert sim.state.acknowledged == [PushedState("77", "deliver", "2020-01-01 12:57:46")]
    assert sim.state.given_up == []


def test_unacknowledged_ids_are_retried_five_times_then_given_up() -> None:
    acked = {"1", "3"}
    with Receiver(ack=lambda i: i in acked) as receiver, SimulatorServer(fast_state()) as sim:
        sim.state.callback_url = receiver.url
        for id_sms in ("1", "2", "3", "4"):
            sim.state.register(id_sms)
        for id_sms in ("1", "2", "3", "4"):
            sim.state.advance(id_sms, "deliver")
        assert sim.state.wait_settled(10)
    received = Counter(i for batch in receiver.pushed_ids() for i in batch)
    assert received == {"1": 1, "3": 1, "2": 5, "4": 5}
    assert sorted(s.id_sms for s in sim.state.acknowledged) == ["1", "3"]
    assert sorted(s.id_sms for s in sim.state.given_up) == ["2", "4"]
    assert all(a.outcome == "HTTP 200" for a in sim.state.pushes)


def test_non_200_retries_the_whole_batch() -> None:
    with Receiver(failures=2) as receiver, SimulatorServer(fast_state()) as sim:
        sim.state.callback_url = receiver.url
        sim.state.create(1)
        sim.state.advance("100001", "expired")
        assert sim.state.wait_settled(10)
    assert [a.outcome for a in sim.state.pushes] == ["HTTP 500", "HTTP 500", "HTTP 200"]
    assert [s.id_sms for s in sim.state.acknowledged] == ["100001"]


def test_unreachable_receiver_is_given_up_after_five_attempts() -> None:
    receiver = Receiver()
    with receiver:
        url = receiver.url
    with SimulatorServer(fast_state()) as sim:
        sim.state.callback_url = url
        sim.state.register("5")
        sim.state.advance("5", "deliver")
        assert sim.state.wait_settled(10)
    assert [a.outcome for a in sim.state.pushes] == ["ConnectError"] * 5
    assert [s.id_sms for s in sim.state.given_up] == ["5"]


def test_pushes_are_batched() -> None:
    state = fast_state(push_batch_size=2)
    with Receiver() as receiver, SimulatorServer(state, tick=3600) as sim:
        sim.state.callback_url = receiver.url
        ids = sim.state.create(5)
        for id_sms in ids:
            sim.state.advance(id_sms, "deliver")
        flushed = httpx.post(f"{sim.url}/sim/flush", timeout=5).json()
    assert flushed == {"pushed": 5}
    assert receiver.pushed_ids() == [ids[:2], ids[2:4], ids[4:]]


def test_lost_pushes_are_never_sent() -> None:
    with Receiver() as receiver, SimulatorServer(fast_state()) as sim:
        sim.state.register("1")
        sim.state.advance("1", "send")  # no callback URL yet: never pushed
        sim.state.callback_url = receiver.url
        sim.state.register("2")
        sim.state.register("3")
        sim.state.lose("2")
        sim.state.advance("2", "deliver")
        sim.state.advance("3", "deliver")
        sim.state.advance("1", "deliver")
        assert sim.state.wait_settled(10)
    assert receiver.pushed_ids() in ([["3"], ["1"]], [["3", "1"]])
    assert [s.id_sms for s in sim.state.lost] == ["1", "2"]


def test_loss_rate_drops_pushes() -> None:
    state = fast_state(loss_rate=1.0, seed=1)
    state.callback_url = "http://127.0.0.1:9/never"
    for id_sms in state.create(3):
        state.advance(id_sms, "deliver")
    assert len(state.lost) == 3 and state.wait_settled(0)


def test_client_registers_url_and_receives_pushes() -> None:
    async def register(api_url: str, url: str) -> str:
        client = TargetSMSClient(api_url, LOGIN, SecretStr(PASSWORD), timeout=5)
        async with client:
            return await client.set_callback_url(url)

    with Receiver() as receiver, SimulatorServer(fast_state()) as sim:
        assert asyncio.run(register(sim.api_url, receiver.url)) == receiver.url
        sim.state.register("900")
        sim.state.advance("900", "partly_deliver")
        assert sim.state.wait_settled(10)
    assert receiver.pushed_ids() == [["900"]]


# --- Control endpoints -------------------------------------------------------------


def test_control_endpoints(sim: SimulatorServer) -> None:
    with httpx.Client(base_url=sim.url, timeout=5) as http:
        assert http.post("/sim/messages", json={"count": 2}).json() == {"ids": ["100001", "100002"]}
        assert http.post("/sim/messages", json={"ids": ["42"], "price": "2.00"}).json() == {
            "ids": ["42"]
        }
        assert http.post("/sim/messages", json={"ids": ["42"]}).status_code == 400
        assert http.post("/sim/messages", content=b"nope").status_code == 400
        advanced = http.post(
            "/sim/messages/42/advance", json={"status": "deliver", "time": "2020-01-01 00:00:00"}
        )
        assert advanced.json() == {
            "id_sms": "42",
            "status": "deliver",
            "time": "2020-01-01 00:00:00",
            "num_parts": 1,
            "price": "2.00",
        }
        assert http.post("/sim/messages/42/advance", json={"status": "expired"}).status_code == 400
        assert http.post("/sim/messages/404/advance", json={"status": "deliver"}).status_code == 404
        assert http.get("/sim/messages/100001").json()["status"] == "send"
        assert http.get("/sim/messages/404").status_code == 404
        assert http.post("/sim/flush").json() == {"pushed": 0}
        summary = http.get("/sim").json()
    assert summary["messages"] == 3 and summary["lost"] == ["42"]


def test_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0
    assert "--password" in result.stdout and "get_state.php" in result.stdout
