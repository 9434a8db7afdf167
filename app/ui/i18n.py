"""The dashboard's languages: Babel catalogs read from the shipped .po files.

The .po files are compiled in memory when the app starts, so an installed
package (`pip install .`) needs no build step. The language is the `tsr_ui_lang`
cookie when it names one we have, otherwise the best match of `Accept-Language`.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
CATALOG_DIR = Path(__file__).parent / "i18n"
DOMAIN = "messages"


def N_(message: str) -> str:
    return message


# The provider's statuses and what they mean (targetsms-xml-api-ru.md, "state").
# `partly_deliver` is not "partly delivered": the manual says the message was
# sent but no status ever came back, and support must be asked why.
STATUS_MEANINGS = {
    "send": N_("sent, no status yet"),
    "deliver": N_("delivered"),
    "not_deliver": N_("not delivered"),
    "expired": N_("expired: the phone was off the network"),
    "partly_deliver": N_("sent, no status ever came (ask support)"),
}
FINAL_STATUSES = ("deliver", "not_deliver", "expired", "partly_deliver")


@cache
def translations(language: str) -> Translations:
    """The catalog for `language`, compiled from its .po file (cached per process)."""
    path = CATALOG_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    wanted = _preferences(accept_language or "")
    try:
        found = Locale.negotiate(wanted, LANGUAGES, sep="-")
    except (UnknownLocaleError, ValueError):
        found = None
    return found.language if found is not None else DEFAULT_LANGUAGE


def _preferences(header: str) -> list[str]:
    """`Accept-Language` tags, best first (q=0 dropped)."""
    weighted = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]
