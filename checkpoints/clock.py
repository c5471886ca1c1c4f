"""Time as the application tables store it: fixed-width UTC text, so that text order is time
order on SQLite and Postgres alike."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """`moment` as stored: `2026-12-03T07:04:05.000123+00:00`, always with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def now() -> str:
    """The time now, as stored."""
    return iso(utcnow())
