"""Per-thread locks for resuming: a Postgres advisory lock across server processes, an
in-process lock on SQLite (one process owns an embedded database)."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from weakref import WeakValueDictionary

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from checkpoints import Database
from checkpoints.store import PostgresDatabase

ADVISORY_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"

Statement = tuple[str, Sequence[Any]]
Rows = list[dict[str, Any]]


class ThreadLocks:
    """`async with locks.hold(thread_id, *then) as rows:` runs one execution of a thread at a
    time; `then` are statements run as soon as the lock is held (on Postgres in the same
    network round trip as taking it), and `rows` their results."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._local: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, thread_id: str, *then: Statement) -> AsyncIterator[list[Rows]]:
        lock = self._local.get(thread_id)
        if lock is None:
            lock = asyncio.Lock()
            self._local[thread_id] = lock
        async with lock:
            if not isinstance(self._db, PostgresDatabase):
                yield await self._db.results(*then)
                return
            async with self._db.pool.connection() as conn:
                try:
                    yield await _lock_then(conn, thread_id, then)
                finally:
                    await conn.execute(ADVISORY_UNLOCK, (thread_id,))


async def _lock_then(
    conn: AsyncConnection[DictRow], thread_id: str, then: Sequence[Statement]
) -> list[Rows]:
    """Take the advisory lock, then run `then`, all in one pipeline: Postgres runs them in
    order, each statement after the lock with a snapshot of its own."""
    async with conn.pipeline():
        await conn.execute(ADVISORY_LOCK, (thread_id,))
        cursors = [await conn.execute(sql.replace("?", "%s"), params) for sql, params in then]
    return [cast(Rows, await c.fetchall()) if c.description else [] for c in cursors]
