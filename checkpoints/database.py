"""The application database: one small interface (`Database`) over SQLite and Postgres,
so the same SQL, written with `?` placeholders, runs on both; `open_database` opens and
migrates it (`checkpoints.migrations`).
"""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from checkpoints.factory import (
    NOT_SQLITE,
    StorageError,
    postgres_pool,
    private_file,
    sqlite_path,
    storage_kind,
)
from checkpoints.migrations import migrate
from checkpoints.sql import Statement, postgres_sql

SQLITE_BUSY_MS = 10_000
T = TypeVar("T")


class Transaction(Protocol):
    """Reads and writes inside one open transaction."""

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def run(self, sql: str, *params: Any) -> int: ...


class Database(Protocol):
    """What the stores need: read rows, run statements in one transaction, or hold a
    transaction open across reads and writes (`FOR UPDATE SKIP LOCKED` on Postgres). It is
    a `Transaction` too (`run`: one statement, committed), so a store function that takes a
    `Transaction` runs on its own or inside an open transaction."""

    kind: str

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def run(self, sql: str, *params: Any) -> int: ...
    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...
    async def execute(self, *statements: Statement) -> int: ...
    async def results(self, *statements: Statement) -> list[list[dict[str, Any]]]: ...
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

    async def run(self, sql: str, *params: Any) -> int:
        """Run one statement and commit; the number of rows it changed."""
        return await self.execute((sql, params))

    async def execute(self, *statements: Statement) -> int:
        """Run the statements in one transaction; the number of rows the last one changed."""
        async with self.lock:
            return await self._hop(partial(_committed, self.conn, _run_all, statements))

    async def results(self, *statements: Statement) -> list[list[dict[str, Any]]]:
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


def _run_all(conn: sqlite3.Connection, statements: Sequence[Statement]) -> int:
    changed = 0
    for sql, params in statements:
        changed = conn.execute(sql, params).rowcount
    return changed


def _all_rows(
    conn: sqlite3.Connection, statements: Sequence[Statement]
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
        cursor = await self.conn.execute(postgres_sql(sql), params)
        return cast(list[dict[str, Any]], await cursor.fetchall())

    async def run(self, sql: str, *params: Any) -> int:
        cursor = await self.conn.execute(postgres_sql(sql), params)
        return cursor.rowcount


class PostgresDatabase:
    """A psycopg pool; `?` placeholders become `%s` (`postgres_sql`)."""

    kind = "postgres"

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self.pool = pool

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(postgres_sql(sql), params)
            return cast(list[dict[str, Any]], await cursor.fetchall())

    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one writing statement (autocommit: its own transaction); its `RETURNING` rows."""
        return await self.fetch(sql, *params)

    async def run(self, sql: str, *params: Any) -> int:
        """Run one statement (autocommit); the number of rows it changed."""
        return await self.execute((sql, params))

    async def execute(self, *statements: Statement) -> int:
        """Run the statements in one transaction; the number of rows the last one changed.
        Several statements go in one pipeline: one network round trip, not one each."""
        async with self.pool.connection() as conn:
            if len(statements) == 1:
                sql, params = statements[0]
                return (await conn.execute(postgres_sql(sql), params)).rowcount
            async with conn.pipeline(), conn.transaction():
                cursors = [
                    await conn.execute(postgres_sql(sql), params) for sql, params in statements
                ]
        return cursors[-1].rowcount if cursors else 0

    async def results(self, *statements: Statement) -> list[list[dict[str, Any]]]:
        """Run the statements in one transaction (one pipeline); the rows each returned."""
        async with self.pool.connection() as conn:
            async with conn.pipeline(), conn.transaction():
                cursors = [
                    await conn.execute(postgres_sql(sql), params) for sql, params in statements
                ]
            return [
                cast(list[dict[str, Any]], await c.fetchall()) if c.description else []
                for c in cursors
            ]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.pool.connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)


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
        path = str(private_file(sqlite_path(url)))
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
