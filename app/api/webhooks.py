"""`/api/v1/admin/webhooks`: outbound webhook subscriptions (admin keys only).

A subscription's signing secret is in the answer to its creation and to
`rotate-secret`, and nowhere else: not in GET, logs or errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from app import cursors
from app.api.admin import RESPONSES as ADMIN_RESPONSES
from app.api.auth import AdminKey
from app.api.deps import RuntimeDep
from app.api.errors import ApiError, openapi_error
from app.models import STATUS_LENGTH
from app.runtime import Runtime
from app.webhooks import subscriptions, targets

PATH = "/admin/webhooks"
router = APIRouter(tags=["webhooks"], dependencies=[AdminKey])

# A 64-bit key: anything larger is no subscription (and must not reach the database).
WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Status = Annotated[str, StringConstraints(min_length=1, max_length=STATUS_LENGTH)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Description = Annotated[str, StringConstraints(max_length=200)]
# A fake: real secrets appear only in live answers.
EXAMPLE_SECRET = "whsec_ZXhhbXBsZS1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0LTAwMDA="  # noqa: S105
EXAMPLE_URL = "https://crm.example.org/hooks/sms-status"


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"url": EXAMPLE_URL, "statuses": ["deliver"]}},
    )

    url: Url = Field(description="https://... (http only with WEBHOOK_ALLOW_HTTP=true).")
    statuses: list[Status] | None = Field(
        default=None, max_length=50, description="Only these statuses; null or absent: all."
    )
    final_only: bool = Field(default=False, description="Only final statuses.")
    description: Description = ""


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"enabled": False}})

    url: Url | None = None
    statuses: list[Status] | None = Field(default=None, max_length=50)
    final_only: bool | None = None
    description: Description | None = None
    enabled: bool | None = Field(
        default=None, description="false pauses; true resumes from the cursor (also after 410)."
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"since": "2026-11-25T00:00:00Z"}}
    )

    after: str | None = Field(default=None, description="A change-feed cursor: resend after it.")
    since: AwareDatetime | None = Field(
        default=None, description="Resend the changes received at or after this time."
    )


class Subscription(BaseModel):
    id: int
    url: str
    statuses: list[str] | None
    final_only: bool
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="paused, gone (410) or failing.")
    cursor: str = Field(description="Change-feed cursor: everything up to it was delivered.")
    lag_events: int = Field(description="Feed positions after the cursor (capped at 1,000,000).")
    lag_seconds: float = Field(description="Age of the oldest change after the cursor.")
    retrying_webhook_id: str | None = Field(description="The batch being retried, if any.")
    attempts: int = Field(description="Failed attempts of the batch being retried.")
    next_attempt_at: datetime | None
    failing_since: datetime | None
    last_attempt_at: datetime | None
    last_outcome: str | None = Field(description="delivered, failed, gone or refused.")
    last_status_code: int | None
    last_error: str | None
    previous_secret_until: datetime | None = Field(
        description="Until then deliveries are signed with the previous secret too."
    )
    created_at: datetime
    updated_at: datetime


class SubscriptionWithSecret(Subscription):
    secret: str = Field(description="The signing secret: shown now, never again.")

    model_config = ConfigDict(json_schema_extra={"example": {"id": 1, "secret": EXAMPLE_SECRET}})


class Attempt(BaseModel):
    attempted_at: datetime
    webhook_id: str
    first_cursor: str
    last_cursor: str
    changes: int
    outcome: str
    status_code: int | None
    latency_ms: int | None
    error: str | None
    response_excerpt: str | None = Field(description="The first KiB of the answer.")


# The admin API's 401 and 403, and its way of describing an error in OpenAPI.
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: ADMIN_RESPONSES[401],
    403: ADMIN_RESPONSES[403],
    404: openapi_error("No such subscription.", "webhook_not_found", "No webhook subscription 7."),
    422: openapi_error(
        "Invalid input, or a refused URL: webhook_url_invalid, webhook_url_not_https, "
        "webhook_host_unresolvable, webhook_target_refused (loopback, link-local, multicast "
        "or unspecified address not in WEBHOOK_ALLOWED_NETWORKS); for replay "
        "invalid_cursor, cursor_ahead, replay_point_required.",
        "webhook_target_refused",
        "The target resolves to 169.254.169.254, a link-local address: refused.",
    ),
}


async def _checked(url: str, runtime: Runtime) -> str:
    try:
        await targets.check(url, runtime.settings)
    except targets.TargetRefused as exc:
        raise ApiError(422, exc.code, exc.detail) from None
    return url


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except subscriptions.NotFound:
        raise ApiError(404, "webhook_not_found", "No such webhook subscription.") from None


def _with_secret(created: subscriptions.Created) -> dict[str, Any]:
    return created.view | {"secret": created.secret}


@router.post(
    PATH,
    status_code=201,
    summary="Subscribe a URL to the change feed",
    response_model=SubscriptionWithSecret,
    responses=RESPONSES,
)
async def create_webhook(body: SubscriptionIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Delivers every change stored from now on that passes the filter. The answer
    holds the signing secret: keep it, it is not shown again."""
    url = await _checked(body.url, runtime)
    created = await _call(
        subscriptions.create,
        runtime.engine,
        url,
        statuses=body.statuses,
        final_only=body.final_only,
        description=body.description,
    )
    runtime.deliverer.kick()
    return _with_secret(created)


@router.get(
    PATH, summary="Every subscription", response_model=list[Subscription], responses=RESPONSES
)
async def list_webhooks(runtime: RuntimeDep) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await _call(subscriptions.list_all, runtime.engine)
    return found


@router.get(
    PATH + "/{webhook_id}",
    summary="One subscription and its delivery state",
    response_model=Subscription,
    responses=RESPONSES,
)
async def get_webhook(webhook_id: WebhookId, runtime: RuntimeDep) -> dict[str, Any]:
    found: dict[str, Any] = await _call(subscriptions.get, runtime.engine, webhook_id)
    return found


@router.patch(
    PATH + "/{webhook_id}",
    summary="Change, pause or resume a subscription",
    response_model=Subscription,
    responses=RESPONSES,
)
async def patch_webhook(
    webhook_id: WebhookId, body: SubscriptionPatch, runtime: RuntimeDep
) -> dict[str, Any]:
    """Fields left out stay as they are. `enabled: true` resumes from the cursor,
    nothing skipped. A new filter applies from the cursor on."""
    fields = {key: getattr(body, key) for key in body.model_fields_set}
    for key in ("url", "final_only", "description", "enabled"):
        if key in fields and fields[key] is None:
            raise ApiError(422, "invalid_parameters", f"{key}: may not be null")
    if "url" in fields:
        await _checked(fields["url"], runtime)
    changed: dict[str, Any] = await _call(subscriptions.change, runtime.engine, webhook_id, fields)
    runtime.deliverer.kick()
    return changed


@router.delete(
    PATH + "/{webhook_id}", status_code=204, summary="Delete a subscription", responses=RESPONSES
)
async def delete_webhook(webhook_id: WebhookId, runtime: RuntimeDep) -> None:
    await _call(subscriptions.remove, runtime.engine, webhook_id)


@router.post(
    PATH + "/{webhook_id}/rotate-secret",
    summary="A new signing secret (the old one still signs during the overlap)",
    response_model=SubscriptionWithSecret,
    responses=RESPONSES,
)
async def rotate_secret(webhook_id: WebhookId, runtime: RuntimeDep) -> dict[str, Any]:
    """For WEBHOOK_SECRET_OVERLAP_HOURS deliveries carry two signatures, one per
    secret: move the consumer to the new secret within that time."""
    hours = runtime.settings.webhook_secret_overlap_hours
    created = await _call(subscriptions.rotate, runtime.engine, webhook_id, hours)
    return _with_secret(created)


@router.post(
    PATH + "/{webhook_id}/replay",
    summary="Rewind: deliver again everything after a cursor or since a time",
    response_model=Subscription,
    responses=RESPONSES,
)
async def replay_webhook(
    webhook_id: WebhookId, body: ReplayIn, runtime: RuntimeDep
) -> dict[str, Any]:
    if (body.after is None) == (body.since is None):
        raise ApiError(422, "replay_point_required", "Give exactly one of after and since.")
    after = cursors.decode(cursors.CHANGES, body.after) if body.after is not None else None
    try:
        replayed: dict[str, Any] = await _call(
            subscriptions.replay, runtime.engine, webhook_id, after=after, since=body.since
        )
    except subscriptions.CursorAhead:
        raise ApiError(422, "cursor_ahead", "The cursor is beyond the newest change.") from None
    runtime.deliverer.kick()
    return replayed


@router.get(
    PATH + "/{webhook_id}/attempts",
    summary="Recent delivery attempts, newest first",
    response_model=list[Attempt],
    responses=RESPONSES,
)
async def list_attempts(
    webhook_id: WebhookId,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await _call(
        subscriptions.attempts, runtime.engine, webhook_id, limit
    )
    return found
