"""What every dashboard request starts from: the app's UI state and the request's view.

`View` is the request seen by a page: its session (a fresh anonymous one is
made, and its cookie set, when there is none), language, time zone and clock.
The dependencies below turn "not signed in", "no CSRF token" and "not an
admin" into the exceptions that `install` renders (redirect, 403).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from fastapi import Depends
from markupsafe import Markup
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.config import Settings
from app.runtime import Runtime, get_runtime
from app.tokens import configured_or_stored
from app.ui.buckets import EventBuckets, bucket_of
from app.ui.cost_panel import CostPanel
from app.ui.i18n import N_, choose_language
from app.ui.limits import AttemptLimiter
from app.ui.render import clock_time, html, local_time, utc_time, zone_label
from app.ui.session import SECRET_KEY, Session, Sessions, csrf_matches, new_session

log = logging.getLogger("app.ui")
LANGUAGE_COOKIE = "tsr_ui_lang"
WARM_UP_SPAN = timedelta(days=31)  # the overview's longest window, and a little more
ZONE_COOKIE = "tsr_ui_tz"


class UiState:
    """The dashboard's part of a running app: sessions, the sign-in limiter, cached figures."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.limiter = AttemptLimiter(settings.ui_login_attempts_per_minute)
        self.buckets = EventBuckets()
        self.cost = CostPanel(engine, settings)
        self.warmed_up = threading.Event()  # set once the warm-up has ended, well or not
        self._sessions: Sessions | None = None
        self._lock = threading.Lock()

    def settle(self, timeout: float) -> None:
        """Wait for the background work started so far (tests: before the tables go)."""
        self.warmed_up.wait(timeout)
        self.cost.idle.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._sessions is not None

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:
            raise RuntimeError("UiState.load() has not run")
        return self._sessions

    def load(self) -> None:
        """Read (or make and store) the session secret. On first use, not at start:
        the service must start, and answer callbacks with 503, while the database is down."""
        with self._lock:
            if self._sessions is None:
                secret = configured_or_stored(self.settings.session_secret, self.engine, SECRET_KEY)
                self._sessions = Sessions(self.settings, secret)


def ui_state(settings: Settings, engine: Engine) -> UiState:
    """Built in the app's lifespan; starts counting the overview's closed intervals,
    and adding up its cost panel, in the background."""
    state = UiState(settings, engine)
    state.cost.start(datetime.now(UTC))
    threading.Thread(target=_warm_up, args=(state, engine), name="ui-warm-up", daemon=True).start()
    return state


class Unavailable(Exception):
    """The database cannot be reached: 503."""


def _warm_up(state: UiState, engine: Engine) -> None:
    """Read (and, the first time, count and store) a month of closed intervals now
    rather than in the first overview request (a first count takes seconds on
    millions of events; an overview asked meanwhile waits for it)."""
    now = datetime.now(UTC)
    try:
        with engine.connect() as conn:
            state.buckets.counts(conn, bucket_of(now - WARM_UP_SPAN), now)
    except Exception as exc:  # the overview counts on first use instead
        log.warning("dashboard warm-up failed (%s); counting on first use", type(exc).__name__)
    finally:
        state.warmed_up.set()


class LoginRequired(Exception):
    """A page asked for without a valid session: redirect to the sign-in page."""


class Forbidden(Exception):
    """403: no valid CSRF token, not signed in (for a POST), or not an admin."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@cache
def known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


@cache
def zone_options() -> Markup:
    """The ~600 <option>s of the zone picker, built once: rendering them on every
    page cost more than the rest of a small page."""
    return Markup("").join(Markup('<option value="{}">').format(z) for z in sorted(known_zones()))


@dataclass(frozen=True)
class View:
    request: Request
    runtime: Runtime
    ui: UiState
    session: Session
    fresh: bool  # the session cookie must be (re)written
    language: str
    zone: ZoneInfo
    now: datetime

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        response = html(self.language, template, self.context() | context, status)
        if self.fresh:
            self.ui.sessions.write(self.request, response, self.session)
        return response

    def context(self) -> dict[str, Any]:
        zone = self.zone
        return {
            "session": self.session,
            "csrf": self.session.csrf,
            "zone_name": zone.key,
            "zone_label": zone_label(zone, self.now),
            "zone_options": zone_options(),
            "local": lambda moment: local_time(moment, zone),
            "clock": lambda moment: clock_time(moment, zone),
            "utc": utc_time,
            "path": self.request.url.path,
            "refresh_seconds": self.runtime.settings.ui_refresh_seconds,
        }


async def get_view(request: Request) -> View:
    runtime = await get_runtime(request)
    ui: UiState = request.app.state.ui
    if not ui.ready:
        try:
            await run_in_threadpool(ui.load)
        except SQLAlchemyError:
            raise Unavailable() from None
    session = ui.sessions.read(request)
    fresh = session is None
    language = choose_language(
        request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language")
    )
    zone_name = request.cookies.get(ZONE_COOKIE, "")
    if zone_name not in known_zones():
        zone_name = runtime.settings.targetsms_timezone
    return View(
        request,
        runtime,
        ui,
        session or new_session(),
        fresh,
        language,
        ZoneInfo(zone_name),
        datetime.now(UTC),
    )


ViewDep = Annotated[View, Depends(get_view)]


async def get_signed_in(view: ViewDep) -> View:
    if view.session.signed_in:
        return view
    if view.request.method in ("GET", "HEAD"):
        raise LoginRequired()
    raise Forbidden(N_("not signed in"))


SignedIn = Annotated[View, Depends(get_signed_in)]


async def checked_form(view: ViewDep) -> FormData:
    """The posted form, once its CSRF token is the session's."""
    form = await view.request.form(max_files=0, max_fields=50)
    if not csrf_matches(view.session if not view.fresh else None, form.get("csrf")):
        raise Forbidden(N_("missing or wrong CSRF token"))
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


async def get_admin(view: SignedIn, _form: CheckedForm) -> View:
    if not view.session.admin:
        raise Forbidden(N_("this needs a key from ADMIN_API_KEYS"))
    return view


Admin = Annotated[View, Depends(get_admin)]
