"""Opaque cursors: a position in a stable order, encoded so clients don't build them.

A cursor is URL-safe base64 of `v1:<kind>:<id>`, where `id` is the last row's
surrogate key (`messages.id` for lists, `events.id` for the change feed). The
version lets the format change later without breaking stored cursors; the kind
stops a list cursor being passed to the feed.
"""

from __future__ import annotations

import base64
import binascii
import re

from app.api.errors import ApiError

VERSION = "v1"
# At most 18 digits: always within a signed 64-bit key.
_CURSOR = re.compile(r"v1:([mc]):(0|[1-9][0-9]{0,17})")

MESSAGES = "m"
CHANGES = "c"


def encode(kind: str, position: int) -> str:
    raw = f"{VERSION}:{kind}:{position}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(kind: str, cursor: str) -> int:
    """The position in `cursor`; `ApiError` 422 if it is not one we handed out for `kind`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (ValueError, binascii.Error):
        raise _invalid() from None
    match = _CURSOR.fullmatch(raw)
    if match is None or match.group(1) != kind:
        raise _invalid()
    position = int(match.group(2))
    if encode(kind, position) != cursor:  # b64decode skips stray characters: be strict
        raise _invalid()
    return position


def _invalid() -> ApiError:
    return ApiError(422, "invalid_cursor", "The cursor is not one this API handed out.")
