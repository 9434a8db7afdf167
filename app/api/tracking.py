"""`POST /api/v1/messages`: the sending application registers the ids it got."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.auth import ReadKey
from app.api.body import BodyRefused, read_body
from app.api.deps import RuntimeDep
from app.api.errors import ApiError, error_responses, openapi_error
from app.protocol import ID_SMS_ANCHORED, DocumentError
from app.tracking import SendAnswer, SendAnswerError, Sent, Tracked, parse_send_answer, track

router = APIRouter(tags=["tracking"], dependencies=[ReadKey])

IdSms = Annotated[str, StringConstraints(pattern=ID_SMS_ANCHORED)]
SEND_ANSWER_EXAMPLE = (
    '<?xml version="1.0" encoding="utf-8"?>\n<response>\n'
    '<information number_sms="1" id_sms="12345" parts="2">send</information>\n'
    '<information number_sms="2" parts="1">Номер телефона присутствует в стоп-листе.'
    "</information>\n</response>"
)


class TrackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"ids": ["12345"]}})

    ids: list[IdSms] = Field(
        min_length=1, max_length=10_000, description="Provider message ids (1 to 19 digits)."
    )


class FailedEntry(BaseModel):
    number_sms: str | None = Field(description="The sender's own index in its send request.")
    error: str = Field(description="The provider's sentence for this message.")


class TrackResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "tracked": ["12345"],
                "already_known": [],
                "failed": [
                    {"number_sms": "2", "error": "Номер телефона присутствует в стоп-листе."}
                ],
            }
        }
    )

    tracked: list[str] = Field(description="Ids recorded now, waiting for a status.")
    already_known: list[str] = Field(description="Ids recorded before (tracked or with a status).")
    failed: list[FailedEntry] = Field(
        description="Send-answer entries without an id: the provider did not accept them, "
        "nothing is recorded."
    )


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Nothing new: every id was already known (or all entries failed)."},
    201: {"model": TrackResult, "description": "At least one id was recorded now."},
    **error_responses(401),
    413: openapi_error("Body over `MAX_BODY_BYTES`.", "body_too_large", "..."),
    422: openapi_error(
        "Invalid ids, an unreadable send answer, or the provider's `<error>` answer.",
        "invalid_ids",
        "ids.0: String should match pattern ...",
    ),
}
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TrackRequest.model_json_schema()},
            "application/xml": {
                "schema": {"type": "string"},
                "example": SEND_ANSWER_EXAMPLE,
            },
        },
    }
}


@router.post(
    "/messages",
    summary="Track sent ids (a JSON list, or the provider's send answer as it is)",
    response_model=TrackResult,
    responses=RESPONSES,
    openapi_extra=OPENAPI_BODY,
)
async def track_messages(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Records each id as waiting for a status, so that it shows in the read API and
    the poller asks the provider about it if no callback comes. Send either
    `{"ids": [...]}` or the XML answer the provider gave to your send request,
    unchanged (`Content-Type` with `xml`, or a body starting with `<`); its
    entries without `id_sms` are listed under `failed`. Idempotent: an id sent
    again is listed under `already_known`. Any API key may call this."""
    settings = runtime.settings
    try:
        body = await read_body(request, settings.max_body_bytes, runtime.bodies)
    except BodyRefused as exc:
        raise ApiError(exc.status, exc.code, exc.reason, exc.headers) from None
    answer = _read(body, request.headers.get("content-type", ""), settings.max_states_per_document)
    now = datetime.now(UTC)
    result = await run_in_threadpool(track, runtime.engine, answer.sent, now)
    return _answer(result, answer)


def _read(body: bytes, content_type: str, max_entries: int) -> SendAnswer:
    if "xml" in content_type.lower() or body.lstrip().startswith(b"<"):
        try:
            return parse_send_answer(body, max_entries)
        except SendAnswerError as exc:
            raise ApiError(422, "send_failed", str(exc)) from None
        except DocumentError as exc:
            raise ApiError(422, "invalid_send_answer", str(exc)) from None
    try:
        ids = TrackRequest.model_validate_json(body).ids
    except ValidationError as exc:
        raise ApiError(422, "invalid_ids", _problems(exc)) from None
    return SendAnswer(sent=[Sent(id_sms) for id_sms in ids])


def _problems(exc: ValidationError) -> str:
    # The offending value is left out: it is the caller's own input, possibly huge.
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )[:500]


def _answer(result: Tracked, answer: SendAnswer) -> JSONResponse:
    content = TrackResult(
        tracked=result.tracked,
        already_known=result.already_known,
        failed=[FailedEntry(number_sms=f.number_sms, error=f.error) for f in answer.failed],
    ).model_dump()
    return JSONResponse(content, status_code=201 if result.tracked else 200)
