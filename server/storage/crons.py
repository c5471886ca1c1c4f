"""Crons: schedules per user, and the statements of their firing (claimed with
`FOR UPDATE SKIP LOCKED` in the firing transaction, so each fires once across processes)."""

import json
from typing import Any

from checkpoints import Database
from checkpoints.clock import now
from checkpoints.database import Transaction
from server.records import Cron, Json
from server.storage.columns import loads

COLUMNS = (
    "cron_id, user_id, assistant_id, thread_id, schedule, timezone, end_time, enabled, payload, "
    "metadata, on_run_completed, next_run_at, overdue, last_run_at, created_at, updated_at"
)
INSERT = f"INSERT INTO crons ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?)"
SELECT = f"SELECT {COLUMNS} FROM crons WHERE cron_id = ? AND user_id = ?"
SELECT_ANY_USER = f"SELECT {COLUMNS} FROM crons WHERE cron_id = ?"
SEARCH = f"SELECT {COLUMNS} FROM crons WHERE user_id = ? ORDER BY created_at"
UPDATE = (
    "UPDATE crons SET schedule = ?, timezone = ?, end_time = ?, enabled = ?, payload = ?, "
    "metadata = ?, on_run_completed = ?, next_run_at = ?, overdue = 0, updated_at = ? "
    "WHERE cron_id = ? AND user_id = ?"
)
DELETE = "DELETE FROM crons WHERE cron_id = ? AND user_id = ?"
#: Due crons, claimed for the firing transaction (others skip them).
CLAIM_DUE = (
    f"SELECT {COLUMNS} FROM crons WHERE enabled = 1 AND next_run_at IS NOT NULL "
    "AND next_run_at <= ? ORDER BY next_run_at LIMIT ? FOR UPDATE SKIP LOCKED"
)
ADVANCE = (
    "UPDATE crons SET next_run_at = ?, last_run_at = ?, overdue = 0, updated_at = ? "
    "WHERE cron_id = ?"
)
MARK_OVERDUE = "UPDATE crons SET overdue = 1 WHERE cron_id = ?"
DISABLE = "UPDATE crons SET enabled = 0, next_run_at = NULL, updated_at = ? WHERE cron_id = ?"


async def create(db: Database, cron: Cron) -> Cron:
    """Store a new cron (its `overdue`, `last_run_at` and times are the store's)."""
    stamp = now()
    await db.execute(
        (
            INSERT,
            (
                cron.cron_id,
                cron.user_id,
                cron.assistant_id,
                cron.thread_id,
                cron.schedule,
                cron.timezone,
                cron.end_time,
                int(cron.enabled),
                json.dumps(cron.payload),
                json.dumps(cron.metadata),
                cron.on_run_completed,
                cron.next_run_at,
                stamp,
                stamp,
            ),
        )
    )
    found = await get(db, user_id=cron.user_id, cron_id=cron.cron_id)
    assert found is not None
    return found


async def get(db: Database, *, user_id: str, cron_id: str) -> Cron | None:
    rows = await db.fetch(SELECT, cron_id, user_id)
    return decode(rows[0]) if rows else None


async def get_any_user(db: Database, cron_id: str) -> Cron | None:
    """A cron by id alone (for the server's own use: a run's schedule)."""
    rows = await db.fetch(SELECT_ANY_USER, cron_id)
    return decode(rows[0]) if rows else None


async def update(db: Database, cron: Cron) -> Cron | None:
    """Store the cron's schedule, payload and settings (it is due again from
    `next_run_at`, not overdue); the cron as stored, None if it is gone."""
    await db.execute(
        (
            UPDATE,
            (
                cron.schedule,
                cron.timezone,
                cron.end_time,
                int(cron.enabled),
                json.dumps(cron.payload),
                json.dumps(cron.metadata),
                cron.on_run_completed,
                cron.next_run_at,
                now(),
                cron.cron_id,
                cron.user_id,
            ),
        )
    )
    return await get(db, user_id=cron.user_id, cron_id=cron.cron_id)


async def delete(db: Database, *, user_id: str, cron_id: str) -> bool:
    return bool(await db.execute((DELETE, (cron_id, user_id))))


async def search(
    db: Database,
    *,
    user_id: str,
    assistant_id: str | None,
    thread_id: str | None,
    enabled: bool | None,
) -> list[Cron]:
    return [
        c
        for c in map(decode, await db.fetch(SEARCH, user_id))
        if (assistant_id is None or c.assistant_id == assistant_id)
        and (thread_id is None or c.thread_id == thread_id)
        and (enabled is None or c.enabled == enabled)
    ]


# firing, in one transaction per tick


async def claim_due(tx: Transaction, *, at: str, limit: int) -> list[Cron]:
    """Enabled crons due at `at`, oldest first, locked until the transaction ends."""
    return [decode(r) for r in await tx.fetch(CLAIM_DUE, at, limit)]


async def advance(tx: Transaction, cron: Cron, *, fired_at: str, following: str | None) -> None:
    """The cron fired at `fired_at`; next due at `following` (None: never again)."""
    await tx.run(ADVANCE, following, fired_at, fired_at, cron.cron_id)


async def mark_overdue(tx: Transaction, cron: Cron) -> None:
    await tx.run(MARK_OVERDUE, cron.cron_id)


async def disable(tx: Transaction, cron: Cron, *, at: str) -> None:
    await tx.run(DISABLE, at, cron.cron_id)


def decode(row: dict[str, Any]) -> Cron:
    payload: Json = loads(row["payload"])
    return Cron(
        cron_id=str(row["cron_id"]),
        user_id=str(row["user_id"]),
        assistant_id=str(row["assistant_id"]),
        thread_id=row["thread_id"],
        schedule=str(row["schedule"]),
        timezone=str(row["timezone"]),
        end_time=row["end_time"],
        enabled=bool(row["enabled"]),
        payload=payload,
        metadata=loads(row["metadata"]),
        on_run_completed=row["on_run_completed"],
        next_run_at=row["next_run_at"],
        overdue=bool(row["overdue"]),
        last_run_at=row["last_run_at"],
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
    )
