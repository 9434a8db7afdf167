"""The account's clock and zone: the arithmetic, on fixed moments."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.account_check import ZoneCheck, check_zone, clock_offset, zone_shift, zone_with_offset
from app.config import Settings

# 12:00 UTC is 15:00 in Moscow.
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
MOSCOW = ZoneInfo("Europe/Moscow")


def settings(zone: str = "Europe/Moscow") -> Settings:
    return Settings(_env_file=None, targetsms_timezone=zone)  # type: ignore[call-arg]


def test_offset_from_a_full_answer() -> None:
    assert clock_offset(datetime(2026, 11, 29, 19, 0, 3), NOW, MOSCOW) == timedelta(
        hours=4, seconds=3
    )
    assert clock_offset(datetime(2026, 11, 29, 14, 0, 0), NOW, MOSCOW) == timedelta(hours=-1)


def test_a_bare_time_is_the_nearest_such_moment_even_across_midnight() -> None:
    assert clock_offset(time(15, 0, 10), NOW, MOSCOW) == timedelta(seconds=10)
    late = datetime(2026, 11, 29, 20, 30, tzinfo=UTC)  # 23:30 in Moscow
    assert clock_offset(time(3, 30), late, MOSCOW) == timedelta(hours=4)  # tomorrow, there
    early = datetime(2026, 11, 28, 21, 30, tzinfo=UTC)  # 00:30 in Moscow
    assert clock_offset(time(23, 30), early, MOSCOW) == timedelta(hours=-1)


@pytest.mark.parametrize(
    ("offset", "shift"),
    [
        (timedelta(hours=4, seconds=3), timedelta(hours=4)),
        (timedelta(hours=-1, minutes=1, seconds=59), timedelta(hours=-1)),
        (timedelta(hours=2, minutes=30), timedelta(hours=2, minutes=30)),
        (timedelta(minutes=45, seconds=-90), timedelta(minutes=45)),
        (timedelta(seconds=40), None),  # our zone, a clock a little off
        (timedelta(minutes=7), None),  # a clock off, not a zone
        (timedelta(hours=1, minutes=5), None),
    ],
)
def test_a_shift_near_a_multiple_of_15_minutes_means_a_zone(
    offset: timedelta, shift: timedelta | None
) -> None:
    assert zone_shift(offset) == shift


@pytest.mark.parametrize(
    ("utc_offset", "zone"),
    [
        (timedelta(hours=2), "Europe/Kaliningrad"),
        (timedelta(hours=3), "Europe/Moscow"),
        (timedelta(hours=7), "Asia/Novosibirsk"),  # before Krasnoyarsk, same offset
        (timedelta(hours=12), "Asia/Kamchatka"),
        (timedelta(hours=1), "Etc/GMT-1"),  # POSIX sign: one hour ahead of UTC
        (timedelta(hours=-5), "Etc/GMT+5"),
        (timedelta(0), "Etc/UTC"),
    ],
)
def test_the_suggested_zone_prefers_russian_zones(utc_offset: timedelta, zone: str) -> None:
    assert zone_with_offset(utc_offset, NOW) == zone


def test_a_zone_with_an_odd_offset_is_found_by_its_offset() -> None:
    found = zone_with_offset(timedelta(hours=5, minutes=30), NOW)
    assert found is not None
    assert NOW.astimezone(ZoneInfo(found)).utcoffset() == timedelta(hours=5, minutes=30)


def test_check_zone_names_the_zone_the_account_uses() -> None:
    account = datetime(2026, 11, 29, 19, 0, 1)  # Novosibirsk, UTC+7
    assert check_zone(account, NOW, settings()) == ZoneCheck(
        timedelta(hours=4, seconds=1), timedelta(hours=4), "Asia/Novosibirsk"
    )
    # Configured Yekaterinburg (UTC+5), the account is in Moscow (UTC+3): two hours behind.
    moscow = datetime(2026, 11, 29, 15, 0, 0)
    check = check_zone(moscow, NOW, settings("Asia/Yekaterinburg"))
    assert (check.zone_shift, check.suggested_zone) == (timedelta(hours=-2), "Europe/Moscow")
    assert check.zone_wrong and not check.clock_off


def test_a_matching_zone_and_a_clock_that_is_off() -> None:
    right = check_zone(datetime(2026, 11, 29, 15, 0, 20), NOW, settings())
    assert not right.zone_wrong and not right.clock_off
    off = check_zone(datetime(2026, 11, 29, 15, 9, 0), NOW, settings())
    assert off.clock_off and off.suggested_zone is None
