"""`POST /callbacks/targetsms/{token}`: the provider's status push.

The provider's pushes are the one path that must keep up with someone else's
rate, so `CallbackEndpoint` answers them ahead of FastAPI's routing: its
exception, routing, exit-stack and dependency layers cost about 45% of a
1-state callback's CPU in process (317 us -> 160-180 us, bench/RESULTS.md),
for what is a prefix test and an attribute read here. The route stays declared so that the
OpenAPI document describes the endpoint; both run `receive_callback`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.api.body import BodyRefused, read_body
from app.api.deps import RuntimeDep
from app.config import Settings
from app.ingest import Submission
from app.network import allowed
from app.protocol import DocumentError, ParsedDocument, ack_document, error_document, parse_document
from app.runtime import Runtime, get_runtime
from app.tokens import CALLBACK_PREFIX, tokens_match
from app.writer import StorageUnavailable

log = logging.getLogger(__name__)
router = APIRouter(tags=["callbacks"])

XML = "application/xml; charset=utf-8"
# Parsing a large document takes milliseconds: do it off the event loop.
PARSE_IN_THREAD_BYTES = 64 * 1024

TokenPath = Annotated[
    str, Path(description="The secret callback token (see `targetsms-receiver callback-path`).")
]


CALLBACK_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The ids whose states are committed (stored now or earlier).",
        "content": {"application/xml": {"example": ack_document(["12345", "12346"]).decode()}},
    },
    400: {"description": "Malformed, hostile or empty document; nothing stored."},
    403: {"description": "Client outside `CALLBACK_ALLOWED_NETWORKS`; nothing stored."},
    404: {"description": "Wrong token; nothing stored."},
    408: {"description": "Body not complete within `BODY_READ_TIMEOUT_SECONDS`; nothing stored."},
    413: {"description": "Body larger than `MAX_BODY_BYTES`; nothing stored."},
    503: {
        "description": "The database could not commit, or bodies being received already hold "
        "`MAX_BODIES_IN_FLIGHT_BYTES` (with `Retry-After`); no id acknowledged, send again."
    },
}


@router.post(
    CALLBACK_PREFIX + "{token}",
    summary="Receive a TargetSMS status push",
    response_class=Response,
    responses=CALLBACK_RESPONSES,
)
async def receive_callback(token: TokenPath, request: Request, runtime: RuntimeDep) -> Response:
    """The provider POSTs `<request><state id_sms=".." time="..">STATUS</state>...</request>`;
    the answer lists every id whose state is committed. Ids left out are sent again."""
    settings = runtime.settings
    client = request.client.host if request.client else None
    if settings.callback_allowed_networks and not allowed(
        client, tuple(settings.callback_allowed_networks)
    ):
        return _xml(403, error_document("forbidden"))
    if not tokens_match(token, runtime.callback_token) and not _previous_token(token, settings):
        return _xml(404, error_document("not found"))
    try:
        body = await read_body(request, settings.max_body_bytes, runtime.bodies)
    except BodyRefused as exc:
        return _xml(exc.status, error_document(exc.reason), exc.headers)
    except ClientDisconnect:
        # Nothing was read whole, so nothing is stored; the sender retries.
        return _xml(400, error_document("the client went away before the body was complete"))
    received_at = datetime.now(UTC)
    try:
        return await _store(runtime, body, client, received_at)
    except Exception as exc:
        # A bug of ours, never the sender's: keep the document, acknowledge
        # nothing (the provider sends it again), and say why in the log.
        log.exception("callback failed unexpectedly (%s); answered 503", type(exc).__name__)
        failed = Submission([], "callback", received_at, body, client, _internal_error(exc))
        await _keep_rejected(runtime, failed)
        return _internal_error_answer()


class CallbackEndpoint:
    """ASGI middleware: `POST /callbacks/targetsms/{token}` answered here, any
    other request passed on. It sits inside the request log (request id, access
    line) and the proxy-header rule (the client's address), like every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _callback_token(scope)
        if token is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await receive_callback(token, request, await get_runtime(request))
        except Exception as exc:
            # Before the body was read (after it, receive_callback answers
            # itself): nothing to keep, nothing acknowledged.
            log.exception("callback failed unexpectedly (%s); answered 503", type(exc).__name__)
            response = _internal_error_answer()
        await response(scope, receive, send)


def _callback_token(scope: Scope) -> str | None:
    """The token of a callback POST (one path segment, as the route's `{token}`)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not path.startswith(CALLBACK_PREFIX):
        return None
    token = path[len(CALLBACK_PREFIX) :]
    return token if token and "/" not in token else None


def _internal_error_answer() -> Response:
    return _xml(503, error_document("temporarily unable to store: internal error"))


async def _store(
    runtime: Runtime, body: bytes, client: str | None, received_at: datetime
) -> Response:
    try:
        parsed = await _parse(body, runtime)
    except DocumentError as exc:
        metrics.PARSE_ERRORS.inc()
        rejected = Submission([], "callback", received_at, body, client, str(exc)[:200])
        await _keep_rejected(runtime, rejected)
        return _xml(400, error_document(str(exc)))
    metrics.record_rejected_states(parsed.skipped)
    received = Submission(parsed.states, "callback", received_at, body, client)
    try:
        outcome = await runtime.writer.submit(received)
    except StorageUnavailable as exc:
        return _xml(503, error_document(f"temporarily unable to store: {exc}"))
    metrics.record_states(
        stored=outcome.stored,
        duplicates=outcome.duplicates,
        conflicts=outcome.conflicts,
        acked=len(outcome.acked_ids),
    )
    return _xml(200, ack_document(outcome.acked_ids))


def _internal_error(exc: Exception) -> str:
    return f"internal error ({type(exc).__name__}): answered 503, nothing acknowledged"


def _previous_token(token: str, settings: Settings) -> bool:
    previous = settings.callback_token_previous
    if previous is None or not previous.get_secret_value():
        return False
    matched = tokens_match(token, previous.get_secret_value())
    if matched:
        metrics.PREVIOUS_TOKEN.inc()
    return matched


async def _parse(body: bytes, runtime: Runtime) -> ParsedDocument:
    settings = runtime.settings
    if len(body) < PARSE_IN_THREAD_BYTES:
        return parse_document(body, settings.zone, settings.max_states_per_document)
    return await run_in_threadpool(
        parse_document, body, settings.zone, settings.max_states_per_document
    )


async def _keep_rejected(runtime: Runtime, rejected: Submission) -> None:
    """Keep a document that stores no state, for audit; best effort."""
    try:
        await runtime.writer.submit(rejected)
    except StorageUnavailable:
        log.warning("a rejected document could not be kept for audit")


def _xml(status: int, content: bytes, headers: dict[str, str] | None = None) -> Response:
    metrics.record_answer(status)
    return Response(content=content, status_code=status, media_type=XML, headers=headers)
