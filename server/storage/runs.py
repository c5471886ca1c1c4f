"""Runs: one row per job, from creation to its end; the order of one device's scheduled
runs; what a restarted process picks up; the watermark a local-agent run leaves."""

import json
import sqlite3
import uuid
from typing import Any

import psycopg

from checkpoints import Database, agent_progress
from checkpoints.clock import now
from checkpoints.database import Transaction
from checkpoints.sql import Statement
from server.records import Json, Run, RunStatus, ThreadStatus
from server.storage.columns import loads

COLUMNS = (
    "run_id, thread_id, assistant_id, user_id, status, kwargs, metadata, device_id, error, "
    "counts, created_at, updated_at, started_at, finished_at, cron_id"
)
#: A new run, pending; the thread's unique index of active runs refuses a second one.
INSERT = (
    "INSERT INTO runs (run_id, thread_id, assistant_id, user_id, status, kwargs, metadata, "
    "device_id, created_at, updated_at, cron_id) "
    "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)"
)
SET_THREAD_BUSY = "UPDATE threads SET status = 'busy', updated_at = ? WHERE thread_id = ?"
SELECT = f"SELECT {COLUMNS} FROM runs WHERE run_id = ?"
SELECT_OF_USER = f"SELECT {COLUMNS} FROM runs WHERE run_id = ? AND thread_id = ? AND user_id = ?"
#: A page of a thread's runs, newest first, of one status or any (NULL). Params: thread id,
#: user id, the status twice, limit, offset.
OF_THREAD = (
    f"SELECT {COLUMNS} FROM runs WHERE thread_id = ? AND user_id = ? "
    "AND (CAST(? AS TEXT) IS NULL OR status = ?) ORDER BY created_at DESC LIMIT ? OFFSET ?"
)
#: The same for an assistant's runs. Params: assistant id, then as `OF_THREAD`.
OF_ASSISTANT = (
    f"SELECT {COLUMNS} FROM runs WHERE assistant_id = ? AND user_id = ? "
    "AND (CAST(? AS TEXT) IS NULL OR status = ?) ORDER BY created_at DESC LIMIT ? OFFSET ?"
)
ACTIVE = (
    f"SELECT {COLUMNS} FROM runs WHERE thread_id = ? "
    "AND status IN ('pending', 'running', 'interrupted') ORDER BY created_at LIMIT 1"
)
START = (
    "UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?) "
    "WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')"
)
#: A run's end: its status and counts, its thread's status, its calls and answers gone.
FINISH = (
    "UPDATE runs SET status = ?, error = ?, counts = ?, updated_at = ?, finished_at = ? "
    "WHERE run_id = ? AND status NOT IN ('cancelled')"
)
CANCEL = (
    "UPDATE runs SET status = 'cancelled', updated_at = ?, finished_at = ? "
    "WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')"
)
SET_THREAD_STATUS = "UPDATE threads SET status = ?, updated_at = ? WHERE thread_id = ?"
DELETE_INBOX = "DELETE FROM device_inbox WHERE run_id = ?"
DELETE_CALLS = "DELETE FROM device_calls WHERE run_id = ?"
#: A parked run whose every open call has its answer (to be resumed).
ANSWERED_PARKED = (
    "status = 'interrupted' AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = "
    "runs.run_id AND c.done = 0) AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE "
    "c.run_id = runs.run_id AND c.done = 0 AND c.call_id NOT IN (SELECT call_id FROM "
    "device_inbox))"
)
#: What a starting process resumes: runs caught before or in a step, and parked runs whose
#: answers are all in.
TO_RECOVER = (
    f"SELECT run_id FROM runs WHERE status IN ('pending', 'running') OR ({ANSWERED_PARKED}) "
    "ORDER BY created_at"
)
STALE_PENDING = "SELECT run_id FROM runs WHERE status = 'pending' AND created_at < ?"
STALE_ANSWERED = f"SELECT run_id FROM runs WHERE {ANSWERED_PARKED} AND updated_at < ?"
EARLIER_OF_DEVICE = (
    "SELECT run_id FROM runs WHERE user_id = ? AND device_id = ? AND cron_id IS NOT NULL "
    "AND status IN ('pending', 'running', 'interrupted') AND run_id <> ? "
    "AND (created_at < ? OR (created_at = ? AND run_id < ?)) LIMIT 1"
)
NEXT_OF_DEVICE = (
    "SELECT run_id FROM runs WHERE user_id = ? AND device_id = ? AND cron_id IS NOT NULL "
    "AND status = 'pending' ORDER BY created_at, run_id LIMIT 1"
)


class ThreadBusy(Exception):
    """The thread already has an active run (the database refused a second one)."""


async def create(
    db: Database,
    *,
    user_id: str,
    thread_id: str,
    assistant_id: str,
    kwargs: Json,
    metadata: Json | None,
    device_id: str | None,
) -> Run:
    """A new pending run, its thread busy, in one transaction; raises `ThreadBusy`."""
    run_id, statements = _new_run(user_id, thread_id, assistant_id, kwargs, metadata, device_id)
    try:
        await db.execute(*statements)
    except (sqlite3.IntegrityError, psycopg.errors.UniqueViolation) as exc:
        raise ThreadBusy(thread_id) from exc
    run = await get(db, run_id)
    assert run is not None
    return run


async def insert(
    tx: Transaction,
    *,
    user_id: str,
    thread_id: str,
    assistant_id: str,
    kwargs: Json,
    metadata: Json,
    device_id: str | None,
    cron_id: str,
) -> str:
    """A scheduled run, in the cron's firing transaction; its id."""
    run_id, statements = _new_run(
        user_id, thread_id, assistant_id, kwargs, metadata, device_id, cron_id
    )
    for sql, params in statements:
        await tx.run(sql, *params)
    return run_id


def _new_run(
    user_id: str,
    thread_id: str,
    assistant_id: str,
    kwargs: Json,
    metadata: Json | None,
    device_id: str | None,
    cron_id: str | None = None,
) -> tuple[str, list[Statement]]:
    run_id, stamp = str(uuid.uuid4()), now()
    values = (json.dumps(kwargs), json.dumps(metadata or {}), device_id, stamp, stamp, cron_id)
    return run_id, [
        (INSERT, (run_id, thread_id, assistant_id, user_id, *values)),
        (SET_THREAD_BUSY, (stamp, thread_id)),
    ]


async def get(db: Database, run_id: str) -> Run | None:
    rows = await db.fetch(SELECT, run_id)
    return decode(rows[0]) if rows else None


async def get_of_user(db: Database, *, user_id: str, thread_id: str, run_id: str) -> Run | None:
    rows = await db.fetch(SELECT_OF_USER, run_id, thread_id, user_id)
    return decode(rows[0]) if rows else None


async def of_thread(
    db: Database,
    *,
    user_id: str,
    thread_id: str,
    limit: int,
    offset: int,
    status: str | None = None,
) -> list[Run]:
    """A page of the thread's runs, newest first."""
    rows = await db.fetch(OF_THREAD, thread_id, user_id, status, status, limit, offset)
    return [decode(r) for r in rows]


async def of_assistant(
    db: Database,
    *,
    user_id: str,
    assistant_id: str,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Run]:
    """A page of the assistant's run log, newest first."""
    rows = await db.fetch(OF_ASSISTANT, assistant_id, user_id, status, status, limit, offset)
    return [decode(r) for r in rows]


async def active(tx: Transaction, thread_id: str) -> Run | None:
    """The thread's active run (pending, running or interrupted), if any."""
    rows = await tx.fetch(ACTIVE, thread_id)
    return decode(rows[0]) if rows else None


async def start(db: Database, run: Run) -> bool:
    """The run is running (its thread busy); False if it has ended."""
    stamp = now()
    return bool(await db.execute((START, (stamp, stamp, run.run_id))))


async def finish(
    db: Database,
    *,
    run: Run,
    status: RunStatus,
    error: str | None,
    counts: Json,
    thread_status: ThreadStatus,
) -> None:
    """Record the run's end (a cancelled run stays cancelled), in one transaction."""
    stamp = now()
    await db.execute(
        (FINISH, (status, error, json.dumps(counts), stamp, stamp, run.run_id)),
        (SET_THREAD_STATUS, (thread_status, stamp, run.thread_id)),
        (DELETE_INBOX, (run.run_id,)),
        (DELETE_CALLS, (run.run_id,)),
    )


async def cancel(db: Database, run: Run) -> bool:
    """Cancel the run if it is active; False if it had ended."""
    stamp = now()
    cancelled = await db.execute((CANCEL, (stamp, stamp, run.run_id)))
    if cancelled:
        await db.execute(
            (SET_THREAD_STATUS, ("idle", stamp, run.thread_id)),
            (DELETE_INBOX, (run.run_id,)),
            (DELETE_CALLS, (run.run_id,)),
        )
    return bool(cancelled)


async def to_recover(db: Database) -> list[str]:
    return [str(r["run_id"]) for r in await db.fetch(TO_RECOVER)]


async def stale_pending(db: Database, *, before: str) -> list[str]:
    return [str(r["run_id"]) for r in await db.fetch(STALE_PENDING, before)]


async def stale_answered(db: Database, *, before: str) -> list[str]:
    """Runs parked before `before` whose calls are all answered yet which nobody resumed
    (two answers of one run stored at once by two connections each see the other missing)."""
    return [str(r["run_id"]) for r in await db.fetch(STALE_ANSWERED, before)]


async def earlier_of_device(db: Database, run: Run) -> str | None:
    """An active scheduled run of the same device created before this one."""
    rows = await db.fetch(
        EARLIER_OF_DEVICE,
        run.user_id,
        run.device_id,
        run.run_id,
        run.created_at,
        run.created_at,
        run.run_id,
    )
    return str(rows[0]["run_id"]) if rows else None


async def next_of_device(db: Database, *, user_id: str, device_id: str) -> str | None:
    """The device's oldest scheduled run still pending."""
    rows = await db.fetch(NEXT_OF_DEVICE, user_id, device_id)
    return str(rows[0]["run_id"]) if rows else None


# the local agent's progress per assistant (`checkpoints.agent_progress`, shared with the CLI)


async def watermark(db: Database, assistant_id: str) -> str | None:
    return await agent_progress.watermark(db, _agent_key(assistant_id))


async def retry_files(db: Database, assistant_id: str) -> list[str]:
    """The files the assistant's earlier runs could not process (retried next run)."""
    return await agent_progress.retry_files(db, _agent_key(assistant_id))


async def record_outcome(db: Database, *, assistant_id: str, report: Json) -> None:
    """The watermark and the retry ledger a finished local-agent run leaves, in one
    transaction."""
    await db.execute(*agent_progress.outcome_statements(_agent_key(assistant_id), report))


def _agent_key(assistant_id: str) -> str:
    """The assistant's key in `checkpoints.agent_progress`."""
    return f"assistant:{assistant_id}"


def decode(row: dict[str, Any], prefix: str = "") -> Run:
    """A run from its columns (`prefix`: as aliased in a join)."""
    counts = row[f"{prefix}counts"]
    return Run(
        run_id=str(row[f"{prefix}run_id"]),
        thread_id=str(row[f"{prefix}thread_id"]),
        assistant_id=str(row[f"{prefix}assistant_id"]),
        user_id=str(row[f"{prefix}user_id"]),
        status=row[f"{prefix}status"],
        kwargs=loads(row[f"{prefix}kwargs"]),
        metadata=loads(row[f"{prefix}metadata"]),
        device_id=row[f"{prefix}device_id"],
        error=row[f"{prefix}error"],
        counts=loads(counts) if counts else None,
        created_at=str(row[f"{prefix}created_at"]),
        updated_at=str(row[f"{prefix}updated_at"]),
        started_at=row[f"{prefix}started_at"],
        finished_at=row[f"{prefix}finished_at"],
        cron_id=row[f"{prefix}cron_id"],
    )
