"""Per-thread locks for resuming: a Postgres advisory lock across server processes, an
in-process lock on SQLite (one process owns an embedded database).

A held lock is a `Lease`: the rows of the statements run as it was taken, and `release(*then)`
that runs its last statements and lets go, on Postgres in one network round trip."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast
from weakref import WeakValueDictionary

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from checkpoints import Database
from checkpoints.database import PostgresDatabase
from checkpoints.sql import Rows, Statement, postgres_sql

ADVISORY_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"
#: Before the unlock at the end of a pipeline: the same lock again, for the pipeline's
#: transaction. A pipeline's statements are one implicit transaction, committed at its end,
#: but a session lock goes at once: without this, another session could take the lock and
#: read the thread before the statements run with the unlock are committed.
ADVISORY_XACT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
#: After a failed pipeline: no session lock may go back to the pool with its connection (the
#: pool's connections take no advisory lock but these).
UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"


def try_lock(thread_id: str) -> str:
    """Postgres SQL that takes the lock of the thread `thread_id` (an SQL expression) if no
    one holds it: true if it did. For the first statement of `ThreadLocks.try_take`."""
    return f"pg_try_advisory_lock(hashtextextended({thread_id}, 0))"


class Lease:
    """One thread's lock, held. `results`: the rows of the statements run as it was taken.
    Release it once, with `release(*then)`: `then` run first, and their rows are returned. On
    Postgres they run in the same pipeline as the unlock, one transaction, and the lock is
    held until that transaction commits."""

    def __init__(
        self,
        db: Database,
        thread_id: str,
        results: list[Rows],
        *,
        local: asyncio.Lock | None,
        conn: AsyncConnection[DictRow] | None = None,
    ) -> None:
        self.db, self.thread_id, self.results = db, thread_id, results
        self._local, self._conn = local, conn
        self.released = False

    async def run(self, *statements: Statement) -> list[Rows]:
        """Run statements with the lock held (on Postgres on the lock's connection, one
        transaction). If they fail, the lock is let go."""
        if self.released:
            raise RuntimeError(f"the lock of thread {self.thread_id} was released already")
        if not statements:
            return []
        if self._conn is None:
            return await self.db.results(*statements)
        assert isinstance(self.db, PostgresDatabase)
        try:
            async with _returned(self.db, self._conn, keep=True):
                return await _pipeline(self._conn, statements)
        except BaseException:
            self.released = True
            if self._local is not None:
                self._local.release()
            raise

    async def release(self, *then: Statement) -> list[Rows]:
        if self.released:
            raise RuntimeError(f"the lock of thread {self.thread_id} was released already")
        self.released = True
        try:
            if self._conn is None:
                return await self.db.results(*then) if then else []
            assert isinstance(self.db, PostgresDatabase)
            async with _returned(self.db, self._conn):
                held = [(ADVISORY_XACT_LOCK, (self.thread_id,))] if then else []
                unlock = [*held, (ADVISORY_UNLOCK, (self.thread_id,))]
                rows = await _pipeline(self._conn, [*then, *unlock])
            return rows[: len(then)]
        finally:
            if self._local is not None:
                self._local.release()


class ThreadLocks:
    """`take(thread_id, *then)` waits for a thread's lock (one execution of a thread at a
    time) and runs `then` as soon as it is held (on Postgres in the same network round trip);
    `hold` is the same as a context manager. `try_take` (Postgres) takes a thread's lock only
    if it is free, in one round trip with other statements."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._local: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    @property
    def pipelined(self) -> bool:
        """Whether `try_take` is available (Postgres)."""
        return isinstance(self._db, PostgresDatabase)

    def _local_lock(self, thread_id: str) -> asyncio.Lock:
        lock = self._local.get(thread_id)
        if lock is None:
            lock = asyncio.Lock()
            self._local[thread_id] = lock
        return lock

    async def take(self, thread_id: str, *then: Statement) -> Lease:
        local = self._local_lock(thread_id)  # on Postgres: one waiting connection per thread
        await local.acquire()
        try:
            if not isinstance(self._db, PostgresDatabase):
                return Lease(self._db, thread_id, await self._db.results(*then), local=local)
            conn = await self._db.pool.getconn()
            async with _returned(self._db, conn, keep=True):
                rows = await _pipeline(conn, [(ADVISORY_LOCK, (thread_id,)), *then])
            return Lease(self._db, thread_id, rows[1:], local=local, conn=conn)
        except BaseException:
            local.release()
            raise

    @asynccontextmanager
    async def hold(self, thread_id: str, *then: Statement) -> AsyncIterator[Lease]:
        """`take`, released on leaving the block unless the block released it."""
        lease = await self.take(thread_id, *then)
        try:
            yield lease
        finally:
            if not lease.released:
                await lease.release()

    async def try_take(
        self, locking: Statement, *then: Statement
    ) -> tuple[Lease | None, list[Rows]]:
        """Postgres: in one pipeline, `locking`, a statement that may try a thread's lock
        (with `try_lock`; its first row, if any, names the thread in `thread_id` and says in
        `locked` whether it was taken), then `then`, which run *whether or not* it was (each
        statement seeing the ones before; one transaction). The lease (None if the lock was
        not taken) and every statement's rows.

        The lock is not waited for: the caller (the device socket's answer task) must not
        wait on a busy thread. Its in-process lock is not taken either; a local step waiting
        for the thread waits on Postgres instead, as a step of another process does."""
        if not isinstance(self._db, PostgresDatabase):
            raise TypeError("try_take needs Postgres (advisory locks in a pipeline)")
        conn = await self._db.pool.getconn()
        async with _returned(self._db, conn, keep=True):
            rows = await _pipeline(conn, [locking, *then])
        first = rows[0][0] if rows[0] else None
        if first is None or not first["locked"]:
            await self._db.pool.putconn(conn)
            return None, rows
        return Lease(self._db, str(first["thread_id"]), rows, local=None, conn=conn), rows


@asynccontextmanager
async def _returned(
    db: PostgresDatabase, conn: AsyncConnection[DictRow], *, keep: bool = False
) -> AsyncIterator[None]:
    """Give the connection back to the pool after the block, or, with `keep`, only if the
    block fails: a failure may leave a lock taken (the pipeline stopped after it), so every
    session lock is dropped first, or the connection closed if even that fails."""
    try:
        yield
    except BaseException:
        try:
            await conn.execute(UNLOCK_ALL)
        except psycopg.Error:  # the connection is broken: closing it ends its session and locks
            await conn.close()
        finally:
            await db.pool.putconn(conn)  # (one interrupted mid-query, the pool closes)
        raise
    if not keep:
        await db.pool.putconn(conn)


async def _pipeline(conn: AsyncConnection[DictRow], statements: Sequence[Statement]) -> list[Rows]:
    """The statements in one pipeline, in order. They are one implicit transaction (one Sync
    at the end), committed when the pipeline ends or rolled back at the first error, and each
    has a snapshot of its own: a statement after a lock sees what was committed before it."""
    async with conn.pipeline():
        cursors = [await conn.execute(postgres_sql(sql), params) for sql, params in statements]
    return [cast(Rows, await c.fetchall()) if c.description else [] for c in cursors]
