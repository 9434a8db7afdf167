"""The webhooks page: every subscription's delivery state and recent attempts; admins
pause, resume, rotate the secret and replay, through the admin API's own code
(`app/webhooks/subscriptions.py`).

A rotated secret is shown once, on the answer to the rotation, and never logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from app import cursors
from app.api.errors import ApiError
from app.ui.i18n import N_
from app.ui.state import Admin, CheckedForm, SignedIn, View
from app.webhooks import subscriptions

router = APIRouter(prefix="/ui")
ATTEMPTS_SHOWN = 10
WebhookId = Path(ge=1, le=2**63 - 1)


@router.get("/webhooks")
async def webhooks_page(view: SignedIn) -> Response:
    return await _page(view)


@router.post("/webhooks/{webhook_id}/pause")
async def pause(view: Admin, webhook_id: int = WebhookId) -> Response:
    return await _act(view, webhook_id, N_("Paused."), subscriptions.change, {"enabled": False})


@router.post("/webhooks/{webhook_id}/resume")
async def resume(view: Admin, webhook_id: int = WebhookId) -> Response:
    done = N_("Resumed from its cursor.")
    return await _act(view, webhook_id, done, subscriptions.change, {"enabled": True})


@router.post("/webhooks/{webhook_id}/rotate")
async def rotate(view: Admin, webhook_id: int = WebhookId) -> Response:
    hours = view.runtime.settings.webhook_secret_overlap_hours
    try:
        created = await run_in_threadpool(
            subscriptions.rotate, view.runtime.engine, webhook_id, hours
        )
    except subscriptions.NotFound:
        return await _page(view, error=N_("No such subscription."), status=404)
    done = N_("A new secret: copy it now, it is not shown again.")
    return await _page(view, done=done, secret=(webhook_id, created.secret))


@router.post("/webhooks/{webhook_id}/replay")
async def replay(view: Admin, form: CheckedForm, webhook_id: int = WebhookId) -> Response:
    try:
        point = _replay_point(form)
    except ValueError as exc:
        return await _page(view, error=str(exc), status=422)
    try:
        await run_in_threadpool(
            lambda: subscriptions.replay(view.runtime.engine, webhook_id, **point)
        )
    except subscriptions.NotFound:
        return await _page(view, error=N_("No such subscription."), status=404)
    except subscriptions.CursorAhead:
        return await _page(view, error=N_("The cursor is beyond the newest change."), status=422)
    view.runtime.deliverer.kick()
    return await _page(view, done=N_("Rewound: everything after that point is sent again."))


def _replay_point(form: FormData) -> dict[str, Any]:
    """{"after": feed position} or {"since": aware time}, from exactly one of the fields."""
    after, since = str(form.get("after") or "").strip(), str(form.get("since") or "").strip()
    if bool(after) == bool(since):
        raise ValueError(N_("Give exactly one of a change-feed cursor and a time."))
    if after:
        try:
            return {"after": cursors.decode(cursors.CHANGES, after)}
        except ApiError:
            raise ValueError(N_("That is not a change-feed cursor.")) from None
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(N_("The time is ISO 8601 with its offset, e.g. 2026-11-25T00:00:00Z."))
    return {"since": moment}


async def _act(
    view: View, webhook_id: int, done: str, action: Any, fields: dict[str, Any]
) -> Response:
    try:
        await run_in_threadpool(action, view.runtime.engine, webhook_id, fields)
    except subscriptions.NotFound:
        return await _page(view, error=N_("No such subscription."), status=404)
    view.runtime.deliverer.kick()
    return await _page(view, done=done)


async def _page(
    view: View,
    *,
    done: str | None = None,
    error: str | None = None,
    secret: tuple[int, str] | None = None,
    status: int = 200,
) -> Response:
    def read() -> list[dict[str, Any]]:
        engine = view.runtime.engine
        found = subscriptions.list_all(engine)
        for sub in found:
            sub["recent"] = subscriptions.attempts(engine, sub["id"], ATTEMPTS_SHOWN)
        return found

    subs = await run_in_threadpool(read)
    return view.page("webhooks.html", status, subs=subs, done=done, error=error, new_secret=secret)
