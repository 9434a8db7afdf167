"""Wires the dashboard into the app: routes, static files, error pages, security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ui import (
    pages_auth,
    pages_callback,
    pages_messages,
    pages_overview,
    pages_webhooks,
)
from app.ui.state import Forbidden, LoginRequired, Unavailable, get_view

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"

# No inline script or style anywhere: CSS and JS are files under /ui/static/.
CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def install(app: FastAPI) -> None:
    for module in (pages_auth, pages_overview, pages_messages, pages_callback, pages_webhooks):
        app.include_router(module.router, include_in_schema=False)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_middleware(SecurityHeaders)


async def _login_required(request: Request, _exc: Exception) -> Response:
    return RedirectResponse(f"{PREFIX}/login", status_code=303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Forbidden)
    view = await get_view(request)
    return view.page("forbidden.html", 403, reason=exc.reason)


async def _unavailable(_request: Request, _exc: Exception) -> Response:
    body = "The database cannot be reached; try again in a moment."
    headers = {"Retry-After": "5", "Cache-Control": "no-store"}
    return PlainTextResponse(body, status_code=503, headers=headers)


class SecurityHeaders:
    """CSP and friends on every response under /ui/ (pages, fragments, static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
