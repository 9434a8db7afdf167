"""Sign-in, sign-out and the language and time-zone preferences."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.ui.i18n import LANGUAGES
from app.ui.session import new_session, set_cookie
from app.ui.state import (
    LANGUAGE_COOKIE,
    ZONE_COOKIE,
    CheckedForm,
    SignedIn,
    ViewDep,
    known_zones,
)

router = APIRouter(prefix="/ui")
log = logging.getLogger("app.ui")
PREFERENCE_MAX_AGE = 365 * 24 * 3600
MAX_KEY_LENGTH = 512


@router.get("")
async def root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/login")
async def login_page(view: ViewDep) -> Response:
    if view.session.signed_in:
        return RedirectResponse("/ui/", status_code=303)
    return view.page("login.html", error=None)


@router.post("/login")
async def login(view: ViewDep, form: CheckedForm) -> Response:
    client = _client(view.request)
    wait = view.ui.limiter.attempt(client)
    if wait:
        log.warning("dashboard sign-in refused: too many attempts from %s", client)
        return view.page("login.html", 429, error="too_many", retry_after=int(wait) + 1)
    key = form.get("key")
    sessions = view.ui.sessions
    key_hash = sessions.key_hash(key) if isinstance(key, str) and key else ""
    role = sessions.role_of(key_hash) if key_hash and len(str(key)) <= MAX_KEY_LENGTH else None
    if role is None:
        # Never the key: only who tried.
        log.warning("dashboard sign-in failed: unknown key from %s", client)
        return view.page("login.html", 401, error="bad_key")
    log.info("dashboard sign-in: %s session from %s", role, client)
    response = RedirectResponse("/ui/", status_code=303)
    sessions.write(view.request, response, new_session(key_hash, role))  # a new CSRF token too
    return response


@router.post("/logout")
async def logout(view: SignedIn, _form: CheckedForm) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    view.ui.sessions.clear(view.request, response)
    return response


@router.post("/preferences")
async def preferences(view: ViewDep, form: CheckedForm) -> Response:
    """The language and time zone, each kept in a cookie of its own."""
    response = RedirectResponse(_back_to(form.get("back")), status_code=303)
    language, zone = form.get("language"), form.get("zone")
    if isinstance(language, str) and language in LANGUAGES:
        set_cookie(view.request, response, LANGUAGE_COOKIE, language, PREFERENCE_MAX_AGE)
    if isinstance(zone, str) and zone.strip() in known_zones():
        set_cookie(view.request, response, ZONE_COOKIE, zone.strip(), PREFERENCE_MAX_AGE)
    return response


def _back_to(back: object) -> str:
    """A path of ours to return to; anything else (another site, `//host`) gives the overview."""
    if not isinstance(back, str) or not back.startswith("/ui/") or back.startswith("//"):
        return "/ui/"
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or "\\" in back:
        return "/ui/"
    return back


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"
