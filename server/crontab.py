"""Cron schedules: strict 5-field expressions in an IANA timezone, and their next fire time.

Next times are found on the local wall clock and then placed on the UTC timeline, so each
local time fires once: a local time skipped by a spring-forward change fires once, at the
same offset from midnight after the jump (02:30 becomes 03:30); a local time repeated by a
fall-back change fires once, at its first occurrence.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

FIELDS = 5
WRONG_FIELD_COUNT = (
    "A schedule has 5 fields (minute hour day-of-month month day-of-week); {expr!r} has {n}."
)
BAD_FIELD = "Invalid schedule {expr!r}: {reason}."
NEVER = "The schedule {expr!r} never fires (no such date, e.g. 30 February)."
BAD_TIMEZONE = "Unknown timezone {tz!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'."
BAD_END_TIME = "The end time {end} is not a time this server can schedule (years 1970 to 9998)."
SEARCH_YEARS = 8  # a valid schedule fires within this (29 February fires every 4 years)
#: The IANA names the installed tz database holds (`tzdata`): a timezone is one of them, not
#: any file name `ZoneInfo` would open.
TIMEZONES = frozenset(available_timezones())
EARLIEST_END, LATEST_END = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    """A schedule that cannot fire: the message names the problem, `field` the part of the
    schedule at fault (`schedule`, `timezone`, `end_time`)."""

    def __init__(self, message: str, field: str = "schedule") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Schedule:
    """A validated cron expression, its timezone and optional end."""

    expr: str
    timezone: str = "UTC"
    end_time: datetime | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_schedule(expr: str, timezone: str = "UTC", end_time: datetime | None = None) -> Schedule:
    """Validate strictly: 5 fields, values in range, a date that exists, a known timezone."""
    fields = expr.split()
    if len(fields) != FIELDS:
        raise ScheduleError(WRONG_FIELD_COUNT.format(expr=expr, n=len(fields)))
    if timezone not in TIMEZONES:
        raise ScheduleError(BAD_TIMEZONE.format(tz=timezone[:100]), field="timezone")
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadCronError as exc:
        raise ScheduleError(BAD_FIELD.format(expr=expr, reason=exc)) from exc
    except CroniterBadDateError as exc:
        raise ScheduleError(NEVER.format(expr=expr)) from exc
    if end_time is not None:
        end_time = _end_in_utc(end_time)
    return Schedule(expr=expr, timezone=timezone, end_time=end_time)


def _end_in_utc(end_time: datetime) -> datetime:
    """An end time on the UTC timeline (naive: UTC), within the years a schedule can reach."""
    if end_time.tzinfo is None:
        end_time = end_time.replace(tzinfo=UTC)
    try:
        in_utc = end_time.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST_END <= in_utc < LATEST_END:
        raise ScheduleError(BAD_END_TIME.format(end=end_time.isoformat()), field="end_time")
    return in_utc


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire time strictly after `after` (aware), in UTC; None past the end time."""
    zone = schedule.zone
    local_after = after.astimezone(zone).replace(tzinfo=None)
    candidates = croniter(schedule.expr, local_after)
    horizon = local_after + timedelta(days=366 * SEARCH_YEARS)
    while True:
        local = candidates.get_next(datetime)
        if local > horizon:
            return None
        fire = _to_utc(local, zone)
        if fire <= after:  # a repeated local time already fired at its first occurrence
            continue
        if schedule.end_time is not None and fire > schedule.end_time:
            return None
        return fire


def _to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time on the UTC timeline: the first of two repeated instants; a skipped
    time moved forward by the gap."""
    first = local.replace(tzinfo=zone, fold=0)
    return first.astimezone(UTC)
