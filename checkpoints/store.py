"""Application tables beside the checkpoints: run records and per-agent watermarks.

SQL lives in module constants; `MIGRATIONS[i]` brings the schema to version `i + 1`, and
`setup()` applies the ones a database has not seen (the `langgraph-checkpoint-postgres`
pattern). The same SQL runs on SQLite and Postgres (`?` becomes `%s` for psycopg).
"""

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiosqlite
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from checkpoints.factory import postgres_pool, sqlite_path, storage_kind

MIGRATIONS: Sequence[str] = (
    """CREATE TABLE IF NOT EXISTS relaygraph_runs (
        thread_id TEXT PRIMARY KEY,
        agent_key TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        report TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS relaygraph_runs_agent ON relaygraph_runs (agent_key, status)",
    """CREATE TABLE IF NOT EXISTS relaygraph_watermarks (
        agent_key TEXT PRIMARY KEY,
        modified_since TEXT NOT NULL
    )""",
)

CREATE_VERSIONS = "CREATE TABLE IF NOT EXISTS relaygraph_migrations (v INTEGER PRIMARY KEY)"
SELECT_VERSION = "SELECT max(v) AS v FROM relaygraph_migrations"
INSERT_VERSION = "INSERT INTO relaygraph_migrations (v) VALUES (?)"
SELECT_UNFINISHED = (
    "SELECT thread_id FROM relaygraph_runs WHERE agent_key = ? AND status = 'running' "
    "ORDER BY started_at DESC LIMIT 1"
)
INSERT_RUN = (
    "INSERT INTO relaygraph_runs (thread_id, agent_key, status, started_at) "
    "VALUES (?, ?, 'running', ?)"
)
FINISH_RUN = (
    "UPDATE relaygraph_runs SET status = ?, finished_at = ?, report = ? WHERE thread_id = ?"
)
SELECT_WATERMARK = "SELECT modified_since FROM relaygraph_watermarks WHERE agent_key = ?"
UPSERT_WATERMARK = (
    "INSERT INTO relaygraph_watermarks (agent_key, modified_since) VALUES (?, ?) "
    "ON CONFLICT (agent_key) DO UPDATE SET modified_since = excluded.modified_since"
)


class _Database(Protocol):
    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> None: ...


class _Sqlite:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.conn.execute(sql, params) as cursor:
            names = [c[0] for c in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> None:
        for sql, params in statements:
            await self.conn.execute(sql, params)
        await self.conn.commit()


class _Postgres:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self.pool = pool

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql.replace("?", "%s"), params)
            return cast(list[dict[str, Any]], await cursor.fetchall())

    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            for sql, params in statements:
                await conn.execute(sql.replace("?", "%s"), params)


class AppStore:
    """Run records and watermarks of the agents this process runs."""

    def __init__(self, db: _Database) -> None:
        self.db = db

    async def setup(self) -> None:
        """Apply the migrations this database has not seen yet."""
        await self.db.execute((CREATE_VERSIONS, ()))
        rows = await self.db.fetch(SELECT_VERSION)
        version = (rows[0]["v"] or 0) if rows else 0
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.db.execute((sql, ()), (INSERT_VERSION, (number,)))

    async def unfinished_run(self, agent_key: str) -> str | None:
        """The thread of this agent's run that never finished (killed, crashed), if any."""
        rows = await self.db.fetch(SELECT_UNFINISHED, agent_key)
        return str(rows[0]["thread_id"]) if rows else None

    async def start_run(self, thread_id: str, agent_key: str) -> None:
        await self.db.execute((INSERT_RUN, (thread_id, agent_key, _now())))

    async def finish_run(self, thread_id: str, agent_key: str, report: dict[str, Any]) -> None:
        """Record the outcome and, in the same transaction, the agent's next watermark."""
        statements: list[tuple[str, Sequence[Any]]] = [
            (FINISH_RUN, (report["status"], _now(), json.dumps(report), thread_id))
        ]
        if report.get("watermark"):
            statements.append((UPSERT_WATERMARK, (agent_key, report["watermark"])))
        await self.db.execute(*statements)

    async def watermark(self, agent_key: str) -> str | None:
        """The "modified since" for this agent's next run (None: process everything)."""
        rows = await self.db.fetch(SELECT_WATERMARK, agent_key)
        return str(rows[0]["modified_since"]) if rows else None


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[AppStore]:
    """The application store in the database `url` names (memory: a private SQLite)."""
    kind = storage_kind(url)
    if kind == "postgres":
        async with postgres_pool(url, max_size=2) as pool:
            store = AppStore(_Postgres(pool))
            await store.setup()
            yield store
        return
    path = ":memory:" if kind == "memory" else str(sqlite_path(url))
    async with aiosqlite.connect(path) as conn:
        store = AppStore(_Sqlite(conn))
        await store.setup()
        yield store


def _now() -> str:
    return datetime.now(UTC).isoformat()
