"""Due times of cron rules in a time zone: across DST changes, and the rules refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.cron import check_cron, check_timezone, latest_due, next_due

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_nightly_rule_in_berlin_across_spring_forward() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:00 does not exist that night.
    assert next_due("0 2 * * *", BERLIN, utc(2026, 3, 28, 1)) == utc(2026, 3, 29, 1)  # 03:00 CEST
    assert next_due("0 2 * * *", BERLIN, utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0)  # 02:00 CEST
    assert next_due("30 2 * * *", BERLIN, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert next_due("0 1 * * *", BERLIN, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 0)  # 01:00 CET


def test_nightly_rule_in_berlin_fires_once_on_fall_back_night() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00 happens twice.
    first = next_due("0 2 * * *", BERLIN, utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0)  # 02:00 CEST, the first occurrence
    assert next_due("0 2 * * *", BERLIN, first) == utc(2026, 10, 26, 1)  # 02:00 CET next night
    half_hourly, t = [], utc(2026, 10, 24, 23, 15)
    while (t := next_due("*/30 * * * *", BERLIN, t)) < utc(2026, 10, 25, 2, 30):
        half_hourly.append(t.astimezone(check_timezone(BERLIN)).strftime("%H:%M"))
    # Each wall-clock time once: the repeated 02:00 and 02:30 (CET) do not fire again.
    assert half_hourly == ["01:30", "02:00", "02:30", "03:00"]


def test_due_times_follow_the_local_clock_not_utc() -> None:
    noon = [next_due("0 12 * * *", BERLIN, utc(2026, 3, d, 13)) for d in (26, 27, 28)]
    assert [t.hour for t in noon] == [11, 11, 10]  # 12:00 CET, then 12:00 CEST
    assert next_due("0 2 * * *", "UTC", utc(2026, 3, 1, 2)) == utc(2026, 3, 2, 2)  # strictly after


def test_latest_due_is_the_last_due_time_up_to_now() -> None:
    first = utc(2026, 3, 2, 1)  # 02:00 CET
    assert latest_due("0 2 * * *", BERLIN, first, utc(2026, 3, 2, 1)) == first
    assert latest_due("0 2 * * *", BERLIN, first, utc(2026, 3, 6, 0, 59)) == utc(2026, 3, 5, 1)
    assert latest_due("0 2 * * *", BERLIN, first, utc(2026, 3, 6, 1)) == utc(2026, 3, 6, 1)


@pytest.mark.parametrize("cron", ["0 2 * *", "61 2 * * *", "0 0 0 * * *", "0 0 31 2 *", "nightly"])
def test_invalid_cron_rules_are_refused_naming_the_field(cron: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(cron)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", "Europe/"])
def test_invalid_time_zones_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        check_timezone(name)
