"""A local stand-in for the TargetSMS provider, for tests and for trying the flow by hand.

It answers `{prefix}/get_state.php`, `state.php`, `time.php` and `balance.php` like the real API
(HTTP 200 with the provider's error document when a request is refused), keeps
message states in memory, and pushes each status change to the URL registered
through get_state.php, 5 attempts per state, as the manual describes.

By hand:

    python -m app.simulator --port 8090 --login demo --password demo

    curl -X POST localhost:8090/sim/messages -d '{"count": 2}'       # -> {"ids": [...]}
    curl -X POST localhost:8090/sim/messages/100000/advance -d '{"status": "deliver"}'
    curl -X POST localhost:8090/sim/messages/100000/lose     # never push its changes
    curl localhost:8090/sim/messages/100000
    curl -X POST localhost:8090/sim/flush                            # push what is queued now
    curl localhost:8090/sim                                          # counters
    curl -X POST localhost:8090/sim/account -d '{"zone": "Asia/Omsk", "silent": true}'
    curl -X POST localhost:8090/sim/callback-url -d '{"url": "https://elsewhere/"}'

and point the receiver at it with TARGETSMS_API_URL=http://127.0.0.1:8090/xml/.

From tests:

    with SimulatorServer(SimulatorState("demo", "demo", retry_delay=0.01)) as sim:
        sim.state.register("12345")
        client = TargetSMSClient(sim.api_url, "demo", SecretStr("demo"), timeout=5)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self
from xml.etree.ElementTree import Element, SubElement, tostring
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import uvicorn
from defusedxml.ElementTree import fromstring
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from app.protocol import ID_SMS, XML_ERRORS

logger = logging.getLogger("app.simulator")

STATUSES = ("send", "not_deliver", "expired", "deliver", "partly_deliver")
FINAL_STATUSES = frozenset(STATUSES) - {"send"}
NO_POST_DATA = "POST данные отсутствуют"
MALFORMED = "Неправильный формат XML документа"
BAD_CREDENTIALS = "Неправильный логин или пароль"
_PROLOG = '<?xml version="1.0" encoding="utf-8"?>'


@dataclass(frozen=True, slots=True)
class SimMessage:
    id_sms: str
    status: str = "send"
    time: str = ""
    num_parts: int = 1
    price: str = "1.15"


@dataclass(frozen=True, slots=True)
class PushedState:
    """One status change, as it goes out in a push."""

    id_sms: str
    status: str
    time: str


@dataclass(frozen=True, slots=True)
class PushAttempt:
    """One POST to the callback URL: what was sent, how it went, what was acknowledged."""

    ids: tuple[str, ...]
    outcome: str
    acked: frozenset[str]


@dataclass(eq=False, slots=True)
class QueuedPush:
    """A state waiting for its (next) push; `due` is on the time.monotonic() clock."""

    state: PushedState
    attempts: int = 0
    due: float = 0.0


class SimulatorState:
    """Messages, the callback URL and the push queue; safe to use from any thread.

    A state queued while no callback URL is set, or dropped by `lose()` or
    `loss_rate`, is never pushed: it goes to `lost`, and only state.php shows it.
    """

    def __init__(
        self,
        login: str = "demo",
        password: str = "demo",  # noqa: S107 - a local stand-in, like --password
        *,
        push_batch_size: int = 100,
        push_attempts: int = 5,
        retry_delay: float = 30.0,
        loss_rate: float = 0.0,
        seed: int | None = None,
        zone: str = "Europe/Moscow",
        balance: str = "10000",
    ) -> None:
        self._login, self._password = login.encode(), password.encode()
        self._batch_size, self._attempts = push_batch_size, push_attempts
        self._retry_delay, self._loss_rate = retry_delay, loss_rate
        self._rng = random.Random(seed)
        self._zone = ZoneInfo(zone)
        self._cond = threading.Condition()
        self._messages: dict[str, SimMessage] = {}
        self._callback_url = ""
        self._next_id = 100_000
        self._lose: set[str] = set()
        self._pending: list[QueuedPush] = []
        self._in_flight = 0
        self._pushes: list[PushAttempt] = []
        self._acknowledged: list[PushedState] = []
        self._given_up: list[PushedState] = []
        self._lost: list[PushedState] = []
        self._state_requests: list[tuple[str, ...]] = []
        self.account = SimAccount(Decimal(balance))  # balance.php, and the silence switch
        # stats.php (issue 12): what was sent, and the most rows one answer may hold.
        self._sent: dict[str, SentRecord] = {}
        self._stats_requests: list[tuple[str, str]] = []
        self.stats_limit: int | None = None

    def __repr__(self) -> str:
        return f"SimulatorState(messages={len(self._messages)}, url={self.callback_url!r})"

    def authenticate(self, login: str, password: str) -> bool:
        login_ok = secrets.compare_digest(login.encode(), self._login)
        return secrets.compare_digest(password.encode(), self._password) and login_ok

    @property
    def callback_url(self) -> str:
        with self._cond:
            return self._callback_url

    @callback_url.setter
    def callback_url(self, url: str) -> None:
        with self._cond:
            self._callback_url = url

    def register(self, id_sms: str, *, num_parts: int = 1, price: str = "1.15") -> SimMessage:
        """A message just sent: status `send`, empty time."""
        if not ID_SMS.fullmatch(id_sms):
            raise ValueError(f"not an id_sms: {id_sms!r}")
        with self._cond:
            if id_sms in self._messages:
                raise ValueError(f"{id_sms} is already registered")
            message = SimMessage(id_sms, num_parts=num_parts, price=price)
            self._messages[id_sms] = message
            self.account.spend(num_parts, price)
            self._sent[id_sms] = SentRecord.default(id_sms, self._now())
            return message

    def create(self, count: int, *, num_parts: int = 1, price: str = "1.15") -> list[str]:
        """Register `count` messages under fresh ids and return the ids."""
        with self._cond:
            ids: list[str] = []
            while len(ids) < count:
                self._next_id += 1
                if str(self._next_id) not in self._messages:
                    ids.append(str(self._next_id))
                    self.register(ids[-1], num_parts=num_parts, price=price)
            return ids

    def advance(self, id_sms: str, status: str, time: str | None = None) -> SimMessage:
        """Move a message to `status` (time: Moscow wall clock now) and queue its push."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._cond:
            current = self._messages[id_sms]
            if current.status in FINAL_STATUSES:
                raise ValueError(f"{id_sms} is final ({current.status})")
            when = time if time is not None else "" if status == "send" else self._now()
            message = dataclasses.replace(current, status=status, time=when)
            self._messages[id_sms] = message
            self._queue(PushedState(id_sms, status, when))
            return message

    def lose(self, id_sms: str) -> None:
        """Never push this message's status changes from now on."""
        with self._cond:
            self._lose.add(id_sms)

    def message(self, id_sms: str) -> SimMessage:
        with self._cond:
            return self._messages[id_sms]

    def lookup(self, ids: Iterable[str]) -> list[SimMessage]:
        """The known messages among `ids`, in order; unknown ids are left out."""
        with self._cond:
            return [self._messages[i] for i in ids if i in self._messages]

    def record_state_request(self, ids: Sequence[str]) -> None:
        with self._cond:
            self._state_requests.append(tuple(ids))

    @property
    def state_requests(self) -> list[tuple[str, ...]]:
        """The ids of every authenticated state.php request, one tuple per request."""
        with self._cond:
            return list(self._state_requests)

    @property
    def pushes(self) -> list[PushAttempt]:
        with self._cond:
            return list(self._pushes)

    @property
    def acknowledged(self) -> list[PushedState]:
        with self._cond:
            return list(self._acknowledged)

    @property
    def given_up(self) -> list[PushedState]:
        with self._cond:
            return list(self._given_up)

    @property
    def lost(self) -> list[PushedState]:
        with self._cond:
            return list(self._lost)

    def summary(self) -> dict[str, object]:
        with self._cond:
            return {
                "callback_url": self._callback_url,
                "messages": len(self._messages),
                "pending": len(self._pending) + self._in_flight,
                "acknowledged": len(self._acknowledged),
                "given_up": [state.id_sms for state in self._given_up],
                "lost": [state.id_sms for state in self._lost],
            }

    def wait_settled(self, timeout: float) -> bool:
        """Block until nothing is queued or in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._in_flight, timeout)

    def take_due(self, *, force: bool = False) -> tuple[str, list[list[QueuedPush]]]:
        """The callback URL and the states due for a push, in batches, marked in flight."""
        with self._cond:
            if not self._callback_url or self.account.silent:
                return "", []
            now = time.monotonic()
            due = [p for p in self._pending if force or p.due <= now]
            self._pending = [p for p in self._pending if p not in due]
            self._in_flight += len(due)
            size = self._batch_size
            return self._callback_url, [due[i : i + size] for i in range(0, len(due), size)]

    def settle(self, batch: Sequence[QueuedPush], outcome: str, acked: frozenset[str]) -> None:
        """Record one push: acknowledged states are done, the rest retried or given up."""
        with self._cond:
            ids = tuple(p.state.id_sms for p in batch)
            self._pushes.append(PushAttempt(ids, outcome, acked))
            retry_at = time.monotonic() + self._retry_delay
            for pending in batch:
                pending.attempts += 1
                if pending.state.id_sms in acked:
                    self._acknowledged.append(pending.state)
                elif pending.attempts >= self._attempts:
                    self._given_up.append(pending.state)
                else:
                    pending.due = retry_at
                    self._pending.append(pending)
            self._in_flight -= len(batch)
            self._cond.notify_all()

    def _queue(self, state: PushedState) -> None:
        dropped = self._loss_rate > 0 and self._rng.random() < self._loss_rate
        silent = self.account.silent
        if not self._callback_url or state.id_sms in self._lose or dropped or silent:
            self._lost.append(state)
        else:
            self._pending.append(QueuedPush(state))
            self._cond.notify_all()

    def _now(self) -> str:
        return datetime.now(self._zone).strftime("%Y-%m-%d %H:%M:%S")

    # --- the account's zone (time.php, and the times in statuses) ---------

    @property
    def zone(self) -> str:
        with self._cond:
            return str(self._zone)

    @zone.setter
    def zone(self, name: str) -> None:
        """The account's zone: time.php answers its clock, new status times follow it."""
        zone = ZoneInfo(name)  # ValueError/ZoneInfoNotFoundError for a bad name
        with self._cond:
            self._zone = zone

    def account_time(self) -> str:
        with self._cond:
            return self._now()

    # --- stats.php (issue 12) -----------------------------------------------------

    def today(self) -> str:
        return self._now()[:10]

    def describe(self, id_sms: str, **fields: str) -> SentRecord:
        """Change what stats.php tells about a sent message (`time` moves its send time)."""
        with self._cond:
            record = dataclasses.replace(self._sent[id_sms], **fields)
            self._sent[id_sms] = record
            return record

    def stat_rows(self, start: str, stop: str) -> list[dict[str, str]]:
        """One stats.php row per part of each message sent in [start, stop] (wall clock)."""
        with self._cond:
            self._stats_requests.append((start, stop))
            sent = [(i, r) for i, r in self._sent.items() if start <= r.time <= stop]
            return [
                row
                for id_sms, record in sorted(sent, key=lambda item: (item[1].time, item[0]))
                for row in _part_rows(self._messages[id_sms], record)
            ]

    @property
    def stats_requests(self) -> list[tuple[str, str]]:
        """The (start, stop) window of every authenticated stats.php request."""
        with self._cond:
            return list(self._stats_requests)


# --- the account's money, and silence ------------------------------------

# Price of one message part per direction, as balance.php counts them (the manual's
# example: the same money buys half as many messages to Ukraine).
DIRECTIONS = {"Россия": Decimal("1.15"), "Украина": Decimal("2.30")}


class SimAccount:
    """Money that each created message spends (parts x price), and the silence switch.

    Used under SimulatorState's lock, or alone for a read; money may go below
    zero here (the real provider would hold the messages until a top-up).
    """

    def __init__(self, money: Decimal) -> None:
        self._lock = threading.Lock()
        self._money = money
        self.silent = False  # True: push nothing (states queued meanwhile are lost)

    @property
    def money(self) -> Decimal:
        with self._lock:
            return self._money

    @money.setter
    def money(self, value: Decimal) -> None:
        with self._lock:
            self._money = value

    def spend(self, num_parts: int, price: str) -> None:
        with self._lock:
            self._money -= num_parts * Decimal(price)

    def sms_left(self) -> dict[str, int]:
        money = self.money
        return {area: max(0, int(money // price)) for area, price in DIRECTIONS.items()}

    def summary(self) -> dict[str, object]:
        return {"money": str(self.money), "sms": self.sms_left(), "silent": self.silent}


# --- stats.php (issue 12) ---------------------------------------------------------

BAD_DATE = "Некорректный формат даты"
# The manual names no limit on an answer, so no sentence for it either: the
# simulator's own, to make a reconciler split its windows.
TOO_MANY_ROWS = "Слишком много данных, уменьшите период"
_STATS_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TWO_DIGITS = re.compile(r"[0-9]{1,2}")


@dataclass(frozen=True, slots=True)
class SentRecord:
    """What the provider's statistics tell about a sent message, besides its status."""

    time: str  # sent, provider wall clock
    originator: str = "SENDER_1"
    name_delivery: str = "API"
    operator: str = "Beeline"
    phone: str = "7900000****"
    text: str = "Test message"

    @classmethod
    def default(cls, id_sms: str, now: str) -> SentRecord:
        return cls(time=now, phone=f"79{id_sms[-5:].rjust(5, '0')}****")


def _part_rows(message: SimMessage, record: SentRecord) -> list[dict[str, str]]:
    parts = max(1, message.num_parts)
    size = -(-len(record.text) // parts)
    return [
        {
            "id_sms": message.id_sms,
            "id_state": f"{message.id_sms}{part:02d}",
            "operator": record.operator,
            "name_delivery": record.name_delivery,
            "phone": record.phone,
            "originator": record.originator,
            "time_change_state": message.time,
            "time": record.time,
            "status": message.status,
            "text": record.text[(part - 1) * size : part * size],
            "price": message.price,
            "part_no": str(part),
            "num_parts": str(parts),
        }
        for part in range(1, parts + 1)
    ]


def _stats_bound(element: Element, fields: tuple[str, str, str], today: str, end: bool) -> str:
    """`YYYY-MM-DD hh:mm:ss` from one end's date, hour and minute fields (or defaults)."""
    day, hour, minute = (element.get(name) or "" for name in fields)
    day = day or today
    hour, minute = hour or ("23" if end else "00"), minute or ("59" if end else "00")
    if not (
        _STATS_DATE.fullmatch(day) and _TWO_DIGITS.fullmatch(hour) and _TWO_DIGITS.fullmatch(minute)
    ):
        raise _Refused(BAD_DATE)
    try:
        moment = datetime.strptime(f"{day} {hour}:{minute}", "%Y-%m-%d %H:%M")
    except ValueError:
        raise _Refused(BAD_DATE) from None
    return moment.strftime("%Y-%m-%d %H:%M:") + ("59" if end else "00")


async def _stats_php(request: Request) -> Response:
    element = (await _provider_request(request)).find("stats")
    if element is None:
        raise _Refused(MALFORMED)
    state = _simulator(request)
    today = state.today()
    start = _stats_bound(element, ("date_start", "from_hour", "from_minute"), today, end=False)
    stop = _stats_bound(element, ("date_stop", "to_hour", "to_minute"), today, end=True)
    rows = [
        row
        for row in state.stat_rows(start, stop)
        if element.get("state") in (None, "", row["status"])
        and element.get("originator") in (None, "", row["originator"])
    ]
    if state.stats_limit is not None and len(rows) > state.stats_limit:
        raise _Refused(TOO_MANY_ROWS)
    root = Element("response")
    stats = SubElement(root, "stats", num_stats=str(len(rows)))
    for row in rows:
        SubElement(stats, "stat", row)
    return _xml_response(root)


def _describe_created(state: SimulatorState, ids: Sequence[str], data: dict[str, Any]) -> None:
    fields = {key: str(data[key]) for key in SENT_FIELDS if key in data}
    for id_sms in ids:
        if fields:
            state.describe(id_sms, **fields)
        if data.get("push") is False:
            state.lose(id_sms)


SENT_FIELDS = ("time", "originator", "name_delivery", "operator", "phone", "text")


# --- Pushing statuses to the callback URL ---------------------------------------


def push_document(states: Iterable[PushedState]) -> bytes:
    root = Element("request")
    for state in states:
        SubElement(root, "state", id_sms=state.id_sms, time=state.time).text = state.status
    return (_PROLOG + tostring(root, encoding="unicode")).encode()


def acked_ids(content: bytes) -> frozenset[str]:
    """The ids in a `<response><id_sms>..</id_sms></response>` answer; none if unreadable."""
    try:
        root: Element = fromstring(content, forbid_dtd=True)
    except XML_ERRORS:
        return frozenset()
    if root.tag != "response":
        return frozenset()
    return frozenset("".join(e.itertext()).strip() for e in root.findall("id_sms"))


async def _push_batch(
    client: httpx.AsyncClient, url: str, batch: Sequence[QueuedPush]
) -> tuple[str, frozenset[str]]:
    body = push_document(p.state for p in batch)
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    try:
        response = await client.post(url, content=body, headers=headers)
    except Exception as exc:  # any failure is a failed attempt: the batch must be settled
        return type(exc).__name__, frozenset()
    if response.status_code != 200:
        return f"HTTP {response.status_code}", frozenset()
    return "HTTP 200", acked_ids(response.content)


async def push_due(state: SimulatorState, client: httpx.AsyncClient, *, force: bool = False) -> int:
    """Push the states that are due (all queued ones if `force`); returns how many."""
    url, batches = state.take_due(force=force)
    for batch in batches:
        outcome, acked = await _push_batch(client, url, batch)
        logger.info("push of %d states: %s, %d acknowledged", len(batch), outcome, len(acked))
        state.settle(batch, outcome, acked)
    return sum(len(batch) for batch in batches)


async def _run_pusher(state: SimulatorState, client: httpx.AsyncClient, tick: float) -> None:
    while True:
        try:
            await push_due(state, client)
        except Exception:
            logger.exception("push round failed")
        await asyncio.sleep(tick)


# --- The HTTP app -----------------------------------------------------------------


class _Refused(Exception):
    """Answered with the provider's error document, like the real API (HTTP 200)."""


def _xml_response(root: Element) -> Response:
    return Response(_PROLOG + tostring(root, encoding="unicode"), media_type="text/xml")


def _refused(request: Request, exc: Exception) -> Response:
    root = Element("response")
    SubElement(root, "error").text = str(exc)
    return _xml_response(root)


def _simulator(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


async def _provider_request(request: Request) -> Element:
    """The parsed, authenticated request document, or _Refused as the provider would."""
    body = await request.body()
    if not body.strip():
        raise _Refused(NO_POST_DATA)
    try:
        root: Element = fromstring(body, forbid_dtd=True)
    except XML_ERRORS:
        raise _Refused(MALFORMED) from None
    if root.tag != "request":
        raise _Refused(MALFORMED)
    login = root.find("security/login")
    password = root.find("security/password")
    if login is None or password is None:
        raise _Refused(BAD_CREDENTIALS)
    if not _simulator(request).authenticate(login.get("value", ""), password.get("value", "")):
        raise _Refused(BAD_CREDENTIALS)
    return root


async def _get_state_php(request: Request) -> Response:
    element = (await _provider_request(request)).find("get_state")
    if element is None or element.get("type") not in ("get", "set"):
        raise _Refused(MALFORMED)
    state = _simulator(request)
    if element.get("type") == "set":
        state.callback_url = "".join(element.itertext()).strip()
    root = Element("response")
    SubElement(root, "get_state").text = state.callback_url
    return _xml_response(root)


async def _state_php(request: Request) -> Response:
    element = (await _provider_request(request)).find("get_state")
    if element is None:
        raise _Refused(MALFORMED)
    ids = ["".join(e.itertext()).strip() for e in element.findall("id_sms")]
    _simulator(request).record_state_request(ids)
    root = Element("response")
    for message in _simulator(request).lookup(ids):
        attrs = {"id_sms": message.id_sms, "time": message.time}
        attrs |= {"num_parts": str(message.num_parts), "price": message.price}
        SubElement(root, "state", attrs).text = message.status
    return _xml_response(root)


# --- time.php, balance.php and their switches ---------------------------


async def _time_php(request: Request) -> Response:
    await _provider_request(request)
    root = Element("response")
    SubElement(root, "time").text = _simulator(request).account_time()
    return _xml_response(root)


async def _balance_php(request: Request) -> Response:
    await _provider_request(request)
    account = _simulator(request).account
    root = Element("response")
    SubElement(root, "money", currency="RUR").text = str(account.money)
    for area, count in account.sms_left().items():
        SubElement(root, "sms", area=area).text = str(count)
    return _xml_response(root)


def _account_json(state: SimulatorState) -> JSONResponse:
    return JSONResponse({"zone": state.zone} | state.account.summary())


async def _show_account(request: Request) -> Response:
    return _account_json(_simulator(request))


async def _change_account(request: Request) -> Response:
    """`{"zone": "Asia/Novosibirsk", "money": "12.50", "silent": true}`, any of them."""
    data = await _json_object(request)
    state = _simulator(request)
    try:
        zone = str(data["zone"]) if "zone" in data else None
        money = Decimal(str(data["money"])) if "money" in data else None
        if zone is not None:
            state.zone = zone
    except (ValueError, ArithmeticError, ZoneInfoNotFoundError) as exc:
        raise HTTPException(400, f"bad zone or money: {exc}") from None
    if money is not None:
        state.account.money = money
    if "silent" in data:
        state.account.silent = bool(data["silent"])
    return _account_json(state)


async def _change_callback_url(request: Request) -> Response:
    """`{"url": "..."}`: the registered URL changes behind the receiver's back (drift)."""
    data = await _json_object(request)
    state = _simulator(request)
    state.callback_url = str(data.get("url", ""))
    return JSONResponse({"callback_url": state.callback_url})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise HTTPException(400, "body must be JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    return data


def _message_json(message: SimMessage) -> JSONResponse:
    return JSONResponse(dataclasses.asdict(message))


async def _create_messages(request: Request) -> Response:
    data = await _json_object(request)
    state = _simulator(request)
    extra = {key: data[key] for key in ("num_parts", "price") if key in data}
    try:
        if "ids" in data:
            ids = [state.register(str(i), **extra).id_sms for i in data["ids"]]
        else:
            ids = state.create(int(data.get("count", 1)), **extra)
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, str(exc)) from None
    _describe_created(state, ids, data)  # issue 12: sent time, sender, text; "push": false
    return JSONResponse({"ids": ids})


async def _advance_message(request: Request) -> Response:
    data = await _json_object(request)
    id_sms = request.path_params["id_sms"]
    try:
        return _message_json(
            _simulator(request).advance(id_sms, data.get("status", ""), data.get("time"))
        )
    except KeyError:
        raise HTTPException(404, f"unknown id_sms {id_sms}") from None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def _lose_message(request: Request) -> Response:
    id_sms = request.path_params["id_sms"]
    state = _simulator(request)
    try:
        message = state.message(id_sms)
    except KeyError:
        raise HTTPException(404, f"unknown id_sms {id_sms}") from None
    state.lose(id_sms)
    return _message_json(message)


async def _show_message(request: Request) -> Response:
    id_sms = request.path_params["id_sms"]
    try:
        return _message_json(_simulator(request).message(id_sms))
    except KeyError:
        raise HTTPException(404, f"unknown id_sms {id_sms}") from None


async def _flush(request: Request) -> Response:
    pushed = await push_due(_simulator(request), request.app.state.push_client, force=True)
    return JSONResponse({"pushed": pushed})


async def _summary(request: Request) -> Response:
    return JSONResponse(_simulator(request).summary())


def create_app(
    state: SimulatorState, *, prefix: str = "/xml", tick: float = 0.05, push_timeout: float = 10.0
) -> Starlette:
    """The simulator's ASGI app; a background task pushes due states every `tick` seconds."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=push_timeout) as client:
            app.state.push_client = client
            pusher = asyncio.create_task(_run_pusher(state, client, tick))
            try:
                yield
            finally:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pusher

    routes = [
        Route(f"{prefix}/get_state.php", _get_state_php, methods=["POST"]),
        Route(f"{prefix}/state.php", _state_php, methods=["POST"]),
        Route(f"{prefix}/time.php", _time_php, methods=["POST"]),
        Route(f"{prefix}/balance.php", _balance_php, methods=["POST"]),
        Route("/sim/account", _show_account, methods=["GET"]),
        Route("/sim/account", _change_account, methods=["POST"]),
        Route("/sim/callback-url", _change_callback_url, methods=["POST"]),
        Route("/sim", _summary, methods=["GET"]),
        Route("/sim/messages", _create_messages, methods=["POST"]),
        Route("/sim/messages/{id_sms}", _show_message, methods=["GET"]),
        Route("/sim/messages/{id_sms}/advance", _advance_message, methods=["POST"]),
        Route("/sim/messages/{id_sms}/lose", _lose_message, methods=["POST"]),
        Route("/sim/flush", _flush, methods=["POST"]),
        Route(f"{prefix}/stats.php", _stats_php, methods=["POST"]),  # issue 12
    ]
    app = Starlette(routes=routes, exception_handlers={_Refused: _refused}, lifespan=lifespan)
    app.state.simulator = state
    return app


# --- Running it -------------------------------------------------------------------


class ServerThread:
    """Any ASGI app served by uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, 0
        # log_config=None: a test server must not reconfigure the process's logging.
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            ws="none",
            loop="asyncio",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((self.host, 0))
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.run, args=([self._socket],))
        self._thread.daemon = True
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatorServer(ServerThread):
    """The simulator on a free loopback port; `state` is its in-memory provider."""

    def __init__(
        self, state: SimulatorState | None = None, *, prefix: str = "/xml", tick: float = 0.02
    ) -> None:
        self.state = state if state is not None else SimulatorState()
        self._prefix = prefix
        super().__init__(create_app(self.state, prefix=prefix, tick=tick, push_timeout=5.0))

    @property
    def api_url(self) -> str:
        """The base URL to give TargetSMSClient (ends with "/")."""
        return f"{self.url}{self._prefix}/"


def main(argv: Sequence[str] | None = None, prog: str = "python -m app.simulator") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--login", default="demo")
    parser.add_argument("--password", default="demo")
    parser.add_argument("--prefix", default="/xml", help="path before get_state.php/state.php")
    parser.add_argument("--retry-delay", type=float, default=30.0, help="seconds between pushes")
    parser.add_argument("--batch-size", type=int, default=100, help="states per push")
    parser.add_argument("--loss-rate", type=float, default=0.0, help="share of pushes dropped")
    parser.add_argument("--zone", default="Europe/Moscow", help="the account's time zone")
    parser.add_argument("--balance", default="10000", help="the account's money at start")

    parser.add_argument(
        "--stats-limit", type=int, default=None, help="most rows in one stats.php answer"
    )
    args = parser.parse_args(argv)
    state = SimulatorState(
        args.login,
        args.password,
        push_batch_size=args.batch_size,
        retry_delay=args.retry_delay,
        loss_rate=args.loss_rate,
        zone=args.zone,
        balance=args.balance,
    )
    state.stats_limit = args.stats_limit
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(state, prefix=args.prefix), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
