"""Threads: status and metadata (their checkpoints live in the checkpointer)."""

import json
import uuid
from typing import Any

from checkpoints import Database
from checkpoints.clock import now
from checkpoints.database import Transaction
from server.records import Json, Thread, ThreadStatus
from server.storage.columns import loads, matches

#: A thread's status is its active run's while it has one (busy, or interrupted while the run
#: waits on its device), else the one its last run left (idle, error, or interrupted for a
#: human); so a device round trip writes the run's status only.
COLUMNS = (
    "thread_id, CASE (SELECT r.status FROM runs r WHERE r.thread_id = threads.thread_id "
    "AND r.status IN ('pending', 'running', 'interrupted')) "
    "WHEN 'interrupted' THEN 'interrupted' WHEN 'pending' THEN 'busy' "
    "WHEN 'running' THEN 'busy' ELSE threads.status END AS status, "
    "metadata, created_at, updated_at"
)
INSERT = (
    "INSERT INTO threads (thread_id, user_id, status, metadata, created_at, updated_at) "
    "VALUES (?, ?, 'idle', ?, ?, ?) ON CONFLICT (thread_id) DO NOTHING"
)
SELECT = f"SELECT {COLUMNS} FROM threads WHERE thread_id = ? AND user_id = ?"
SET_METADATA = "UPDATE threads SET metadata = ?, updated_at = ? WHERE thread_id = ?"
DELETE = "DELETE FROM threads WHERE thread_id = ? AND user_id = ?"
DELETE_RUNS = "DELETE FROM runs WHERE thread_id = ?"
SEARCH = (
    f"SELECT * FROM (SELECT {COLUMNS} FROM threads WHERE user_id = ?) AS t ORDER BY created_at DESC"
)
SEARCH_STATUS = (
    f"SELECT * FROM (SELECT {COLUMNS} FROM threads WHERE user_id = ?) AS t "
    "WHERE status = ? ORDER BY created_at DESC"
)


async def create(
    db: Database, *, user_id: str, thread_id: str | None = None, metadata: Json | None = None
) -> tuple[Thread | None, bool]:
    """(the thread, whether it was created); None when the id is another user's."""
    thread_id = thread_id or str(uuid.uuid4())
    created = await insert(db, user_id=user_id, thread_id=thread_id, metadata=metadata or {})
    return await get(db, user_id=user_id, thread_id=thread_id), created


async def insert(
    tx: Transaction,
    *,
    user_id: str,
    thread_id: str,
    metadata: Json,
) -> bool:
    """Store a new idle thread (in an open transaction, or on its own); False if the id
    exists."""
    stamp = now()
    return bool(await tx.run(INSERT, thread_id, user_id, json.dumps(metadata), stamp, stamp))


async def get(db: Database, *, user_id: str, thread_id: str) -> Thread | None:
    rows = await db.fetch(SELECT, thread_id, user_id)
    return decode(rows[0]) if rows else None


async def set_metadata(db: Database, *, thread_id: str, metadata: Json) -> None:
    await db.execute((SET_METADATA, (json.dumps(metadata), now(), thread_id)))


async def delete(db: Database, *, user_id: str, thread_id: str) -> bool:
    """The thread and its runs, in one transaction."""
    async with db.transaction() as tx:
        deleted = await tx.run(DELETE, thread_id, user_id)
        if deleted:
            await tx.run(DELETE_RUNS, thread_id)
    return bool(deleted)


async def search(
    db: Database,
    *,
    user_id: str,
    status: ThreadStatus | None,
    metadata: Json | None,
    limit: int,
    offset: int,
) -> list[Thread]:
    if status:
        rows = await db.fetch(SEARCH_STATUS, user_id, status)
    else:
        rows = await db.fetch(SEARCH, user_id)
    found = [t for t in map(decode, rows) if matches(t.metadata, metadata)]
    return found[offset : offset + limit]


def decode(row: dict[str, Any]) -> Thread:
    return Thread(
        thread_id=str(row["thread_id"]),
        status=row["status"],
        metadata=loads(row["metadata"]),
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
    )
