"""Application tables beside the checkpoints: run records and per-agent watermarks.

SQL lives in module constants; `MIGRATIONS[i]` brings the schema to version `i + 1`, and
`setup()` applies the ones a database has not seen (the `langgraph-checkpoint-postgres`
pattern). The same SQL runs on SQLite and Postgres (`?` becomes `%s` for psycopg).
"""

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar, cast

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
    # ── files an agent's run could not process: retried on its next run ──
    """CREATE TABLE IF NOT EXISTS relaygraph_file_retries (
        agent_key TEXT NOT NULL,
        path TEXT NOT NULL,
        error TEXT NOT NULL,
        failed_at TEXT NOT NULL,
        PRIMARY KEY (agent_key, path)
    )""",
    # ── server: a run's number of open calls without an answer (storing one is O(1)) ──
    "ALTER TABLE runs ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0",
    "UPDATE runs SET unanswered = (SELECT count(*) FROM device_calls c "
    "WHERE c.run_id = runs.run_id AND c.done = 0 "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id)) "
    "WHERE status IN ('pending', 'running', 'interrupted')",
)

SQLITE_BUSY_MS = 10_000
T = TypeVar("T")

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

SELECT_RETRIES = (
    "SELECT path FROM relaygraph_file_retries WHERE agent_key = ? ORDER BY failed_at, path LIMIT ?"
)
DELETE_RETRY = "DELETE FROM relaygraph_file_retries WHERE agent_key = ? AND path = ?"
UPSERT_RETRY = (
    "INSERT INTO relaygraph_file_retries (agent_key, path, error, failed_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (agent_key, path) DO UPDATE SET error = excluded.error"
)
#: Files retried in one run (the triage takes at most as many; the rest wait their turn).
RETRIES_PER_RUN = 1_000


def outcome_statements(agent_key: str, report: dict[str, Any]) -> list[tuple[str, Sequence[Any]]]:
    """What a finished run changes for the next one, in its own transaction: the watermark
    moves (unless the run failed as a whole), the files it retried leave the ledger, and
    the files it could not process enter it (retried next run, changed or not)."""
    statements: list[tuple[str, Sequence[Any]]] = []
    if report.get("watermark"):
        statements.append((UPSERT_WATERMARK, (agent_key, report["watermark"])))
    statements += [(DELETE_RETRY, (agent_key, path)) for path in report.get("retried") or []]
    stamp = _now()
    statements += [
        (UPSERT_RETRY, (agent_key, f["path"], f["error"][:1_000], stamp))
        for f in report.get("failed_files") or []
    ]
    return statements


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
    async def results(
        self, *statements: tuple[str, Sequence[Any]]
    ) -> list[list[dict[str, Any]]]: ...
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...


class SqliteDatabase:
    """One sqlite3 connection used from one thread of its own: each call is one hop to that
    thread, whatever it runs (a transaction of several statements included); an asyncio lock
    keeps a `transaction()` whole among coroutines."""

    kind = "sqlite"

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self.conn = conn
        self.thread = thread
        self.lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: str) -> "SqliteDatabase":
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relaygraph-sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                thread, partial(sqlite3.connect, path, check_same_thread=False)
            )
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(conn, thread)

    async def close(self) -> None:
        await self._hop(self.conn.close)
        self.thread.shutdown(wait=True)

    async def _hop(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, work)

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.lock:
            return await self._hop(partial(_rows, self.conn, sql, params))

    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one writing statement and commit; the rows of its `RETURNING` clause."""
        async with self.lock:
            return await self._hop(partial(_committed, self.conn, _rows, sql, params))

    async def execute(self, *statements: tuple[str, Sequence[Any]]) -> int:
        """Run the statements in one transaction; the number of rows the last one changed."""
        async with self.lock:
            return await self._hop(partial(_committed, self.conn, _run_all, statements))

    async def results(self, *statements: tuple[str, Sequence[Any]]) -> list[list[dict[str, Any]]]:
        """Run the statements in one transaction; the rows each one returned."""
        async with self.lock:
            return await self._hop(partial(_committed, self.conn, _all_rows, statements))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.lock:
            await self._hop(partial(self.conn.execute, "BEGIN IMMEDIATE"))
            try:
                yield _SqliteTransaction(self)
            except BaseException:
                await self._hop(self.conn.rollback)
                raise
            await self._hop(self.conn.commit)


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    names = [c[0] for c in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _run_all(conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
    changed = 0
    for sql, params in statements:
        changed = conn.execute(sql, params).rowcount
    return changed


def _all_rows(
    conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[dict[str, Any]]]:
    return [_rows(conn, sql, params) for sql, params in statements]


def _committed(conn: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    """`work(conn, *args)`, committed, or rolled back if it raises (in the database's thread)."""
    try:
        result = work(conn, *args)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return result


class _SqliteTransaction:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        sql = sql.replace(" FOR UPDATE SKIP LOCKED", "")  # one writer at a time anyway
        return await self.db._hop(partial(_rows, self.db.conn, sql, params))

    async def run(self, sql: str, *params: Any) -> int:
        cursor = await self.db._hop(partial(self.db.conn.execute, sql, params))
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

    async def results(self, *statements: tuple[str, Sequence[Any]]) -> list[list[dict[str, Any]]]:
        """Run the statements in one transaction (one pipeline); the rows each returned."""
        async with self.pool.connection() as conn:
            async with conn.pipeline(), conn.transaction():
                cursors = [
                    await conn.execute(sql.replace("?", "%s"), params) for sql, params in statements
                ]
            return [
                cast(list[dict[str, Any]], await c.fetchall()) if c.description else []
                for c in cursors
            ]

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
        """Record the outcome and, in the same transaction, what the next run starts from:
        the watermark and the ledger of files to retry (`outcome_statements`)."""
        await self.db.execute(
            (FINISH_RUN, (report["status"], _now(), json.dumps(report), thread_id)),
            *outcome_statements(agent_key, report),
        )

    async def retry_files(self, agent_key: str) -> list[str]:
        """The files earlier runs could not process, oldest failure first."""
        rows = await self.db.fetch(SELECT_RETRIES, agent_key, RETRIES_PER_RUN)
        return [str(r["path"]) for r in rows]

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
        sqlite = await SqliteDatabase.connect(path)
    except sqlite3.Error as exc:
        raise StorageError(NOT_SQLITE.format(path=path, error=exc)) from exc
    try:
        pragmas = [f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}"]
        if kind == "sqlite":
            # In WAL mode a commit survives the process being killed at once; NORMAL leaves
            # only a power cut able to take back the last commits (FULL would fsync on each,
            # a third of a millisecond here). What such a cut could take back is recovered
            # by the protocol: an answer not in the inbox is asked for again on the device's
            # next hello, and the device replays it by call id.
            pragmas += ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"]
        try:
            for pragma in pragmas:
                await sqlite.fetch(pragma)
            await migrate(sqlite)
        except sqlite3.DatabaseError as exc:
            raise StorageError(NOT_SQLITE.format(path=path, error=exc)) from exc
        yield sqlite
    finally:
        await sqlite.close()


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[AppStore]:
    """The application store of `relaygraph run` in the database `url` names."""
    async with open_database(url, pool_size=2) as db:
        yield AppStore(db)


def _now() -> str:
    return datetime.now(UTC).isoformat()
