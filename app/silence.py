"""Callback silence: the provider has stopped pushing while statuses are still owed.

"Silent" means: no callback document has been stored for
CALLBACK_SILENCE_MINUTES, while some message younger than a day is still not
final and has been waiting at least that long. Only messages that waited the
whole window count, so that the first message after a quiet night does not
raise an alarm by itself. Rejected documents (garbage, scanners) are not
callbacks: only documents stored with outcome "stored" count.

`callback_silence` reads this from the database, so the poller, `doctor` and
the dashboard all see the same answer. `SilenceWatch` is the poller's memory
of it: one log line when silence starts, one when it ends; the poller records
it with each pass (the gauge `targetsms_callbacks_silent` is read from there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, select

from app.config import Settings
from app.models import Document, Message

log = logging.getLogger(__name__)

YOUNG = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Silence:
    silent: bool  # quiet, and messages are waiting
    quiet: bool  # no stored callback within the window
    last_callback_at: datetime | None  # the newest stored callback document, if any is kept
    waiting: int  # messages younger than a day, not final, waiting the whole window


def callback_silence(db: Connection | Engine, settings: Settings, now: datetime) -> Silence:
    """Whether callbacks are silent at `now` (timezone-aware)."""
    if isinstance(db, Engine):
        with db.connect() as conn:
            return callback_silence(conn, settings, now)
    window = timedelta(minutes=settings.callback_silence_minutes)
    last = db.scalar(select(func.max(Document.received_at)).where(Document.outcome == "stored"))
    waiting = db.scalar(
        select(func.count()).where(
            Message.final.is_(False),
            Message.given_up_at.is_(None),
            Message.first_seen_at >= now - YOUNG,
            Message.first_seen_at <= now - window,
        )
    )
    quiet = last is None or last < now - window
    return Silence(bool(waiting) and quiet, quiet, last_callback_at=last, waiting=waiting or 0)


class SilenceWatch:
    """Logs the transitions only.

    Silence ends when a callback arrives, not when the shorter polling has
    brought every waiting message to a final status: otherwise the alarm would
    flap off and on with each message sent while the provider stays mute.
    """

    def __init__(self) -> None:
        self.silent = False

    def observe(self, silence: Silence, settings: Settings) -> bool:
        """Whether the poller should treat callbacks as silent now."""
        now_silent = silence.silent or (self.silent and silence.quiet)
        if now_silent == self.silent:
            return now_silent
        self.silent = now_silent
        if now_silent:
            log.warning(
                "callbacks are silent: none for %g minutes (last: %s) while %d messages "
                "younger than a day wait for a final status; polling every %d s until they "
                "come back. Check the provider's callback URL (`targetsms-receiver doctor`).",
                settings.callback_silence_minutes,
                silence.last_callback_at.isoformat() if silence.last_callback_at else "never",
                silence.waiting,
                settings.poll_after_seconds_when_silent,
            )
        else:
            log.warning(
                "callbacks are no longer silent (last: %s); polling as usual",
                silence.last_callback_at.isoformat() if silence.last_callback_at else "never",
            )
        return now_silent
