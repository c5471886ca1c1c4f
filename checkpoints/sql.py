"""SQL as the application writes it: a statement is its text and parameters, with `?`
placeholders on SQLite and Postgres alike; `postgres_sql` is the one place they become
psycopg's `%s`. A `Query` is statements to run together and what their rows say, so the
code that runs them (a lock's pipeline, a transaction) never decodes rows by position."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Statement = tuple[str, Sequence[Any]]
Rows = list[dict[str, Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class Query(Generic[T]):
    """Statements run in order in one transaction, and `read`, which makes their rows (one
    list per statement) the value they stand for."""

    statements: tuple[Statement, ...]
    read: Callable[[list[Rows]], T]


def postgres_sql(sql: str) -> str:
    """`sql` for psycopg: its `?` placeholders as `%s` (the application's SQL holds no `?`
    but placeholders)."""
    return sql.replace("?", "%s")
