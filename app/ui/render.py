"""Pages: the Jinja2 environments (one per language, autoescaped) and the HTML responses."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.numbers import format_decimal, format_percent
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from app.ui.i18n import LANGUAGES, STATUS_MEANINGS, translations

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment(language: str) -> Environment:
    """The templates with `language`'s catalog installed (built once per language).

    One environment per language rather than translations switched per request:
    an environment is shared by every request thread."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    catalog = translations(language)
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    env.globals["language"] = language
    env.globals["languages"] = LANGUAGES
    env.globals["known_statuses"] = tuple(STATUS_MEANINGS)
    # Parsed once: given its name, babel parses the locale on every number
    # (a tenth of an overview's render, which formats a few hundred).
    locale = Locale.parse(language)
    env.filters["number"] = lambda value: format_decimal(value, locale=locale)
    env.filters["percent"] = lambda value: (
        "—" if value is None else format_percent(value, "#,##0.0%", locale=locale)
    )
    env.filters["meaning"] = lambda status: (
        catalog.gettext(STATUS_MEANINGS[status]) if status in STATUS_MEANINGS else ""
    )
    return env


def local_time(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def clock_time(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%H:%M")


def utc_time(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def zone_label(zone: ZoneInfo, now: datetime) -> str:
    """`Europe/Moscow (UTC+03:00)`: the name and the offset in force now."""
    offset = now.astimezone(zone).strftime("%z")
    return f"{zone.key} (UTC{offset[:3]}:{offset[3:]})"


def html(language: str, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    body = environment(language).get_template(template).render(context)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
