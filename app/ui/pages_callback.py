"""The callback URL page: expected against registered; admins check it and register ours.

The URL holds the secret callback token, so the page shows it only redacted
(`/callbacks/targetsms/<token>`), to admins as to everyone: screenshots and
shoulders are not the place for it. The CLI prints it whole when needed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app import callback_url
from app.logs import redact
from app.provider import ProviderError, ProviderRejected, ProviderUnavailable
from app.ui.i18n import N_
from app.ui.overview import CALLBACK_CHECK_KEY, heartbeat
from app.ui.state import Admin, CheckedForm, SignedIn, View

router = APIRouter(prefix="/ui")
# An admin waits for the answer: one retry, as the admin API.
RETRIES = 1


@router.get("/callback-url")
async def callback_url_page(view: SignedIn) -> Response:
    return await _page(view)


@router.post("/callback-url/check")
async def check(view: Admin) -> Response:
    return await _page(view, *await _ask(view, register=False, force=False))


@router.post("/callback-url/register")
async def register(view: Admin, form: CheckedForm) -> Response:
    return await _page(view, *await _ask(view, register=True, force=form.get("force") == "yes"))


async def _page(
    view: View, result: dict[str, Any] | None = None, error: str | None = None, status: int = 200
) -> Response:
    runtime = view.runtime
    expected = callback_url.expected_url(runtime.settings, runtime.callback_token)
    last = await run_in_threadpool(_last_check, runtime.engine)
    return view.page(
        "callback_url.html",
        status,
        expected_url=redact(expected) if expected else None,
        last_check=last,
        result=result,
        error=error,
    )


def _last_check(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return heartbeat(conn, CALLBACK_CHECK_KEY)


async def _ask(
    view: View, *, register: bool, force: bool
) -> tuple[dict[str, Any] | None, str | None, int]:
    """Ask the provider (and register first if asked); (result, error message, status)."""
    settings, token = view.runtime.settings, view.runtime.callback_token
    expected = callback_url.expected_url(settings, token)
    try:
        client = callback_url.provider_client(settings, retries=RETRIES)
        async with client:
            if register:
                url = callback_url.url_to_set(settings, token, None)
                found = await callback_url.register(client, url, token, expected, force=force)
            else:
                found = await callback_url.current(client, expected)
    except callback_url.ProviderNotConfigured:
        return None, N_("Set TARGETSMS_LOGIN and TARGETSMS_PASSWORD first."), 503
    except callback_url.PublicUrlNotConfigured:
        return (
            None,
            N_("Set PUBLIC_URL first: without it there is no URL of ours to register."),
            503,
        )
    except callback_url.UrlRefused as exc:
        return None, exc.detail, 422
    except callback_url.NotConfirmed:
        return None, N_("The provider reports a different URL after setting it."), 502
    except ProviderRejected as exc:
        return None, exc.text[:200], 502
    except ProviderUnavailable:
        return None, N_("The provider did not answer."), 504
    except ProviderError:
        return None, N_("The provider answered something unreadable."), 502
    result = {
        "registered": register,
        "provider_url": redact(found.provider_url),
        "matches": found.matches,
    }
    return result, None, 200
