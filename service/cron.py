"""Due times of cron rules, evaluated in a time zone (croniter over zoneinfo).

- A local time skipped by a spring-forward change fires at the end of the gap (`0 2 * * *`
  in Europe/Berlin on the last Sunday of March fires at 03:00 CEST), as croniter computes.
- A local time repeated by a fall-back change fires once, at its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

CRON_FIELDS = 5


def check_cron(cron: str) -> str:
    """The rule if it is a valid 5-field cron rule that matches some date; else ValueError."""
    if len(cron.split()) != CRON_FIELDS or not croniter.is_valid(cron):
        raise ValueError(
            f"cron {cron!r} is not a 5-field cron rule (minute hour day-of-month month "
            "day-of-week, e.g. '0 2 * * *')"
        )
    try:
        croniter(cron, datetime.now(UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron {cron!r} never matches a date (e.g. '0 0 31 2 *')") from None
    return cron


def check_timezone(name: str) -> ZoneInfo:
    """The time zone of an IANA name (e.g. 'Europe/Berlin', 'UTC'); else ValueError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {name!r} is not an IANA time zone name (e.g. 'Europe/Berlin', 'UTC')"
        ) from None


def _repeated(local: datetime) -> bool:
    """Whether `local` is the second occurrence of a wall-clock time (a fall-back hour)."""
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset() and local.replace(fold=1) == local


def next_due(cron: str, timezone: str, after: datetime) -> datetime:
    """The first due time strictly after `after` (aware), in UTC; see the module docstring."""
    zone = check_timezone(timezone)
    times = croniter(cron, after.astimezone(zone))
    while True:
        due: datetime = times.get_next(datetime)
        if due > after and not _repeated(due):
            return due.astimezone(ZoneInfo("UTC"))


def latest_due(cron: str, timezone: str, first: datetime, now: datetime) -> datetime:
    """The latest due time in [first, now], where `first` is a due time at or before `now`."""
    due = first
    while (following := next_due(cron, timezone, due)) <= now:
        due = following
    return due
