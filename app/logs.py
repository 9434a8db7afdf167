"""Logging set-up, and an access log that never prints the callback token.

uvicorn's own access log prints the request path, and the callback path holds
the secret token, so it is switched off (`serve` passes `access_log=False`) and
replaced by `AccessLogMiddleware`. A filter on every handler redacts callback
paths in any record as a second line of defence.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CALLBACK_PREFIX = "/callbacks/targetsms/"
CALLBACK_PATH = re.compile(r"(/callbacks/targetsms/)[^\s/?\"']+")
REDACTED = r"\1<token>"

access_log = logging.getLogger("app.access")


def redact(text: str) -> str:
    return CALLBACK_PATH.sub(REDACTED, text)


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def public_path(path: str) -> str:
    """The path as it may be logged or labelled: the token replaced."""
    if path.startswith(CALLBACK_PREFIX):
        return CALLBACK_PREFIX + "<token>"
    return path


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                "%s %s %s %d %.1fms",
                client[0],
                scope["method"],
                public_path(scope["path"]),
                status["code"],
                (time.perf_counter() - started) * 1000,
            )
