"""Open the checkpointer, and LangGraph's store, a URL names.

- `memory` (unit tests),
- a file path or `sqlite:///path` (the embedded default),
- `postgresql://...` (production): `AsyncPostgresSaver` over a psycopg pool with
  `autocommit=True`, `row_factory=dict_row`, `prepare_threshold=None`, and a `check=` that
  pings only connections left idle for a while (a ping on every checkout cost a network round
  trip per statement: see docs/benchmarks.md).
"""

import os
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import aiosqlite
import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.store.postgres.aio import AsyncPostgresStore
from langgraph.store.sqlite.aio import AsyncSqliteStore
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from checkpoints.caching_saver import CachingPostgresSaver
from checkpoints.kept import LatestCheckpoints

StorageKind = Literal["memory", "sqlite", "postgres"]
NOT_SQLITE = "{path} is not a SQLite database ({error})."
POSTGRES_UNREACHABLE = "Cannot reach Postgres at {url}: {error}"
#: A pooled connection idle for longer than this is pinged before it is handed out.
IDLE_CHECK_SECONDS = 5.0
#: psycopg's own default: a statement is prepared on its fifth execution.
PSYCOPG_PREPARE_THRESHOLD = 5


class StorageError(RuntimeError):
    """The configured storage cannot be opened."""


def storage_kind(url: str) -> StorageKind:
    """Which backend a URL (or a plain file path) names."""
    if url == "memory":
        return "memory"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgres"
    return "sqlite"


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///path` URL or a plain path."""
    return Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))


def private_file(path: Path) -> Path:
    """`path`, readable by its owner only (0600, and a folder made for it 0700): it holds
    keys, tokens and the user's data. SQLite gives its `-wal` and `-shm` files the database
    file's mode."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        # Only a file that does not exist yet is opened here: closing a descriptor of a file
        # that SQLite holds would drop the process's POSIX locks on it (fcntl semantics).
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    return path


class IdleCheck:
    """The pool's `check=`: ping a connection only when it has been idle for more than
    `IDLE_CHECK_SECONDS` (one that fails is replaced by the pool); a connection in use every
    few milliseconds is handed out as it is."""

    def __init__(self, idle_seconds: float = IDLE_CHECK_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._last_out: weakref.WeakKeyDictionary[AsyncConnection[DictRow], float] = (
            weakref.WeakKeyDictionary()
        )

    async def __call__(self, conn: AsyncConnection[DictRow]) -> None:
        now = time.monotonic()
        last = self._last_out.get(conn)
        if last is None or now - last > self.idle_seconds or conn.broken:
            await AsyncConnectionPool.check_connection(conn)
        self._last_out[conn] = now


@asynccontextmanager
async def postgres_pool(
    url: str, *, max_size: int = 10, prepare: bool = False
) -> AsyncIterator[AsyncConnectionPool[AsyncConnection[DictRow]]]:
    """A psycopg pool with the settings the LangGraph savers need. `prepare`: statements
    used repeatedly become server-side prepared statements (psycopg's default threshold),
    which spares Postgres planning them on every call; the savers' pool keeps them off."""
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "prepare_threshold": PSYCOPG_PREPARE_THRESHOLD if prepare else None,
        },
        check=IdleCheck(),
    )
    try:
        await pool.open(wait=True, timeout=15)
    except psycopg.OperationalError as exc:  # PoolTimeout is one
        await pool.close()
        raise StorageError(POSTGRES_UNREACHABLE.format(url=_redacted(url), error=exc)) from exc
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def open_checkpointer(url: str) -> AsyncIterator[BaseCheckpointSaver]:
    """The checkpointer for `url`, set up and ready; closed on exit."""
    async with open_checkpointers(url, count=1) as savers:
        yield savers[0]


@asynccontextmanager
async def open_checkpointers(
    url: str, *, count: int, pool_size: int = 10, keep_latest: int | None = None
) -> AsyncIterator[list[BaseCheckpointSaver]]:
    """`count` Postgres savers over one pool (each runs one operation at a time), or the
    one saver of an embedded or in-memory store. `keep_latest`: on Postgres, the server's
    savers (`checkpoints.caching_saver.CachingPostgresSaver`), which keep the latest checkpoint of
    that many threads in memory (0: none) and can defer their writes; None: LangGraph's own."""
    if storage_kind(url) == "postgres":
        async with postgres_pool(url, max_size=max(pool_size, count + 2)) as pool:
            latest = LatestCheckpoints(keep_latest or 0)
            savers = [
                AsyncPostgresSaver(pool)
                if keep_latest is None
                else CachingPostgresSaver(pool, latest=latest)
                for _ in range(max(1, count))
            ]
            await savers[0].setup()
            yield list(savers)
        return
    async with _open_single(url) as saver:
        yield [saver]


@asynccontextmanager
async def _open_single(url: str) -> AsyncIterator[BaseCheckpointSaver]:
    if storage_kind(url) == "memory":
        yield InMemorySaver()
    else:
        async with _on_sqlite(url, AsyncSqliteSaver) as saver:
            yield saver


@asynccontextmanager
async def open_graph_store(url: str, *, pool_size: int = 4) -> AsyncIterator[BaseStore]:
    """LangGraph's store on the same database as the checkpoints, set up and ready:
    `InMemoryStore`, `AsyncSqliteStore` (a connection of its own, WAL) or
    `AsyncPostgresStore` (a pool of its own, the savers' settings)."""
    kind = storage_kind(url)
    if kind == "memory":
        yield InMemoryStore()
    elif kind == "postgres":
        async with postgres_pool(url, max_size=pool_size) as pool:
            store = AsyncPostgresStore(pool)
            await store.setup()
            yield store
    else:
        # the store begins and commits its own transactions
        async with _on_sqlite(url, AsyncSqliteStore, isolation_level=None) as store_sqlite:
            yield store_sqlite


class _SetUp(Protocol):
    async def setup(self) -> None: ...


T = TypeVar("T", bound=_SetUp)


@asynccontextmanager
async def _on_sqlite(
    url: str, build: Callable[[aiosqlite.Connection], T], *, isolation_level: str | None = ""
) -> AsyncIterator[T]:
    """`build` over a WAL connection of its own to the SQLite file `url` names, set up; the
    connection closes on exit. A file that is not SQLite raises `StorageError`."""
    path = private_file(sqlite_path(url))
    conn = await aiosqlite.connect(path, isolation_level=isolation_level)
    try:
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute("PRAGMA journal_mode = WAL")
        built = build(conn)
        await built.setup()
    except sqlite3.DatabaseError as exc:
        await conn.close()
        raise StorageError(NOT_SQLITE.format(path=path, error=exc)) from exc
    try:
        yield built
    finally:
        await conn.close()


def _redacted(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
