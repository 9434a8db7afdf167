"""The account's clock, zone and balance (time.php, balance.php).

time.php answers the account's local wall clock. We read every provider time
string in TARGETSMS_TIMEZONE; if the account is set to another zone, its clock
differs from ours by whole hours (or half or quarter hours, in a few zones),
and every stored time is shifted by as much. An offset within `TOLERANCE` of a
non-zero multiple of 15 minutes therefore means the setting is wrong; we say
so loudly, with a zone that has the account's current UTC offset. Any other
offset larger than the tolerance is a clock that is off, not a zone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

from app.config import Settings
from app.provider import Balance, ProviderError, TargetSMSClient

log = logging.getLogger(__name__)

TOLERANCE = timedelta(minutes=2)
ZONE_STEP = timedelta(minutes=15)
DAY = timedelta(days=1)
# Where a TargetSMS account most likely is; the first with the offset wins.
RUSSIAN_ZONES = (
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
)


@dataclass(frozen=True, slots=True)
class ZoneCheck:
    offset: timedelta  # the account's clock minus now in TARGETSMS_TIMEZONE
    zone_shift: timedelta | None  # the whole-zone part of it, when the zone is wrong
    suggested_zone: str | None

    @property
    def zone_wrong(self) -> bool:
        return self.zone_shift is not None

    @property
    def clock_off(self) -> bool:
        return self.zone_shift is None and abs(self.offset) > TOLERANCE


@dataclass(frozen=True, slots=True)
class AccountCheck:
    zone: ZoneCheck | None
    balance: Balance | None
    error: str | None

    def record(self) -> dict[str, object]:
        return {
            "zone_offset_seconds": round(self.zone.offset.total_seconds()) if self.zone else None,
            "suggested_zone": self.zone.suggested_zone if self.zone else None,
            "balance": str(self.balance.money) if self.balance else None,
            "sms": {s.area: s.count for s in self.balance.sms} if self.balance else None,
            "error": self.error,
        }


def clock_offset(account: datetime | time, now: datetime, zone: tzinfo) -> timedelta:
    """The account's wall clock minus `now` on the wall clock of `zone`.

    A bare time (no date) is taken as the nearest such moment, within half a day.
    """
    ours = now.astimezone(zone).replace(tzinfo=None)
    if isinstance(account, datetime):
        return account - ours
    theirs = datetime.combine(ours.date(), account)
    offset = (theirs - ours) % DAY
    return offset - DAY if offset > DAY / 2 else offset


def zone_shift(offset: timedelta) -> timedelta | None:
    """The non-zero multiple of 15 minutes within TOLERANCE of `offset`, if any."""
    steps = round(offset / ZONE_STEP)
    shift = ZONE_STEP * steps
    return shift if steps and abs(offset - shift) <= TOLERANCE else None


def _utc_offset(now: datetime, zone: tzinfo) -> timedelta:
    return now.astimezone(zone).utcoffset() or timedelta(0)


def zone_with_offset(utc_offset: timedelta, now: datetime) -> str | None:
    """A zone whose UTC offset at `now` is `utc_offset`: a Russian one if any, else Etc/GMT."""
    for name in RUSSIAN_ZONES:
        if _utc_offset(now, ZoneInfo(name)) == utc_offset:
            return name
    hours, rest = divmod(utc_offset, timedelta(hours=1))
    if not rest and -12 <= hours <= 14:
        # The POSIX sign: Etc/GMT-7 is seven hours ahead of UTC.
        return "Etc/UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    names = (n for n in sorted(available_timezones()) if "/" in n and not n.startswith("Etc/"))
    return next((n for n in names if _utc_offset(now, ZoneInfo(n)) == utc_offset), None)


def check_zone(account: datetime | time, now: datetime, settings: Settings) -> ZoneCheck:
    offset = clock_offset(account, now, settings.zone)
    shift = zone_shift(offset)
    if shift is None:
        return ZoneCheck(offset, None, None)
    return ZoneCheck(offset, shift, zone_with_offset(_utc_offset(now, settings.zone) + shift, now))


def _hours(delta: timedelta) -> str:
    sign = "-" if delta < timedelta(0) else "+"
    minutes = round(abs(delta).total_seconds() / 60)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def report_zone(check: ZoneCheck, settings: Settings) -> None:
    if check.zone_wrong:
        assert check.zone_shift is not None
        log.error(
            "TARGETSMS_TIMEZONE IS WRONG: the account's clock (time.php) is %s h from now in "
            "%s, so every stored status time is shifted by as much. Set TARGETSMS_TIMEZONE=%s "
            "(a zone with the account's current UTC offset).",
            _hours(check.zone_shift),
            settings.targetsms_timezone,
            check.suggested_zone or "a zone with that offset",
        )
    elif check.clock_off:
        log.warning(
            "the account's clock (time.php) is %.0f s from ours: one of the clocks is off",
            check.offset.total_seconds(),
        )


def report_balance(money: Balance, settings: Settings) -> None:
    if money.money <= 0:
        log.error(
            "the provider account's money has run out (%s): the provider stops sending, and "
            "every status after that is an error sentence. Top it up.",
            money.money,
        )
    elif money_below(money.money, settings):
        log.warning(
            "the provider account's money is low: %s, below BALANCE_WARN_BELOW=%s",
            money.money,
            settings.balance_warn_below,
        )


async def check_account(client: TargetSMSClient, settings: Settings, now: datetime) -> AccountCheck:
    """time.php then balance.php; a provider failure is recorded, never raised."""
    zone: ZoneCheck | None = None
    money: Balance | None = None
    try:
        zone = check_zone(await client.account_time(), now, settings)
        report_zone(zone, settings)
        money = await client.balance()
        report_balance(money, settings)
    except ProviderError as exc:
        log.warning("account check failed: %s", exc)
        return AccountCheck(zone, money, str(exc))
    return AccountCheck(zone, money, None)


def money_below(money: Decimal, settings: Settings) -> bool:
    return settings.balance_warn_below is not None and money < settings.balance_warn_below
