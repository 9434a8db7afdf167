"""API errors, rendered one way: `{"error": code, "detail": text}`.

    ApiError                  a failure the caller can act on (its own status)
    RequestValidationError    422 invalid_parameters
    database errors           503 database_unavailable, with Retry-After
      (sqlalchemy OperationalError, InterfaceError: refused, lost, locked;
       the pool's TimeoutError: every connection busy)
    anything else             500 internal_error, with the request id, the
                              traceback logged (`LastResort`)

`openapi_error` and `error_responses` describe these answers in the OpenAPI
document, so every route declares its errors the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import public_path, request_id

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5  # after a 503: database down, or too many bodies in flight
DATABASE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
DATABASE_UNAVAILABLE = "The database is unavailable; try again later."


class ErrorBody(BaseModel):
    error: str
    detail: str


class InternalErrorBody(ErrorBody):
    request_id: str


class ApiError(Exception):
    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def openapi_error(
    description: str, error: str, detail: str, model: type[BaseModel] = ErrorBody
) -> dict[str, Any]:
    """One OpenAPI `responses` entry for an error answer."""
    return {
        "model": model,
        "description": description,
        "content": {"application/json": {"example": {"error": error, "detail": detail}}},
    }


COMMON_ERRORS: dict[int, dict[str, Any]] = {
    401: openapi_error(
        "No API key, a wrong one, or none configured.",
        "unauthorized",
        "Send 'Authorization: Bearer <key>'.",
    ),
    404: openapi_error("No such message.", "not_found", "No message with id_sms '12345'."),
    422: openapi_error(
        "A parameter is invalid (including a tampered cursor).",
        "invalid_cursor",
        "The cursor is not one this API handed out.",
    ),
    500: openapi_error(
        "An unexpected error; it is logged with its traceback under `request_id`.",
        "internal_error",
        "An unexpected error occurred.",
        InternalErrorBody,
    ),
    503: openapi_error(
        "The database is down, unreachable or busy; `Retry-After` says when to try again.",
        "database_unavailable",
        DATABASE_UNAVAILABLE,
    ),
}
COMMON_ERRORS[503]["headers"] = {
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the usual errors; 500 and 503 are added to every list."""
    return {status: COMMON_ERRORS[status] for status in (*statuses, 500, 503)}


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return error_response(422, "invalid_parameters", problems)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The driver's message (host, port, reason) is for the log, not the caller.
    cause = getattr(exc, "orig", None) or exc
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    log.warning(
        "database unavailable on %s %s: %s: %s",
        request.method,
        public_path(request.url.path),
        type(cause).__name__,
        reason[:300],
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return error_response(503, "database_unavailable", DATABASE_UNAVAILABLE, headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, _database_unavailable)


class LastResort:
    """Any other exception: logged with its traceback, answered with a JSON 500.

    Starlette's own last handler answers plain text and re-raises, so the
    server logs the error a second time; this one answers and stops there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            path = public_path(scope["path"])
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not started:  # else the server cuts the half-sent answer off
                rid = request_id.get() or "-"
                body = {"error": "internal_error", "detail": "An unexpected error occurred."}
                await JSONResponse(body | {"request_id": rid}, status_code=500)(
                    scope, receive, send
                )
