"""Per-thread locks for resuming: a Postgres advisory lock across server processes, an
in-process lock on SQLite (one process owns an embedded database)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakValueDictionary

from checkpoints import Database
from checkpoints.store import PostgresDatabase

ADVISORY_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


class ThreadLocks:
    """`async with locks.hold(thread_id):` runs one execution of a thread at a time."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._local: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        lock = self._local.get(thread_id)
        if lock is None:
            lock = asyncio.Lock()
            self._local[thread_id] = lock
        async with lock:
            if isinstance(self._db, PostgresDatabase):
                async with self._db.pool.connection() as conn:
                    await conn.execute(ADVISORY_LOCK, (thread_id,))
                    try:
                        yield
                    finally:
                        await conn.execute(ADVISORY_UNLOCK, (thread_id,))
            else:
                yield
