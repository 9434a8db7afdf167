"""Logging set-up, and an access log that never prints the callback token.

uvicorn's own access log prints the request path, and the callback path holds
the secret token, so it is switched off (`serve` passes `access_log=False`) and
replaced by `RequestLogMiddleware`. A filter on every handler redacts callback
paths in any record as a second line of defence.

Every request gets an id: a well-formed incoming `X-Request-ID` (nginx sets
one) or a new one. It is echoed in the response's `X-Request-ID` and put on
every log line written while the request is handled. Lines are text or JSON
(`LOG_FORMAT`); either way CR, LF and other control characters in a value are
escaped, so a crafted path or header cannot forge a log line. In the text
format a traceback keeps its lines, each indented under its record.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.tokens import CALLBACK_PREFIX

REDACTED_TOKEN = "<token>"  # noqa: S105 (the placeholder that replaces a token)
# The lookahead skips a path already redacted (every access line's), so the
# second redaction, the handler's, finds nothing to replace.
CALLBACK_PATH = re.compile(
    f"({re.escape(CALLBACK_PREFIX)})(?!{re.escape(REDACTED_TOKEN)}(?:[\\s/?\"']|$))"
    + r"[^\s/?\"']+"
)

access_log = logging.getLogger("app.access")

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "client")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
TRACEBACK_HEAD = "Traceback (most recent call last):"
INDENT = "    "


def redact(text: str) -> str:
    # The substring test first: most text holds no callback path at all. A
    # function, not a template like r"\1<token>": re expands a template on
    # every call, match or not (2 us against 0.5 us per access line).
    return CALLBACK_PATH.sub(_redacted, text) if CALLBACK_PREFIX in text else text


def _redacted(match: re.Match[str]) -> str:
    return match[1] + REDACTED_TOKEN


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Kept formatted: the formatter would otherwise format it a second time.
        record.msg, record.args = redact(record.getMessage()), None
        return True


def escape_controls(text: str) -> str:
    """CR, LF and other control characters as visible escapes (tab is kept)."""
    return CONTROL_CHARACTERS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\r": "\\r", "\n": "\\n"}.get(char, f"\\x{ord(char):02x}")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


def indented(text: str) -> str:
    """Every line of `text` indented, controls escaped: a block under its record."""
    return "\n".join(INDENT + escape_controls(line) for line in text.splitlines())


# logging.Formatter's own defaults, named here for the cached second below.
TIME_FORMAT, MSEC_FORMAT = "%Y-%m-%d %H:%M:%S", "%s,%03d"


class TextFormatter(logging.Formatter):
    """One record starts each unindented line; a traceback follows it, indented.

    A traceback keeps its real newlines, so it reads as one. Every line of it
    is indented, so no text inside it (an exception's message, say) can start
    a line that looks like a record of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # logging's own: strftime per record, a tenth of an access line's cost.
        # The text of the second is kept and the milliseconds put after it.
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime(TIME_FORMAT, self.converter(second)))
        return MSEC_FORMAT % (self._second[1], record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message.rstrip("\r\n")
        # uvicorn logs a failed lifespan as a message holding a whole traceback.
        if message.startswith(TRACEBACK_HEAD):
            head, _, rest = message.partition("\n")
            record.message = head + "\n" + indented(redact(rest))
        else:
            record.message = escape_controls(message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return indented(redact(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:
        return indented(stack_info)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; json.dumps escapes every control character."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for field in ACCESS_FIELDS:
            if hasattr(record, field):
                line[field] = getattr(record, field)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    # No format of ours shows the caller's file, thread or process, and finding
    # them is a fifth of a record's cost (the logging HOWTO, "Optimization"):
    # with the access log on, one record per request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn writes its access log whenever the logger has a handler anywhere
    # up the tree, whatever `access_log=False` said: keep it handler-less.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers[:] = []
    uvicorn_access.propagate = False


def public_path(path: str) -> str:
    """The path as it may be logged or labelled: the token replaced (a callback
    path's own, or one inside any other path)."""
    if path.startswith(CALLBACK_PREFIX):
        return CALLBACK_PREFIX + REDACTED_TOKEN
    return redact(path)


# A random prefix per process and a counter: unique like a uuid4 (which took
# 1.3% of a 1-state callback), for the price of an integer increment. A forked
# child draws its own prefix.
class _RequestIds:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = ""
        self.counter = itertools.count(1)

    def new(self) -> str:
        if not self.prefix:
            self.prefix = os.urandom(8).hex()
        return f"{self.prefix}{next(self.counter):016x}"


_request_ids = _RequestIds()


def _new_request_id() -> str:
    return _request_ids.new()


os.register_at_fork(after_in_child=_request_ids.reset)


def _incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if VALID_REQUEST_ID.fullmatch(text) else None
    return None


class RequestLogMiddleware:
    """The request id (header and log lines), and the access log when `access_log`."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_request_id(scope["headers"]) or _new_request_id()
        # Not reset afterwards: uvicorn's own error line for this request comes
        # later in the same task, and each request runs in a task of its own.
        request_id.set(rid)
        header = (b"x-request-id", rid.encode())
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        if not self.access_log:
            await self.app(scope, receive, send_wrapper)
            return
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._log(scope, status["code"], time.perf_counter() - started)

    def _log(self, scope: Scope, code: int, seconds: float) -> None:
        client = (scope.get("client") or ("-", 0))[0]
        path = public_path(scope["path"])
        duration_ms = round(seconds * 1000, 1)
        # Formatted here, with no arguments left for the record to format again.
        access_log.info(
            f"{client} {scope['method']} {path} {code} {duration_ms:.1f}ms",
            extra={
                "method": scope["method"],
                "path": path,
                "status": code,
                "duration_ms": duration_ms,
                "client": client,
            },
        )
