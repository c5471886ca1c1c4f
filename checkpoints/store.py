"""Application tables beside the checkpoints: run records and per-agent watermarks.

SQL lives in module constants; `MIGRATIONS[i]` brings the schema to version `i + 1`, and
`setup()` applies the ones a database has not seen (the `langgraph-checkpoint-postgres`
pattern). The same SQL runs on SQLite and Postgres (`?` becomes `%s` for psycopg).
"""

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiosqlite
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from checkpoints.factory import NOT_SQLITE, StorageError, postgres_pool, sqlite_path, storage_kind

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
    # ── server: users, keys, devices ──
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS devices (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, device_id)
    )""",
    # ── server: assistants, threads, runs ──
    """CREATE TABLE IF NOT EXISTS assistants (
        assistant_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        graph_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        config TEXT NOT NULL,
        context TEXT NOT NULL,
        metadata TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS assistants_user ON assistants (user_id, graph_id)",
    """CREATE TABLE IF NOT EXISTS threads (
        thread_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS threads_user ON threads (user_id, updated_at)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        metadata TEXT NOT NULL,
        device_id TEXT,
        error TEXT,
        counts TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS runs_thread ON runs (thread_id, created_at)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status)",
    # ── server: the device bridge's outbox and durable inbox ──
    """CREATE TABLE IF NOT EXISTS device_calls (
        call_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        interrupt_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        device_id TEXT,
        name TEXT NOT NULL,
        args TEXT NOT NULL,
        seq INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS device_calls_device ON device_calls (user_id, device_id, done)",
    "CREATE INDEX IF NOT EXISTS device_calls_run ON device_calls (run_id, done)",
    """CREATE TABLE IF NOT EXISTS device_inbox (
        call_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        ok INTEGER NOT NULL,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS device_inbox_run ON device_inbox (run_id)",
    # at most one active run per thread, enforced by the database (concurrent creates)
    "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs (thread_id) "
    "WHERE status IN ('pending', 'running', 'interrupted')",
    # ── schedules ──
    """CREATE TABLE IF NOT EXISTS crons (
        cron_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        thread_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT NOT NULL,
        end_time TEXT,
        enabled INTEGER NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        on_run_completed TEXT NOT NULL,
        next_run_at TEXT,
        overdue INTEGER NOT NULL DEFAULT 0,
        last_run_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS crons_due ON crons (enabled, next_run_at)",
    "ALTER TABLE runs ADD COLUMN cron_id TEXT",
    "ALTER TABLE devices ADD COLUMN online_until TEXT",
    "CREATE INDEX IF NOT EXISTS runs_device ON runs (user_id, device_id, status)",
    "ALTER TABLE device_calls ADD COLUMN pushed_at TEXT",
)

SQLITE_BUSY_MS = 10_000

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


class Transaction(Protocol):
    """Reads and writes inside one open transaction."""

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def run(self, sql: str, *params: Any) -> int: ...


class Database(Protocol):
    """What the stores need: read rows, run statements in one transaction, or hold a
    transaction open across reads and writes (`FOR UPDATE SKIP LOCKED` on Postgres)."""

    kind: str

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> int: ...
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...


class SqliteDatabase:
    """One aiosqlite connection; a lock keeps each transaction whole among coroutines."""

    kind = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.lock, self.conn.execute(sql, params) as cursor:
            names = [c[0] for c in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one writing statement and commit; the rows of its `RETURNING` clause."""
        async with self.lock:
            try:
                async with self.conn.execute(sql, params) as cursor:
                    names = [c[0] for c in cursor.description or []]
                    rows = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise
        return rows

    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> int:
        """Run the statements in one transaction; the number of rows the last one changed."""
        changed = 0
        async with self.lock:
            try:
                for sql, params in statements:
                    cursor = await self.conn.execute(sql, params)
                    changed = cursor.rowcount
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise
        return changed

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self.conn)
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()


class _SqliteTransaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        sql = sql.replace(" FOR UPDATE SKIP LOCKED", "")  # one writer at a time anyway
        async with self.conn.execute(sql, params) as cursor:
            names = [c[0] for c in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def run(self, sql: str, *params: Any) -> int:
        cursor = await self.conn.execute(sql, params)
        return cursor.rowcount


class _PostgresTransaction:
    def __init__(self, conn: AsyncConnection[DictRow]) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        cursor = await self.conn.execute(sql.replace("?", "%s"), params)
        return cast(list[dict[str, Any]], await cursor.fetchall())

    async def run(self, sql: str, *params: Any) -> int:
        cursor = await self.conn.execute(sql.replace("?", "%s"), params)
        return cursor.rowcount


class PostgresDatabase:
    """A psycopg pool; `?` placeholders become `%s`."""

    kind = "postgres"

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self.pool = pool

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql.replace("?", "%s"), params)
            return cast(list[dict[str, Any]], await cursor.fetchall())

    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one writing statement (autocommit: its own transaction); its `RETURNING` rows."""
        return await self.fetch(sql, *params)

    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> int:
        """Run the statements in one transaction; the number of rows the last one changed.
        Several statements go in one pipeline: one network round trip, not one each."""
        async with self.pool.connection() as conn:
            if len(statements) == 1:
                sql, params = statements[0]
                return (await conn.execute(sql.replace("?", "%s"), params)).rowcount
            async with conn.pipeline(), conn.transaction():
                cursors = [
                    await conn.execute(sql.replace("?", "%s"), params) for sql, params in statements
                ]
        return cursors[-1].rowcount if cursors else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.pool.connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)


class AppStore:
    """Run records and watermarks of the agents this process runs."""

    def __init__(self, db: Database) -> None:
        self.db = db

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


async def migrate(db: Database) -> None:
    """Apply the migrations this database has not seen yet (idempotent)."""
    await db.execute((CREATE_VERSIONS, ()))
    rows = await db.fetch(SELECT_VERSION)
    version = (rows[0]["v"] or 0) if rows else 0
    for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        await db.execute((sql, ()), (INSERT_VERSION, (number,)))


@asynccontextmanager
async def open_database(
    url: str, *, pool_size: int = 4, prepare: bool = True
) -> AsyncIterator[Database]:
    """The application database `url` names (memory: a private SQLite), migrated.
    `prepare`: server-side prepared statements on Postgres (off behind a PgBouncer in
    transaction mode older than 1.21)."""
    kind = storage_kind(url)
    if kind == "postgres":
        async with postgres_pool(url, max_size=pool_size, prepare=prepare) as pool:
            postgres = PostgresDatabase(pool)
            await migrate(postgres)
            yield postgres
        return
    path = ":memory:"
    if kind == "sqlite":
        sqlite_file = sqlite_path(url)
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        path = str(sqlite_file)
    try:
        conn = await aiosqlite.connect(path)
    except sqlite3.Error as exc:
        raise StorageError(NOT_SQLITE.format(path=path, error=exc)) from exc
    try:
        sqlite = SqliteDatabase(conn)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            if kind == "sqlite":
                await conn.execute("PRAGMA journal_mode = WAL")
                # In WAL mode a commit survives the process being killed at once; NORMAL
                # leaves only a power cut able to take back the last commits (FULL would
                # fsync on each, a third of a millisecond here). What such a cut could take
                # back is recovered by the protocol: an answer not in the inbox is asked for
                # again on the device's next hello, and the device replays it by call id.
                await conn.execute("PRAGMA synchronous = NORMAL")
            await migrate(sqlite)
        except sqlite3.DatabaseError as exc:
            raise StorageError(NOT_SQLITE.format(path=path, error=exc)) from exc
        yield sqlite
    finally:
        await conn.close()


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[AppStore]:
    """The application store of `relaygraph run` in the database `url` names."""
    async with open_database(url, pool_size=2) as db:
        yield AppStore(db)


def _now() -> str:
    return datetime.now(UTC).isoformat()
