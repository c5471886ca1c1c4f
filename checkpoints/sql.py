"""SQL as the application writes it: a statement is its text and parameters, with `?`
placeholders on SQLite and Postgres alike; `postgres_sql` is the one place they become
psycopg's `%s`."""

from collections.abc import Sequence
from typing import Any

Statement = tuple[str, Sequence[Any]]
Rows = list[dict[str, Any]]


def postgres_sql(sql: str) -> str:
    """`sql` for psycopg: its `?` placeholders as `%s` (the application's SQL holds no `?`
    but placeholders)."""
    return sql.replace("?", "%s")
