"""Callback silence: read from the database (both kinds), watched by the poller."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import write_transaction
from app.ingest import Submission
from app.protocol import IncomingState
from app.silence import Silence, SilenceWatch, callback_silence
from app.store import store_batch
from tests.selfheal_helpers import callback_at, sent_at

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return NOW - timedelta(minutes=n)


def test_no_callback_for_the_window_while_messages_wait_is_silence(
    settings: Settings, engine: Engine
) -> None:
    callback_at(engine, minutes(45), "1")
    sent_at(engine, minutes(40), "2", "3")
    silence = callback_silence(engine, settings, NOW)
    assert silence == Silence(True, True, minutes(45), 2)


def test_a_recent_callback_is_not_silence(settings: Settings, engine: Engine) -> None:
    sent_at(engine, minutes(40), "2")
    callback_at(engine, minutes(29), "1")
    assert callback_silence(engine, settings, NOW) == Silence(False, False, minutes(29), 1)


def test_nothing_waiting_is_not_silence(settings: Settings, engine: Engine) -> None:
    callback_at(engine, minutes(300), "1")
    sent_at(engine, minutes(25 * 60), "old")  # older than a day: not counted
    sent_at(engine, minutes(10), "new")  # has not waited the whole window yet
    assert callback_silence(engine, settings, NOW) == Silence(False, True, minutes(300), 0)


def test_no_callback_ever_with_waiting_messages_is_silence(
    settings: Settings, engine: Engine
) -> None:
    sent_at(engine, minutes(31), "2")
    assert callback_silence(engine, settings, NOW) == Silence(True, True, None, 1)


def test_rejected_documents_are_not_callbacks(settings: Settings, engine: Engine) -> None:
    sent_at(engine, minutes(40), "2")
    rejected = Submission([], "callback", minutes(1), body=b"junk", error="malformed")
    with write_transaction(engine) as conn:
        store_batch(conn, [rejected], minutes(1))
    assert callback_silence(engine, settings, NOW).silent


def test_the_window_is_the_setting(settings: Settings, engine: Engine) -> None:
    callback_at(engine, minutes(12), "1")
    sent_at(engine, minutes(11), "2")
    assert not callback_silence(engine, settings, NOW).silent
    shorter = settings.model_copy(update={"callback_silence_minutes": 10})
    assert callback_silence(engine, shorter, NOW).silent


def test_one_log_line_when_silence_starts_and_one_when_it_ends(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.silence")
    watch = SilenceWatch()
    callback_at(engine, minutes(45), "1")
    sent_at(engine, minutes(40), "2")
    assert watch.observe(callback_silence(engine, settings, NOW), settings)
    # Polling brings "2" to a final state: nothing waits, but no callback came: still silent.
    callback_gone = NOW + timedelta(minutes=1)
    state = IncomingState("2", "deliver", "2026-01-01 12:00:00", NOW)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state], "poll", NOW)], NOW)
    assert watch.observe(callback_silence(engine, settings, callback_gone), settings)
    assert watch.observe(callback_silence(engine, settings, callback_gone), settings)
    callback_at(engine, NOW + timedelta(minutes=2), "3")
    later = NOW + timedelta(minutes=3)
    assert not watch.observe(callback_silence(engine, settings, later), settings)
    assert not watch.observe(callback_silence(engine, settings, later), settings)
    lines = [r for r in caplog.records if r.name == "app.silence"]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING"]
    assert lines[0].getMessage().startswith("callbacks are silent: none for 30 minutes")
    assert "1 messages younger than a day" in lines[0].getMessage()
    assert lines[1].getMessage().startswith("callbacks are no longer silent")
