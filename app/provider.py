"""Async client for the TargetSMS XML API: the push URL and status polling.

Every failure is raised as one of these, so a caller never sees an httpx
exception (which would carry the request, and so the password):

* ProviderError
  + ProviderRejected - the provider answered `<response><error>TEXT</error></response>`
  | + AuthenticationFailed - "Неправильный логин или пароль"
  | + MalformedRequest - "Неправильный формат XML документа"
  | + NoPostData - "POST данные отсутствуют"
  | + AccountBlocked - "Ваш аккаунт заблокирован"
  + ProviderUnavailable - network error, timeout or HTTP 5xx, after the retries
  + ProviderProtocolError - an answer we cannot read, or an unexpected HTTP status
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dt_time
from decimal import Decimal
from types import TracebackType
from typing import Self
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import httpx
from defusedxml.ElementTree import fromstring
from pydantic import SecretBytes, SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from app.protocol import ID_SMS, XML_ERRORS

__all__ = [
    "ID_SMS",
    "AccountBlocked",
    "AuthenticationFailed",
    "BadDate",
    "Balance",
    "MalformedRequest",
    "NoPostData",
    "PolledState",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderRejected",
    "ProviderUnavailable",
    "SmsLeft",
    "StatRow",
    "StatsAnswer",
    "TargetSMSClient",
    "rejection",
    "xml_value",
]

logger = logging.getLogger("app.provider")

_NUM_PARTS = re.compile(r"[0-9]{1,9}")
_PRICE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
# Characters XML 1.0 cannot carry at all, escaped or not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
_PROLOG = '<?xml version="1.0" encoding="utf-8"?>'


class ProviderError(Exception):
    """Any failure talking to the provider."""


class ProviderRejected(ProviderError):
    """The provider refused the request; `text` is its own sentence."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class AuthenticationFailed(ProviderRejected):
    pass


class MalformedRequest(ProviderRejected):
    pass


class NoPostData(ProviderRejected):
    pass


class AccountBlocked(ProviderRejected):
    pass


class ProviderUnavailable(ProviderError):
    pass


class ProviderProtocolError(ProviderError):
    pass


def _sentence_key(text: str) -> str:
    return " ".join(text.split()).rstrip(" .!;:").casefold()


_REJECTIONS: dict[str, type[ProviderRejected]] = {
    _sentence_key("Неправильный логин или пароль"): AuthenticationFailed,
    _sentence_key("Неправильный формат XML документа"): MalformedRequest,
    _sentence_key("POST данные отсутствуют"): NoPostData,
    _sentence_key("Ваш аккаунт заблокирован"): AccountBlocked,
}


def rejection(text: str) -> ProviderRejected:
    """The exception for the provider's error sentence `text`."""
    return _REJECTIONS.get(_sentence_key(text), ProviderRejected)(text)


@dataclass(frozen=True, slots=True)
class PolledState:
    """One `<state>` of a state.php answer; `time_raw` is provider wall-clock, or ""."""

    id_sms: str
    status: str
    time_raw: str
    num_parts: int | None
    price: str | None


class _Transient(Exception):
    """An attempt worth repeating; holds a reason only, never the request."""


def xml_value(value: str) -> str:
    """`value` escaped for XML text or a double-quoted attribute, on one line.

    The provider wants no line breaks in the document: a break inside data is
    written as the two characters `\\n`.
    """
    if _NOT_XML.search(value):
        raise ValueError("value holds a character XML cannot carry")
    flat = value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    return escape(flat, {'"': "&quot;", "\t": "&#9;"})


def _parse(endpoint: str, content: bytes) -> Element:
    try:
        root: Element = fromstring(content, forbid_dtd=True)
    except XML_ERRORS as exc:
        failure = type(exc).__name__
    else:
        return root
    raise ProviderProtocolError(f"{endpoint}: unreadable answer ({failure})")


def _answer(endpoint: str, status: int, content: bytes) -> Element:
    if status != 200:
        raise ProviderProtocolError(f"{endpoint}: unexpected HTTP {status}")
    root = _parse(endpoint, content)
    if root.tag != "response":
        raise ProviderProtocolError(f"{endpoint}: answer is <{root.tag}>, not <response>")
    error = root.find("error")
    if error is not None:
        raise rejection("".join(error.itertext()))
    return root


def _polled_state(element: Element) -> PolledState | None:
    id_sms = element.get("id_sms", "")
    status = (element.text or "").strip()
    if not ID_SMS.fullmatch(id_sms) or not status:
        return None
    num_parts = element.get("num_parts", "")
    price = element.get("price", "")
    return PolledState(
        id_sms=id_sms,
        status=status,
        time_raw=element.get("time", "").strip(),
        num_parts=int(num_parts) if _NUM_PARTS.fullmatch(num_parts) else None,
        price=price if _PRICE.fullmatch(price) else None,
    )


class TargetSMSClient:
    """The provider's get_state.php and state.php, with retries on transient failures.

    Use as `async with TargetSMSClient(...) as client:`; it owns its HTTP client.
    `retries` counts the attempts after the first; the wait before each is
    random in [0, min(backoff_cap, backoff_base * 2**n)] seconds.
    """

    def __init__(
        self,
        api_url: str,
        login: str,
        password: SecretStr,
        *,
        timeout: httpx.Timeout | float,
        retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._base = httpx.URL(api_url if api_url.endswith("/") else api_url + "/")
        self._login = login
        self._security = SecretStr(_security(login, password))
        self._retries = retries
        self._wait = wait_random_exponential(multiplier=backoff_base, max=backoff_cap)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"TargetSMSClient(api_url={str(self._base)!r}, login={self._login!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_callback_url(self) -> str:
        """The push URL the provider has for us, or "" when none is set."""
        root = await self._call("get_state.php", '<get_state type="get"></get_state>')
        return _callback_url(root)

    async def set_callback_url(self, url: str) -> str:
        """Register `url` for status pushes; returns the URL the provider now has."""
        body = f'<get_state type="set">{xml_value(url)}</get_state>'
        return _callback_url(await self._call("get_state.php", body))

    async def fetch_states(self, ids: Sequence[str]) -> list[PolledState]:
        """The current states of `ids`; ids the provider does not know are left out."""
        if not ids:
            return []
        for id_sms in ids:
            if not ID_SMS.fullmatch(id_sms):
                raise ValueError(f"not an id_sms: {id_sms!r}")
        body = "".join(f"<id_sms>{id_sms}</id_sms>" for id_sms in ids)
        root = await self._call("state.php", f"<get_state>{body}</get_state>")
        polled = (_polled_state(element) for element in root.findall("state"))
        return [state for state in polled if state is not None]

    async def account_time(self) -> datetime | dt_time:
        """time.php: the account's local wall clock (naive); a bare time when no date is given.

        The manual shows both `2012-12-17 18:34:27` and `15:34:05`.
        """
        return _account_time(await self._call("time.php", ""))

    async def balance(self) -> Balance:
        """balance.php: money left, and per direction how many messages it buys."""
        return _balance(await self._call("balance.php", ""))

    async def stats(self, start: datetime, stop: datetime) -> StatsAnswer:
        """Per-part rows of the messages sent from minute `start` through minute `stop`.

        Both are provider wall-clock (naive) times, in the account's zone.
        """
        return _stats_answer(await self._call("stats.php", stats_request(start, stop)))

    async def _call(self, endpoint: str, payload: str) -> Element:
        status, content = await self._post(endpoint, self._document(payload))
        return _answer(endpoint, status, content)

    def _document(self, payload: str) -> SecretBytes:
        # Kept in SecretBytes, and httpx's request and response objects kept in
        # no frame that outlives a call, so that no traceback, not even one that
        # a crash reporter records with its locals, shows the password.
        security = self._security.get_secret_value()
        return SecretBytes(f"{_PROLOG}<request>{security}{payload}</request>".encode())

    async def _post(self, endpoint: str, body: SecretBytes) -> tuple[int, bytes]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        reason = "no attempt made"
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    return await self._attempt(endpoint, body, number)
        except _Transient as exc:
            reason = str(exc)
        raise ProviderUnavailable(f"{endpoint}: {reason}, after {self._retries + 1} attempts")

    async def _attempt(self, endpoint: str, body: SecretBytes, number: int) -> tuple[int, bytes]:
        # Raising only after leaving the `except` keeps the httpx exception, and
        # its request with the password, out of __context__.
        answer: tuple[int, bytes] | None = None
        started = time.perf_counter()
        try:
            response = await self._http.post(
                self._base.join(endpoint), content=body.get_secret_value(), headers=_HEADERS
            )
        except httpx.HTTPError as exc:
            outcome, transient = type(exc).__name__, isinstance(exc, httpx.TransportError)
        else:
            answer = (response.status_code, response.content)
            outcome, transient = f"HTTP {answer[0]}", answer[0] >= 500
            del response
        elapsed_ms = (time.perf_counter() - started) * 1000
        level = logging.WARNING if transient else logging.INFO
        logger.log(
            level, "POST %s: %s in %.0f ms, attempt %d", endpoint, outcome, elapsed_ms, number
        )
        if transient:
            raise _Transient(outcome)
        if answer is None:
            raise ProviderProtocolError(f"{endpoint}: {outcome}")
        return answer


def _security(login: str, password: SecretStr) -> str:
    try:
        secret = xml_value(password.get_secret_value())
    except ValueError:
        raise ValueError("the password holds a character XML cannot carry") from None
    return f'<security><login value="{xml_value(login)}"/><password value="{secret}"/></security>'


def _callback_url(root: Element) -> str:
    element = root.find("get_state")
    if element is None:
        raise ProviderProtocolError("get_state.php: answer has no <get_state>")
    return "".join(element.itertext()).strip()


# --- The account: time.php and balance.php ---------------------------------------------

_WALL_CLOCK = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2} )?[0-9]{2}:[0-9]{2}:[0-9]{2}")
_MONEY = re.compile(r"-?[0-9]{1,12}([.,][0-9]{1,6})?")
_SMS_LEFT = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class SmsLeft:
    """How many messages the money buys in one direction (`area`, the provider's name)."""

    area: str
    count: int


@dataclass(frozen=True, slots=True)
class Balance:
    money: Decimal
    currency: str | None
    sms: tuple[SmsLeft, ...]


def _account_time(root: Element) -> datetime | dt_time:
    element = root.find("time")
    text = "".join(element.itertext()).strip() if element is not None else ""
    if not _WALL_CLOCK.fullmatch(text):
        raise ProviderProtocolError("time.php: answer has no readable <time>")
    try:
        if " " in text:
            return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        return datetime.strptime(text, "%H:%M:%S").time()
    except ValueError:
        raise ProviderProtocolError("time.php: <time> is not a real date and time") from None


def _balance(root: Element) -> Balance:
    element = root.find("money")
    text = "".join(element.itertext()).strip() if element is not None else ""
    if element is None or not _MONEY.fullmatch(text):
        raise ProviderProtocolError("balance.php: answer has no readable <money>")
    left = (_sms_left(e) for e in root.findall("sms"))
    return Balance(
        money=Decimal(text.replace(",", ".")),
        currency=element.get("currency") or None,
        sms=tuple(sms for sms in left if sms is not None),
    )


def _sms_left(element: Element) -> SmsLeft | None:
    count = "".join(element.itertext()).strip()
    area = " ".join(element.get("area", "").split())
    if not _SMS_LEFT.fullmatch(count) or not area:
        return None
    return SmsLeft(area, int(count))


# --- stats.php: per-part statistics for reconciliation ---------------------------------


class BadDate(ProviderRejected):
    """ "Некорректный формат даты" (bad date)."""


class UnknownOperator(ProviderRejected):
    pass


_REJECTIONS |= {
    _sentence_key("Некорректный формат даты"): BadDate,
    _sentence_key("Такой оператор не обнаружен"): UnknownOperator,
}


@dataclass(frozen=True, slots=True)
class StatRow:
    """One `<stat>` of a stats.php answer: one *part* of a message.

    Times are provider wall-clock strings (`time` is when it was sent,
    `time_change_state` its last status change, "" when none); `price` is the
    price of this part as the provider wrote it (a decimal string).
    """

    id_sms: str
    status: str
    time_change_state: str
    time: str
    originator: str
    name_delivery: str
    operator: str
    phone: str
    part_no: int | None
    num_parts: int | None
    price: str | None
    text: str


@dataclass(frozen=True, slots=True)
class StatsAnswer:
    rows: list[StatRow]
    skipped: int  # <stat> elements without a valid id or status
    # num_stats as announced. The manual sets no limit on an answer; if one is
    # ever cut short, an announced total above the rows given says so.
    announced: int | None

    @property
    def truncated(self) -> bool:
        return self.announced is not None and self.announced > len(self.rows) + self.skipped


def stats_request(start: datetime, stop: datetime) -> str:
    """The `<stats>` element for sends from minute `start` through minute `stop` (inclusive).

    Both are provider wall-clock (naive) times; the hour and minute fields
    count together with the dates, so any minute-aligned window can be asked.
    """
    if stop < start:
        raise ValueError("stop is before start")
    fields = {
        "date_start": start.strftime("%Y-%m-%d"),
        "date_stop": stop.strftime("%Y-%m-%d"),
        "state": "",
        "originator": "",
        "phone": "",
        "operator": "",
        "from_hour": start.strftime("%H"),
        "from_minute": start.strftime("%M"),
        "to_hour": stop.strftime("%H"),
        "to_minute": stop.strftime("%M"),
    }
    return "<stats " + " ".join(f'{k}="{v}"' for k, v in fields.items()) + "/>"


def _small_int(value: str) -> int | None:
    return int(value) if _NUM_PARTS.fullmatch(value) else None


def _stat_row(element: Element) -> StatRow | None:
    get = element.get
    id_sms, status = get("id_sms", ""), get("status", "").strip()
    if not ID_SMS.fullmatch(id_sms) or not status:
        return None
    price = get("price", "").strip()
    return StatRow(
        id_sms=id_sms,
        status=status,
        time_change_state=get("time_change_state", "").strip(),
        time=get("time", "").strip(),
        originator=get("originator", ""),
        name_delivery=get("name_delivery", ""),
        operator=get("operator", ""),
        phone=get("phone", ""),
        part_no=_small_int(get("part_no", "")),
        num_parts=_small_int(get("num_parts", "")),
        price=price if _PRICE.fullmatch(price) else None,
        text=get("text", ""),
    )


def _stats_answer(root: Element) -> StatsAnswer:
    stats = root.find("stats")
    if stats is None:
        raise ProviderProtocolError("stats.php: answer has no <stats>")
    rows, skipped = [], 0
    for element in stats.iterfind("stat"):
        row = _stat_row(element)
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return StatsAnswer(rows, skipped, _small_int(stats.get("num_stats", "").strip()))
