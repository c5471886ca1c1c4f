"""Cron schedules with an injected clock: strict validation, and daylight-saving changes."""

from datetime import UTC, datetime

import pytest

from server.crontab import ScheduleError, next_fire, parse_schedule


def fires(expr: str, tz: str, start: datetime, count: int) -> list[datetime]:
    schedule = parse_schedule(expr, tz)
    times, t = [], start
    for _ in range(count):
        nxt = next_fire(schedule, t)
        assert nxt is not None
        times.append(nxt)
        t = nxt
    return times


def local(times: list[datetime], tz: str) -> list[str]:
    zone = parse_schedule("* * * * *", tz).zone
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in times]


def test_a_skipped_local_time_fires_once_after_the_jump() -> None:
    # Europe/Berlin springs forward on 2026-03-29 at 02:00 -> 03:00.
    got = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC), 3)
    assert local(got, "Europe/Berlin") == [
        "03-29 03:30+0200",
        "03-30 02:30+0200",
        "03-31 02:30+0200",
    ]


def test_a_repeated_local_time_fires_once() -> None:
    # Europe/Berlin falls back on 2026-10-25 at 03:00 -> 02:00: 02:30 happens twice.
    got = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert local(got, "Europe/Berlin") == ["10-25 02:30+0200", "10-26 02:30+0100"]
    half_hourly = fires(
        "*/30 * * * *", "Europe/Berlin", datetime(2026, 10, 24, 23, 40, tzinfo=UTC), 5
    )
    assert local(half_hourly, "Europe/Berlin") == [
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 03:00+0100",
        "10-25 03:30+0100",
        "10-25 04:00+0100",
    ]
    assert len(set(half_hourly)) == len(half_hourly)


def test_a_skipped_hour_of_a_frequent_schedule_never_fires_twice() -> None:
    got = fires("*/30 * * * *", "America/New_York", datetime(2026, 3, 8, 6, 40, tzinfo=UTC), 4)
    assert local(got, "America/New_York") == [
        "03-08 03:00-0400",
        "03-08 03:30-0400",
        "03-08 04:00-0400",
        "03-08 04:30-0400",
    ]


def test_end_time_stops_the_schedule() -> None:
    schedule = parse_schedule("0 * * * *", "UTC", datetime(2026, 1, 1, 2, 30, tzinfo=UTC))
    assert next_fire(schedule, datetime(2026, 1, 1, 1, 5, tzinfo=UTC)) == datetime(
        2026, 1, 1, 2, tzinfo=UTC
    )
    assert next_fire(schedule, datetime(2026, 1, 1, 2, 0, tzinfo=UTC)) is None


def test_leap_day_schedule_is_valid_and_waits_for_the_leap_year() -> None:
    got = fires("0 0 29 2 *", "UTC", datetime(2026, 1, 1, tzinfo=UTC), 1)
    assert got == [datetime(2028, 2, 29, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        ("* * *", "UTC", "has 3"),
        ("0 0 * * * *", "UTC", "has 6"),
        ("61 * * * *", "UTC", "out of range"),
        ("0 25 * * *", "UTC", "out of range"),
        ("0 0 31 2 *", "UTC", "never fires"),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("every day", "UTC", "has 2"),
        ("0 9 * * MON", "Mars/Olympus", "Unknown timezone"),
    ],
)
def test_invalid_and_impossible_schedules_are_refused_with_the_problem(
    expr: str, tz: str, message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(expr, tz)
