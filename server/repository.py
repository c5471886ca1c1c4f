"""The server's rows: keys, devices, assistants, threads, runs, and the device outbox/inbox.

SQL is kept in module constants; the same statements run on SQLite and Postgres. JSON
columns are text. Every read of a user's resource is filtered by `user_id`: another user's
ids simply do not exist (the API answers 404).
"""

import hashlib
import json
import secrets
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from checkpoints import Database, agent_progress
from checkpoints.clock import now
from checkpoints.kept import CheckpointMark
from device.protocol import make_device_token
from server.locks import try_lock


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# ── Keys and devices ──────────────────────────────────────────────────────────

INSERT_KEY = "INSERT INTO api_keys (key_hash, user_id, created_at) VALUES (?, ?, ?)"
SELECT_KEY = "SELECT user_id FROM api_keys WHERE key_hash = ?"
UPSERT_DEVICE = (
    "INSERT INTO devices (user_id, device_id, token_hash, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = excluded.token_hash"
)
SELECT_DEVICE = "SELECT user_id, device_id FROM devices WHERE token_hash = ?"

# ── Assistants ────────────────────────────────────────────────────────────────

ASSISTANT_COLUMNS = (
    "assistant_id, user_id, graph_id, name, description, config, context, metadata, version, "
    "created_at, updated_at"
)
INSERT_ASSISTANT = (
    f"INSERT INTO assistants ({ASSISTANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (assistant_id) DO NOTHING"
)
SELECT_ASSISTANT = (
    f"SELECT {ASSISTANT_COLUMNS} FROM assistants WHERE assistant_id = ? AND user_id = ?"
)
UPDATE_ASSISTANT = (
    "UPDATE assistants SET graph_id = ?, name = ?, description = ?, config = ?, context = ?, "
    "metadata = ?, version = version + 1, updated_at = ? WHERE assistant_id = ? AND user_id = ?"
)
DELETE_ASSISTANT = "DELETE FROM assistants WHERE assistant_id = ? AND user_id = ?"
SEARCH_ASSISTANTS = f"SELECT {ASSISTANT_COLUMNS} FROM assistants WHERE user_id = ?"

# ── Threads ───────────────────────────────────────────────────────────────────

THREAD_COLUMNS = "thread_id, user_id, status, metadata, created_at, updated_at"
#: A thread's status is its active run's while it has one (busy, or interrupted while the run
#: waits on its device), else the one its last run left (idle, error, or interrupted for a
#: human); so a device round trip writes the run's status only.
THREAD_STATUS = (
    "CASE (SELECT r.status FROM runs r WHERE r.thread_id = threads.thread_id "
    "AND r.status IN ('pending', 'running', 'interrupted')) "
    "WHEN 'interrupted' THEN 'interrupted' WHEN 'pending' THEN 'busy' "
    "WHEN 'running' THEN 'busy' ELSE threads.status END"
)
THREAD_READ = f"thread_id, user_id, {THREAD_STATUS} AS status, metadata, created_at, updated_at"
INSERT_THREAD = (
    f"INSERT INTO threads ({THREAD_COLUMNS}) VALUES (?, ?, 'idle', ?, ?, ?) "
    "ON CONFLICT (thread_id) DO NOTHING"
)
SELECT_THREAD = f"SELECT {THREAD_READ} FROM threads WHERE thread_id = ? AND user_id = ?"
UPDATE_THREAD_STATUS = "UPDATE threads SET status = ?, updated_at = ? WHERE thread_id = ?"
UPDATE_THREAD_METADATA = "UPDATE threads SET metadata = ?, updated_at = ? WHERE thread_id = ?"
DELETE_THREAD = "DELETE FROM threads WHERE thread_id = ? AND user_id = ?"
DELETE_THREAD_RUNS = "DELETE FROM runs WHERE thread_id = ?"
SEARCH_THREADS = (
    f"SELECT {THREAD_COLUMNS} FROM (SELECT {THREAD_READ} FROM threads WHERE user_id = ?) AS t "
    "WHERE 1 = 1"
)

# ── Runs ──────────────────────────────────────────────────────────────────────

RUN_COLUMNS = (
    "run_id, thread_id, assistant_id, user_id, status, kwargs, metadata, device_id, error, "
    "counts, created_at, updated_at, started_at, finished_at, cron_id"
)
INSERT_RUN = (
    "INSERT INTO runs (run_id, thread_id, assistant_id, user_id, status, kwargs, metadata, "
    "device_id, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)"
)
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
STEP_COLUMNS = (
    f"{', '.join('r.' + c.strip() for c in RUN_COLUMNS.split(','))}, "
    "a.graph_id, a.config AS assistant_config, a.context AS assistant_context, "
    "c.interrupt_id, c.call_id, i.call_id AS answered, i.ok, i.payload"
)
STEP_JOINS = (
    "FROM runs r LEFT JOIN assistants a ON a.assistant_id = r.assistant_id "
    "AND a.user_id = r.user_id "
    "LEFT JOIN device_calls c ON c.run_id = r.run_id AND c.done = 0 "
    "LEFT JOIN device_inbox i ON i.call_id = c.call_id"
)
SELECT_STEP = f"SELECT {STEP_COLUMNS} {STEP_JOINS} WHERE r.run_id = ? ORDER BY c.seq"
#: Postgres: the thread's latest root checkpoint and its number of stored writes (the
#: checkpointer's tables), read with the run under its thread's lock: what the step may take
#: from the checkpoints this process keeps (`checkpoints.kept`).
MARK_COLUMNS = "mark.checkpoint_id AS mark_checkpoint, mark.writes AS mark_writes"
MARK_JOIN = (
    "LEFT JOIN LATERAL (SELECT k.checkpoint_id, (SELECT count(*) FROM checkpoint_writes w "
    "WHERE w.thread_id = k.thread_id AND w.checkpoint_ns = '' "
    "AND w.checkpoint_id = k.checkpoint_id) AS writes FROM checkpoints k "
    "WHERE k.thread_id = r.thread_id AND k.checkpoint_ns = '' "
    "ORDER BY k.checkpoint_id DESC LIMIT 1) mark ON true"
)
SELECT_USER_RUN = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ? AND thread_id = ? AND user_id = ?"
)
LIST_RUNS = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE thread_id = ? AND user_id = ? "
    "ORDER BY created_at DESC LIMIT ? OFFSET ?"
)
FINAL_STATUSES = ("success", "partial", "error", "cancelled")
SELECT_ACTIVE_RUN = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE thread_id = ? "
    "AND status IN ('pending', 'running', 'interrupted') ORDER BY created_at LIMIT 1"
)
PARK_RUN = (
    "UPDATE runs SET status = 'interrupted', updated_at = ? "
    "WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted') RETURNING run_id"
)
START_RUN = (
    "UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?) "
    "WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')"
)
FINISH_RUN = (
    "UPDATE runs SET status = ?, error = ?, counts = ?, updated_at = ?, finished_at = ? "
    "WHERE run_id = ? AND status NOT IN ('cancelled')"
)
CANCEL_RUN = (
    "UPDATE runs SET status = 'cancelled', updated_at = ?, finished_at = ? "
    "WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')"
)
ANSWERED_PARKED = (
    "status = 'interrupted' AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = "
    "runs.run_id AND c.done = 0) AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE "
    "c.run_id = runs.run_id AND c.done = 0 AND c.call_id NOT IN (SELECT call_id FROM "
    "device_inbox))"
)
RUNS_TO_RECOVER = (
    f"SELECT run_id FROM runs WHERE status IN ('pending', 'running') OR ({ANSWERED_PARKED}) "
    "ORDER BY created_at"
)

# ── Device outbox and inbox ───────────────────────────────────────────────────

#: A park's calls, inserted by one statement whatever their number (the batch as arrays: a
#: statement per call, or a row of parameters each, grows past Postgres's 65,535 parameters
#: at ~6,000 calls and plans in time quadratic in them), and only while the run is live.
#: Params: device id, created at, pushed at, then the interrupt ids, call ids, names and
#: args (JSON text) as parallel arrays (a JSON array of 4-element arrays on SQLite), the run.
INSERT_CALLS = {
    "postgres": (
        "INSERT INTO device_calls (call_id, run_id, thread_id, interrupt_id, user_id, "
        "device_id, name, args, seq, created_at, pushed_at) "
        "SELECT c.call_id, r.run_id, r.thread_id, c.interrupt_id, r.user_id, ?, c.name, "
        "c.args, c.seq - 1, ?, ? "
        "FROM runs r, unnest(?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY "
        "AS c (interrupt_id, call_id, name, args, seq) "
        "WHERE r.run_id = ? AND r.status IN ('pending', 'running', 'interrupted') "
        "ON CONFLICT (call_id) DO NOTHING"
    ),
    "sqlite": (
        "INSERT INTO device_calls (call_id, run_id, thread_id, interrupt_id, user_id, "
        "device_id, name, args, seq, created_at, pushed_at) "
        "SELECT json_extract(c.value, '$[1]'), r.run_id, r.thread_id, "
        "json_extract(c.value, '$[0]'), r.user_id, ?, json_extract(c.value, '$[2]'), "
        "json_extract(c.value, '$[3]'), c.key, ?, ? "
        "FROM runs r, json_each(?) c "
        "WHERE r.run_id = ? AND r.status IN ('pending', 'running', 'interrupted') "
        "ON CONFLICT (call_id) DO NOTHING"
    ),
}
CALL_COLUMNS = "c.call_id, c.run_id, c.thread_id, c.interrupt_id, c.device_id, c.name, c.args"
PENDING_FOR_DEVICE = (
    f"SELECT {CALL_COLUMNS}, r.assistant_id FROM device_calls c JOIN runs r ON r.run_id = c.run_id "
    "WHERE c.user_id = ? AND (c.device_id = ? OR c.device_id IS NULL) AND c.done = 0 "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id) "
    "ORDER BY c.created_at, c.seq"
)
PENDING_FOR_RUN = (
    f"SELECT {CALL_COLUMNS}, r.assistant_id FROM device_calls c JOIN runs r ON r.run_id = c.run_id "
    "WHERE c.run_id = ? AND c.done = 0 "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id) ORDER BY c.seq"
)
BIND_UNBOUND = (
    "UPDATE device_calls SET device_id = ? WHERE user_id = ? AND device_id IS NULL AND done = 0"
)
UNPUSHED_FOR_DEVICE = (
    f"SELECT {CALL_COLUMNS}, r.assistant_id FROM device_calls c JOIN runs r ON r.run_id = c.run_id "
    "WHERE c.user_id = ? AND c.device_id = ? AND c.done = 0 AND c.pushed_at IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id) "
    "ORDER BY c.created_at, c.seq"
)
#: The calls just sent, marked in one statement (params: the time, the call ids: an array on
#: Postgres, a JSON array on SQLite).
MARK_PUSHED = {
    "postgres": "UPDATE device_calls SET pushed_at = ? WHERE call_id = ANY(?::text[])",
    "sqlite": (
        "UPDATE device_calls SET pushed_at = ? WHERE call_id IN (SELECT value FROM json_each(?))"
    ),
}
SELECT_CALL = "SELECT call_id, run_id, user_id, device_id, done FROM device_calls WHERE call_id = ?"
#: A call found by its id alone, as `dc` (params: the call id), for `OF_DEVICE` to check: the
#: `LIMIT 1` (an id has one row) keeps Postgres from folding the user and the device into the
#: lookup, which it may then make through the index of the device's open calls, reading every
#: one of them (as it does before statistics say otherwise).
CALL_BY_ID = (
    "(SELECT call_id, run_id, user_id, device_id, done FROM device_calls "
    "WHERE call_id = ? LIMIT 1) dc"
)
#: The call is this user's device's (params: user id, device id): sent to it, or to any
#: device of its user.
OF_DEVICE = "dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL)"
# A run's `unanswered` is its number of open calls without an answer: set by the park
# (`COUNT_UNANSWERED`), one less with each new answer, in the answer's own statement (Postgres)
# or transaction (SQLite). Storing an answer so costs the same however many calls are open.
#: The answer, for an open call of this user's device, once (a duplicate or a late answer
#: stores nothing).
INSERT_ANSWER = (
    "INSERT INTO device_inbox (call_id, run_id, ok, payload, received_at) "
    f"SELECT dc.call_id, dc.run_id, ?, ?, ? FROM {CALL_BY_ID} WHERE {OF_DEVICE} AND dc.done = 0 "
    "ON CONFLICT (call_id) DO NOTHING RETURNING run_id"
)
#: Postgres: the answer and, only if it was stored, one call less for its run to wait for,
#: with what the run needs next (`{locked}`: more columns after the counted ones).
STORE_ANSWER_OF = (
    f"WITH stored AS ({INSERT_ANSWER}), "
    "counted AS (UPDATE runs r SET unanswered = r.unanswered - 1 FROM stored "
    "WHERE r.run_id = stored.run_id RETURNING r.thread_id, r.status, r.unanswered) "
    "SELECT stored.run_id, counted.thread_id, counted.status, counted.unanswered{locked} "
    "FROM stored LEFT JOIN counted ON true"
)
STORE_ANSWER = STORE_ANSWER_OF.format(locked="")
#: Postgres: the same, and the lock of its run's thread tried when it was the last answer
#: the run waited for (`locked`).
STORE_ANSWER_TRY_LOCK = STORE_ANSWER_OF.format(
    locked=", CASE WHEN counted.status = 'interrupted' AND counted.unanswered <= 0 "
    f"THEN {try_lock('counted.thread_id')} ELSE false END AS locked"
)
#: SQLite (no writing `WITH`): one call less for the run of an open call of this user's
#: device that has no answer yet, just before `INSERT_ANSWER` in one transaction (one writer
#: at a time, so the two see the same calls and answers).
COUNT_ANSWER = (
    "UPDATE runs SET unanswered = unanswered - 1 WHERE run_id = "
    f"(SELECT dc.run_id FROM {CALL_BY_ID} WHERE {OF_DEVICE} AND dc.done = 0 "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = dc.call_id)) "
    "RETURNING thread_id, status, unanswered"
)
CLOSE_OPEN_CALLS = "UPDATE device_calls SET done = 1 WHERE run_id = ? AND done = 0"
#: The park's last statement: the run's counter set from its open calls and their answers,
#: once they are stored (a statement of its own, so on Postgres it sees the park's writes);
#: it returns the run only if it is parked.
COUNT_UNANSWERED = (
    "UPDATE runs SET unanswered = (SELECT count(*) FROM device_calls c "
    "WHERE c.run_id = runs.run_id AND c.done = 0 "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id)) "
    "WHERE run_id = ? AND status = 'interrupted' RETURNING run_id"
)
DELETE_RUN_CALLS = "DELETE FROM device_calls WHERE run_id = ?"
DELETE_RUN_INBOX = "DELETE FROM device_inbox WHERE run_id = ?"
RUN_DEVICES = (
    "SELECT DISTINCT device_id FROM device_calls WHERE run_id = ? AND device_id IS NOT NULL"
)

# ── Schedules, presence, sequencing, watermarks ───────────────────────────────

CRON_COLUMNS = (
    "cron_id, user_id, assistant_id, thread_id, schedule, timezone, end_time, enabled, payload, "
    "metadata, on_run_completed, next_run_at, overdue, last_run_at, created_at, updated_at"
)
INSERT_CRON = f"INSERT INTO crons ({CRON_COLUMNS}) VALUES ({', '.join('?' * 16)})"
SELECT_CRON = f"SELECT {CRON_COLUMNS} FROM crons WHERE cron_id = ? AND user_id = ?"
SEARCH_CRONS = f"SELECT {CRON_COLUMNS} FROM crons WHERE user_id = ?"
UPDATE_CRON = (
    "UPDATE crons SET schedule = ?, timezone = ?, end_time = ?, enabled = ?, payload = ?, "
    "metadata = ?, on_run_completed = ?, next_run_at = ?, overdue = 0, updated_at = ? "
    "WHERE cron_id = ? AND user_id = ?"
)
DELETE_CRON = "DELETE FROM crons WHERE cron_id = ? AND user_id = ?"
SELECT_CRON_BY_ID = f"SELECT {CRON_COLUMNS} FROM crons WHERE cron_id = ?"
SET_ONLINE = "UPDATE devices SET online_until = ? WHERE user_id = ? AND device_id = ?"
EARLIER_DEVICE_RUN = (
    "SELECT run_id FROM runs WHERE user_id = ? AND device_id = ? AND cron_id IS NOT NULL "
    "AND status IN ('pending', 'running', 'interrupted') AND run_id <> ? "
    "AND (created_at < ? OR (created_at = ? AND run_id < ?)) LIMIT 1"
)
NEXT_DEVICE_RUN = (
    "SELECT run_id FROM runs WHERE user_id = ? AND device_id = ? AND cron_id IS NOT NULL "
    "AND status = 'pending' ORDER BY created_at, run_id LIMIT 1"
)
STALE_PENDING = "SELECT run_id FROM runs WHERE status = 'pending' AND created_at < ?"
STALE_ANSWERED = f"SELECT run_id FROM runs WHERE {ANSWERED_PARKED} AND updated_at < ?"
#: A parked run whose every open call is answered becomes running (to be resumed).
CLAIM_ANSWERED_OF = (
    "UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?) "
    f"WHERE {{run}} AND {ANSWERED_PARKED} RETURNING run_id"
)
CLAIM_ANSWERED = CLAIM_ANSWERED_OF.format(run="run_id = ?")
#: The run of an open call of this user's device, for the statements that follow its answer.
RUN_OF_CALL = f"(SELECT dc.run_id FROM {CALL_BY_ID} WHERE {OF_DEVICE})"
#: After an answer: the claim, with the calls checked only once the run's counter says none
#: is left unanswered, so an answer that leaves calls open reads none of them.
CLAIM_ANSWERED_CALL = CLAIM_ANSWERED_OF.format(run=f"run_id = {RUN_OF_CALL} AND unanswered <= 0")
ASSISTANT_RUNS = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE assistant_id = ? AND user_id = ? "
    "ORDER BY created_at DESC"
)


AnswerOutcome = Literal["stored", "duplicate", "late", "unknown"]


@dataclass(frozen=True)
class Answer:
    """What became of a device's answer."""

    outcome: AnswerOutcome
    run_id: str | None = None
    thread_id: str | None = None
    #: Every call of the run's pending interrupts is now answered: the run can resume.
    completes: bool = False


@dataclass(frozen=True)
class OpenCall:
    """A call of a parked run's pending interrupts, with its answer once stored."""

    interrupt_id: str
    call_id: str
    answer: dict[str, Any] | None


@dataclass(frozen=True)
class Execution:
    """What executing a run starts from."""

    run: dict[str, Any]
    assistant: dict[str, Any] | None
    open_calls: list[OpenCall]
    #: The run was parked with every call answered and is now `running`: resume those calls.
    claimed: bool = False
    #: Postgres: its thread's latest checkpoint, read under the thread's lock.
    checkpoint: CheckpointMark | None = None


class ThreadBusy(Exception):
    """The thread already has an active run (the database refused a second one)."""


@dataclass(frozen=True)
class PendingCall:
    """A device call waiting in the outbox."""

    call_id: str
    run_id: str
    thread_id: str
    assistant_id: str
    interrupt_id: str
    device_id: str | None
    name: str
    args: dict[str, Any]


class Repository:
    """All server reads and writes, as keyword-only methods over one `Database`."""

    def __init__(self, db: Database, *, checkpoint_marks: bool = False) -> None:
        """`checkpoint_marks`: the step's read of a run also reads its thread's latest
        checkpoint (`Execution.checkpoint`), for savers that keep them (Postgres only: the
        checkpointer's tables must be in the same database)."""
        self.db = db
        self.checkpoint_marks = checkpoint_marks and db.kind == "postgres"

    # keys and devices

    async def create_api_key(self, *, user_id: str) -> str:
        key = "rgk_" + secrets.token_urlsafe(32)
        await self.db.execute((INSERT_KEY, (_hash(key), user_id, now())))
        return key

    async def user_for_key(self, key: str) -> str | None:
        rows = await self.db.fetch(SELECT_KEY, _hash(key))
        return str(rows[0]["user_id"]) if rows else None

    async def add_device(self, *, user_id: str, device_id: str) -> str:
        """A new token for the device (an existing device gets a new token; the old one stops
        working)."""
        token = make_device_token(device_id, secrets.token_urlsafe(32))
        await self.db.execute((UPSERT_DEVICE, (user_id, device_id, _hash(token), now())))
        return token

    async def device_for_token(self, token: str) -> tuple[str, str] | None:
        rows = await self.db.fetch(SELECT_DEVICE, _hash(token))
        return (str(rows[0]["user_id"]), str(rows[0]["device_id"])) if rows else None

    # assistants

    async def create_assistant(
        self,
        *,
        user_id: str,
        graph_id: str,
        assistant_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        config: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """(the assistant, whether it was created); an existing id is returned as it is."""
        assistant_id = assistant_id or str(uuid.uuid4())
        stamp = now()
        created = await self.db.execute(
            (
                INSERT_ASSISTANT,
                (
                    assistant_id,
                    user_id,
                    graph_id,
                    name or graph_id,
                    description,
                    json.dumps(config or {}),
                    json.dumps(context or {}),
                    json.dumps(metadata or {}),
                    1,
                    stamp,
                    stamp,
                ),
            )
        )
        found = await self.get_assistant(user_id=user_id, assistant_id=assistant_id)
        if found is None:  # the id belongs to another user
            raise PermissionError(assistant_id)
        return found, bool(created)

    async def get_assistant(self, *, user_id: str, assistant_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_ASSISTANT, assistant_id, user_id)
        return _assistant(rows[0]) if rows else None

    async def update_assistant(
        self, *, user_id: str, assistant_id: str, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        current = await self.get_assistant(user_id=user_id, assistant_id=assistant_id)
        if current is None:
            return None
        merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
        if changes.get("metadata") is not None:
            merged["metadata"] = {**current["metadata"], **changes["metadata"]}
        await self.db.execute(
            (
                UPDATE_ASSISTANT,
                (
                    merged["graph_id"],
                    merged["name"],
                    merged.get("description"),
                    json.dumps(merged["config"]),
                    json.dumps(merged["context"]),
                    json.dumps(merged["metadata"]),
                    now(),
                    assistant_id,
                    user_id,
                ),
            )
        )
        return await self.get_assistant(user_id=user_id, assistant_id=assistant_id)

    async def delete_assistant(self, *, user_id: str, assistant_id: str) -> bool:
        return bool(await self.db.execute((DELETE_ASSISTANT, (assistant_id, user_id))))

    async def search_assistants(
        self,
        *,
        user_id: str,
        graph_id: str | None,
        metadata: dict[str, Any] | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        sql, params = SEARCH_ASSISTANTS, [user_id]
        if graph_id:
            sql += " AND graph_id = ?"
            params.append(graph_id)
        rows = [_assistant(r) for r in await self.db.fetch(sql + " ORDER BY created_at", *params)]
        rows = [r for r in rows if _matches(r["metadata"], metadata)]
        return rows[offset : offset + limit]

    # threads

    async def create_thread(
        self, *, user_id: str, thread_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any] | None, bool]:
        """(the thread, whether it was created); None when the id is another user's."""
        thread_id = thread_id or str(uuid.uuid4())
        stamp = now()
        created = await self.db.execute(
            (INSERT_THREAD, (thread_id, user_id, json.dumps(metadata or {}), stamp, stamp))
        )
        return await self.get_thread(user_id=user_id, thread_id=thread_id), bool(created)

    async def get_thread(self, *, user_id: str, thread_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_THREAD, thread_id, user_id)
        return _thread(rows[0]) if rows else None

    async def update_thread_metadata(self, *, thread_id: str, metadata: dict[str, Any]) -> None:
        await self.db.execute((UPDATE_THREAD_METADATA, (json.dumps(metadata), now(), thread_id)))

    async def delete_thread(self, *, user_id: str, thread_id: str) -> bool:
        """The thread and its runs, in one transaction."""
        async with self.db.transaction() as tx:
            deleted = await tx.run(DELETE_THREAD, thread_id, user_id)
            if deleted:
                await tx.run(DELETE_THREAD_RUNS, thread_id)
        return bool(deleted)

    async def search_threads(
        self,
        *,
        user_id: str,
        status: str | None,
        metadata: dict[str, Any] | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        sql, params = SEARCH_THREADS, [user_id]
        if status:
            sql += " AND status = ?"
            params.append(status)
        rows = [_thread(r) for r in await self.db.fetch(sql + " ORDER BY created_at DESC", *params)]
        rows = [r for r in rows if _matches(r["metadata"], metadata)]
        return rows[offset : offset + limit]

    # runs

    async def create_run(
        self,
        *,
        user_id: str,
        thread_id: str,
        assistant_id: str,
        kwargs: dict[str, Any],
        metadata: dict[str, Any] | None,
        device_id: str | None,
    ) -> dict[str, Any]:
        run_id = str(uuid.uuid4())
        stamp = now()
        try:
            await self.db.execute(
                (
                    INSERT_RUN,
                    (
                        run_id,
                        thread_id,
                        assistant_id,
                        user_id,
                        json.dumps(kwargs),
                        json.dumps(metadata or {}),
                        device_id,
                        stamp,
                        stamp,
                    ),
                ),
                (UPDATE_THREAD_STATUS, ("busy", stamp, thread_id)),
            )
        except (sqlite3.IntegrityError, psycopg.errors.UniqueViolation) as exc:
            raise ThreadBusy(thread_id) from exc
        run = await self.get_run(run_id)
        assert run is not None
        return run

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_RUN, run_id)
        return _run(rows[0]) if rows else None

    async def get_user_run(
        self, *, user_id: str, thread_id: str, run_id: str
    ) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_USER_RUN, run_id, thread_id, user_id)
        return _run(rows[0]) if rows else None

    async def list_runs(
        self, *, user_id: str, thread_id: str, limit: int, offset: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        rows = [_run(r) for r in await self.db.fetch(LIST_RUNS, thread_id, user_id, 10_000, 0)]
        if status:
            rows = [r for r in rows if r["status"] == status]
        return rows[offset : offset + limit]

    async def active_run(self, thread_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_ACTIVE_RUN, thread_id)
        return _run(rows[0]) if rows else None

    def answer_reads(
        self, *, user_id: str, device_id: str, call_id: str, ok: bool, payload: Any
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """Postgres: an answer and what a step reads first, for one pipeline: store the answer
        and, if it was the run's last missing one, try its thread's lock; then claim its run
        if every answer is in, and read the run if it was claimed. `answer_of` makes the
        first result an `Answer` (its rows also say whether the lock was taken: `locked`),
        `execution_of` the rest an `Execution` (None when nothing was claimed)."""
        stamp = now()
        call = (call_id, user_id, device_id)
        return [
            (STORE_ANSWER_TRY_LOCK, (int(ok), json.dumps(payload), stamp, *call)),
            claim_and_read(
                CLAIM_ANSWERED_CALL,
                (stamp, stamp, *call),
                f"r.run_id = {RUN_OF_CALL} AND EXISTS (SELECT 1 FROM claimed)",
                call,
                mark=self.checkpoint_marks,
            ),
        ]

    def execution_reads(self, run_id: str) -> list[tuple[str, tuple[Any, ...]]]:
        """What a step reads first, under its thread's lock: claim the run if it is parked
        with every answer in, then read it (`execution_of` makes the result an `Execution`);
        on Postgres in one statement."""
        stamp = now()
        claim = (stamp, stamp, run_id)
        if self.db.kind == "postgres":
            where = "r.run_id = ?"
            return [
                claim_and_read(CLAIM_ANSWERED, claim, where, (run_id,), mark=self.checkpoint_marks)
            ]
        return [(CLAIM_ANSWERED, claim), (SELECT_STEP, (run_id,))]

    @staticmethod
    def execution_of(results: list[list[dict[str, Any]]]) -> "Execution | None":
        """A run as a step needs it: the run, its assistant (None once deleted), and its open
        calls with their answers so far; None if the run does not exist. `results`: of the
        claim and the read, or of the two in one statement (`claim_and_read`)."""
        if len(results) == 2:
            claims, rows = results
            claimed = bool(claims)
        else:
            (rows,) = results
            claimed = bool(rows and rows[0]["claimed"])
        if not rows:
            return None
        first = rows[0]
        assistant = None
        if first["graph_id"] is not None:
            assistant = {
                "assistant_id": first["assistant_id"],
                "graph_id": first["graph_id"],
                "config": _loads(first["assistant_config"]),
                "context": _loads(first["assistant_context"]),
            }
        calls = [
            OpenCall(
                interrupt_id=str(row["interrupt_id"]),
                call_id=str(row["call_id"]),
                answer=None if row["answered"] is None else _bridge_result(row),
            )
            for row in rows
            if row["call_id"] is not None
        ]
        run = _run(first)
        if claimed:  # read in the claim's statement, so as it was before the claim
            run["status"] = "running"
        mark = None
        if "mark_writes" in first:
            mark = CheckpointMark(
                thread_id=run["thread_id"],
                checkpoint_id=first["mark_checkpoint"],
                writes=int(first["mark_writes"] or 0),
            )
        return Execution(run, assistant, calls, claimed=claimed, checkpoint=mark)

    async def start_step(self, run: dict[str, Any]) -> bool:
        """The run is running (its thread busy); False if it has ended."""
        stamp = now()
        return bool(await self.db.execute((START_RUN, (stamp, stamp, run["run_id"]))))

    def park_statements(
        self,
        *,
        run: dict[str, Any],
        calls: list[tuple[str, str, str, dict[str, Any]]],
        device_id: str | None,
        pushed: bool = False,
        resumed: bool = False,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """Store the calls of the pending interrupts (interrupt id, call id, name, args) and
        mark the run (so its thread) interrupted, in one transaction that stores nothing if
        the run has ended meanwhile (cancelled from another server process); `parked` reads
        the result. `resumed`: the step just run consumed the run's open calls and their
        answers (they are closed and the answers dropped in the same transaction). `pushed`:
        this process holds the device's socket and sends them next (no other process needs
        to). On Postgres the statements are one."""
        stamp = now()
        run_id = run["run_id"]
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if resumed:
            statements += [(CLOSE_OPEN_CALLS, (run_id,)), (DELETE_RUN_INBOX, (run_id,))]
        rows = [(i, c, name, json.dumps(args)) for i, c, name, args in calls]
        batch: tuple[Any, ...]
        if self.db.kind == "postgres":  # four parallel arrays
            batch = tuple([row[k] for row in rows] for k in range(4))
        else:  # one JSON array of rows
            batch = (json.dumps(rows),)
        insert = (device_id, stamp, stamp if pushed else None, *batch, run_id)
        statements.append((INSERT_CALLS[self.db.kind], insert))
        statements.append((PARK_RUN, (stamp, run_id)))
        if self.db.kind == "postgres":
            statements = [one_statement(statements)]
        return [*statements, (COUNT_UNANSWERED, (run_id,))]

    @staticmethod
    def parked(results: list[list[dict[str, Any]]]) -> bool:
        """Whether the park's statements parked the run (it had not ended): the last one,
        `COUNT_UNANSWERED`, returns the run only then."""
        return bool(results and results[-1])

    async def finish_run(
        self,
        *,
        run: dict[str, Any],
        status: str,
        error: str | None,
        counts: dict[str, Any],
        thread_status: str,
    ) -> None:
        stamp = now()
        await self.db.execute(
            (FINISH_RUN, (status, error, json.dumps(counts), stamp, stamp, run["run_id"])),
            (UPDATE_THREAD_STATUS, (thread_status, stamp, run["thread_id"])),
            (DELETE_RUN_INBOX, (run["run_id"],)),
            (DELETE_RUN_CALLS, (run["run_id"],)),
        )

    async def cancel_run(self, *, run: dict[str, Any]) -> bool:
        stamp = now()
        cancelled = await self.db.execute((CANCEL_RUN, (stamp, stamp, run["run_id"])))
        if cancelled:
            await self.db.execute(
                (UPDATE_THREAD_STATUS, ("idle", stamp, run["thread_id"])),
                (DELETE_RUN_INBOX, (run["run_id"],)),
                (DELETE_RUN_CALLS, (run["run_id"],)),
            )
        return bool(cancelled)

    async def runs_to_recover(self) -> list[str]:
        return [str(r["run_id"]) for r in await self.db.fetch(RUNS_TO_RECOVER)]

    # the device bridge

    async def pending_for_device(self, *, user_id: str, device_id: str) -> list[PendingCall]:
        """Calls waiting for this device, unbound calls of its user included (and now bound)."""
        await self.db.execute((BIND_UNBOUND, (device_id, user_id)))
        return [_call(r) for r in await self.db.fetch(PENDING_FOR_DEVICE, user_id, device_id)]

    async def unpushed_for_device(self, *, user_id: str, device_id: str) -> list[PendingCall]:
        """Calls for this device that no process could send yet (parked by a process that
        does not hold its socket); unbound calls of its user are bound to it first."""
        await self.db.execute((BIND_UNBOUND, (device_id, user_id)))
        rows = await self.db.fetch(UNPUSHED_FOR_DEVICE, user_id, device_id)
        return [_call(r) for r in rows]

    async def mark_pushed(self, call_ids: Sequence[str]) -> None:
        ids = list(call_ids) if self.db.kind == "postgres" else json.dumps(list(call_ids))
        await self.db.execute((MARK_PUSHED[self.db.kind], (now(), ids)))

    async def pending_for_run(self, run_id: str) -> list[PendingCall]:
        return [_call(r) for r in await self.db.fetch(PENDING_FOR_RUN, run_id)]

    async def record_answer(
        self, *, user_id: str, device_id: str, call_id: str, ok: bool, payload: Any
    ) -> Answer:
        """Store an answer durably (invariant 5) and count it against its run's open calls,
        in one statement on Postgres, one transaction on SQLite."""
        call = (call_id, user_id, device_id)
        answer = (int(ok), json.dumps(payload), now(), *call)
        if self.db.kind == "postgres":
            stored = await self.db.write(STORE_ANSWER, *answer)
        else:
            counted, inserted = await self.db.results((COUNT_ANSWER, call), (INSERT_ANSWER, answer))
            stored = [{**inserted[0], **counted[0]} if counted else inserted[0]] if inserted else []
        return await self.answer_of(stored, user_id=user_id, device_id=device_id, call_id=call_id)

    async def answer_of(
        self, stored: list[dict[str, Any]], *, user_id: str, device_id: str, call_id: str
    ) -> Answer:
        """What became of an answer, from the rows its statement returned (none: it was not
        new, and one more read tells a duplicate, a late and an unknown one apart). A run whose
        counter is at 0 or below is complete: the counter can be low, never high, if a
        duplicate was stored as a park closed its call (Postgres: it waited for the park's
        delete of the first answer, then found no conflict), so it goes on down to the real
        last answer, and the claim checks the calls themselves before it resumes the run."""
        if stored:
            row = stored[0]
            count, thread_id = row.get("unanswered"), row.get("thread_id")
            completes = row.get("status") == "interrupted" and count is not None and count <= 0
            thread = None if thread_id is None else str(thread_id)
            return Answer("stored", str(row["run_id"]), thread, completes)
        rows = await self.db.fetch(SELECT_CALL, call_id)
        if (
            not rows
            or rows[0]["user_id"] != user_id
            or rows[0]["device_id"] not in (device_id, None)
        ):
            return Answer("unknown")
        run_id = str(rows[0]["run_id"])
        return Answer("late" if rows[0]["done"] else "duplicate", run_id)

    async def run_devices(self, run_id: str) -> list[str]:
        return [str(r["device_id"]) for r in await self.db.fetch(RUN_DEVICES, run_id)]

    # schedules

    async def create_cron(self, *, cron: dict[str, Any]) -> dict[str, Any]:
        stamp = now()
        await self.db.execute(
            (
                INSERT_CRON,
                (
                    cron["cron_id"],
                    cron["user_id"],
                    cron["assistant_id"],
                    cron.get("thread_id"),
                    cron["schedule"],
                    cron["timezone"],
                    cron.get("end_time"),
                    int(cron["enabled"]),
                    json.dumps(cron["payload"]),
                    json.dumps(cron["metadata"]),
                    cron["on_run_completed"],
                    cron.get("next_run_at"),
                    0,
                    None,
                    stamp,
                    stamp,
                ),
            )
        )
        found = await self.get_cron(user_id=cron["user_id"], cron_id=cron["cron_id"])
        assert found is not None
        return found

    async def get_cron(self, *, user_id: str, cron_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_CRON, cron_id, user_id)
        return _cron(rows[0]) if rows else None

    async def cron_by_id(self, cron_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(SELECT_CRON_BY_ID, cron_id)
        return _cron(rows[0]) if rows else None

    async def update_cron(self, *, user_id: str, cron: dict[str, Any]) -> None:
        await self.db.execute(
            (
                UPDATE_CRON,
                (
                    cron["schedule"],
                    cron["timezone"],
                    cron.get("end_time"),
                    int(cron["enabled"]),
                    json.dumps(cron["payload"]),
                    json.dumps(cron["metadata"]),
                    cron["on_run_completed"],
                    cron.get("next_run_at"),
                    now(),
                    cron["cron_id"],
                    user_id,
                ),
            )
        )

    async def delete_cron(self, *, user_id: str, cron_id: str) -> bool:
        return bool(await self.db.execute((DELETE_CRON, (cron_id, user_id))))

    async def search_crons(
        self,
        *,
        user_id: str,
        assistant_id: str | None,
        thread_id: str | None,
        enabled: bool | None,
    ) -> list[dict[str, Any]]:
        rows = [
            _cron(r) for r in await self.db.fetch(SEARCH_CRONS + " ORDER BY created_at", user_id)
        ]
        return [
            r
            for r in rows
            if (assistant_id is None or r["assistant_id"] == assistant_id)
            and (thread_id is None or r["thread_id"] == thread_id)
            and (enabled is None or r["enabled"] == enabled)
        ]

    # device presence, shared by every server process through the database

    async def set_online(self, *, user_id: str, device_id: str, until: str | None) -> None:
        await self.db.execute((SET_ONLINE, (until, user_id, device_id)))

    # runs of one device, one after another (scheduled runs)

    async def earlier_device_run(self, run: dict[str, Any]) -> str | None:
        rows = await self.db.fetch(
            EARLIER_DEVICE_RUN,
            run["user_id"],
            run["device_id"],
            run["run_id"],
            run["created_at"],
            run["created_at"],
            run["run_id"],
        )
        return str(rows[0]["run_id"]) if rows else None

    async def next_device_run(self, *, user_id: str, device_id: str) -> str | None:
        rows = await self.db.fetch(NEXT_DEVICE_RUN, user_id, device_id)
        return str(rows[0]["run_id"]) if rows else None

    async def stale_pending_runs(self, *, before: str) -> list[str]:
        return [str(r["run_id"]) for r in await self.db.fetch(STALE_PENDING, before)]

    async def stale_answered_runs(self, *, before: str) -> list[str]:
        """Runs parked before `before` whose calls are all answered yet which nobody resumed
        (two answers of one run stored at once by two connections each see the other
        missing)."""
        return [str(r["run_id"]) for r in await self.db.fetch(STALE_ANSWERED, before)]

    # run history and watermarks per assistant

    async def assistant_runs(
        self, *, user_id: str, assistant_id: str, status: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        rows = [_run(r) for r in await self.db.fetch(ASSISTANT_RUNS, assistant_id, user_id)]
        if status:
            rows = [r for r in rows if r["status"] == status]
        return rows[offset : offset + limit]

    async def assistant_watermark(self, assistant_id: str) -> str | None:
        return await agent_progress.watermark(self.db, _agent_key(assistant_id))

    async def assistant_retries(self, assistant_id: str) -> list[str]:
        """The files the assistant's earlier runs could not process (retried next run)."""
        return await agent_progress.retry_files(self.db, _agent_key(assistant_id))

    async def record_assistant_outcome(self, *, assistant_id: str, report: dict[str, Any]) -> None:
        """The watermark and the retry ledger a finished local-agent run leaves, in one
        transaction (`checkpoints.agent_progress`, shared with `relaygraph run`)."""
        await self.db.execute(*agent_progress.outcome_statements(_agent_key(assistant_id), report))


def _agent_key(assistant_id: str) -> str:
    """The assistant's key in `checkpoints.agent_progress`."""
    return f"assistant:{assistant_id}"


def claim_and_read(
    claim: str,
    claim_params: tuple[Any, ...],
    where: str,
    where_params: tuple[Any, ...],
    *,
    mark: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """Postgres: a claim (an `UPDATE runs ... RETURNING`) and the step's read of the run it
    names as one statement, with a `claimed` column. Both see one snapshot, so the read shows
    the run as it was before the claim (`execution_of` sets the status the claim gave it).
    `mark`: also read the thread's latest checkpoint (`MARK_COLUMNS`)."""
    marks = (f", {MARK_COLUMNS}", MARK_JOIN) if mark else ("", "")
    sql = (
        f"WITH claimed AS ({claim}) SELECT {STEP_COLUMNS}, "
        f"EXISTS (SELECT 1 FROM claimed) AS claimed{marks[0]} {STEP_JOINS} {marks[1]} "
        f"WHERE {where} ORDER BY c.seq"
    )
    return sql, claim_params + where_params


def one_statement(statements: list[tuple[str, tuple[Any, ...]]]) -> tuple[str, tuple[Any, ...]]:
    """Postgres: writes as one statement, every one but the last in a data-modifying `WITH`
    (atomic as a transaction, one network round trip and one plan instead of one each). The
    writes must touch different rows: their order within the statement is not defined."""
    *first, (last_sql, last_params) = statements
    if not first:
        return last_sql, last_params
    parts = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(first))
    params = tuple(p for _, ps in first for p in ps) + last_params
    return f"WITH {parts} {last_sql}", params


def _matches(values: dict[str, Any], wanted: dict[str, Any] | None) -> bool:
    return all(values.get(k) == v for k, v in (wanted or {}).items())


def _assistant(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "assistant_id": row["assistant_id"],
        "graph_id": row["graph_id"],
        "name": row["name"],
        "description": row["description"],
        "config": _loads(row["config"]),
        "context": _loads(row["context"]),
        "metadata": _loads(row["metadata"]),
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _thread(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "thread_id": row["thread_id"],
        "status": row["status"],
        "metadata": _loads(row["metadata"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "values": None,
        "interrupts": {},
        "config": {},
    }


def _run(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "thread_id": row["thread_id"],
        "assistant_id": row["assistant_id"],
        "user_id": row["user_id"],
        "status": row["status"],
        "kwargs": _loads(row["kwargs"]),
        "metadata": _loads(row["metadata"]),
        "device_id": row["device_id"],
        "error": row["error"],
        "counts": _loads(row["counts"]) if row["counts"] else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "cron_id": row.get("cron_id"),
        "duration_ms": _duration_ms(row["started_at"], row["finished_at"]),
        "multitask_strategy": "reject",
    }


def _bridge_result(row: dict[str, Any]) -> dict[str, Any]:
    """A stored answer as the bridge's result for its call."""
    payload = _loads(row["payload"])
    return {"ok": True, "result": payload} if row["ok"] else {"ok": False, "error": str(payload)}


def _duration_ms(started: str | None, finished: str | None) -> int | None:
    if not started or not finished:
        return None
    delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    return int(delta.total_seconds() * 1000)


def _call(row: dict[str, Any]) -> PendingCall:
    return PendingCall(
        call_id=str(row["call_id"]),
        run_id=str(row["run_id"]),
        thread_id=str(row["thread_id"]),
        assistant_id=str(row["assistant_id"]),
        interrupt_id=str(row["interrupt_id"]),
        device_id=row["device_id"],
        name=str(row["name"]),
        args=_loads(row["args"]),
    )


def _cron(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "cron_id": row["cron_id"],
        "user_id": row["user_id"],
        "assistant_id": row["assistant_id"],
        "thread_id": row["thread_id"],
        "schedule": row["schedule"],
        "timezone": row["timezone"],
        "end_time": row["end_time"],
        "enabled": bool(row["enabled"]),
        "payload": _loads(row["payload"]),
        "metadata": _loads(row["metadata"]),
        "on_run_completed": row["on_run_completed"],
        "next_run_date": row["next_run_at"],
        "overdue": bool(row["overdue"]),
        "last_run_at": row["last_run_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
