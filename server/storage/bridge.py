"""The device bridge's storage: the outbox (`device_calls`: a parked run's calls, open until
the run steps past them) and the inbox (`device_inbox`: their answers, stored before anything
acts on them, invariant 5), and the statements a round trip runs: park, answer, claim.

Every statement a round trip runs on Postgres is one constant here, written out whole, so
what runs on each answer can be read (and pasted into `psql`, `?` as `$n`) as it is:

- an answer: `STORE_ANSWER_TRY_LOCK` then `CLAIM_AFTER_ANSWER` (or `..._MARKED`), in one
  pipeline (`RunManager.answer`), or `STORE_ANSWER` alone when no worker is free;
- a step's start: `CLAIM_AND_READ` (or `..._MARKED`) under the thread's lock;
- a step's end: `PARK` or `PARK_RESUMED`, then `COUNT_UNANSWERED`, as the lock is let go.

SQLite (one writer, no writing `WITH`) runs the same steps as several statements in one
transaction. `tests/test_bridge_statements.py` checks that the whole statements say what
their parts say.

A run's `unanswered` is its number of open calls without an answer: set by the park
(`COUNT_UNANSWERED`), one less with each new answer, in the answer's own statement (Postgres)
or transaction (SQLite). Storing an answer so costs the same however many calls are open.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from checkpoints import Database
from checkpoints.clock import now
from checkpoints.kept import CheckpointMark
from checkpoints.sql import Query, Rows, Statement
from server.records import Assistant, Json, OutboxCall, Run
from server.storage import assistants, runs
from server.storage.columns import loads

#: A call a park stores: (interrupt id, call id, tool name, arguments).
ParkCall = tuple[str, str, str, Json]

# ── The call a device answers ─────────────────────────────────────────────────
# Found by its id alone (the `LIMIT 1`: an id has one row) keeps Postgres from folding the
# user and the device into the lookup, which it may then make through the index of the
# device's open calls, reading every one of them (as it does before statistics say
# otherwise); then checked to be this user's device's (sent to it, or to any device of its
# user). The same in every statement below that starts from an answer.

#: The answer, for an open call of this user's device, once (a duplicate or a late answer
#: stores nothing). Params: ok, payload, received at, call id, user id, device id.
INSERT_ANSWER = """
INSERT INTO device_inbox (call_id, run_id, ok, payload, received_at)
SELECT dc.call_id, dc.run_id, ?, ?, ?
FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
      WHERE call_id = ? LIMIT 1) dc
WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL) AND dc.done = 0
ON CONFLICT (call_id) DO NOTHING
RETURNING run_id
"""

#: Postgres: the answer (as `INSERT_ANSWER`) and, only if it was stored, one call less for
#: its run to wait for; what the run needs next. Params: as `INSERT_ANSWER`.
STORE_ANSWER = """
WITH stored AS (
  INSERT INTO device_inbox (call_id, run_id, ok, payload, received_at)
  SELECT dc.call_id, dc.run_id, ?, ?, ?
  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
        WHERE call_id = ? LIMIT 1) dc
  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL) AND dc.done = 0
  ON CONFLICT (call_id) DO NOTHING
  RETURNING run_id
), counted AS (
  UPDATE runs r SET unanswered = r.unanswered - 1 FROM stored
  WHERE r.run_id = stored.run_id
  RETURNING r.thread_id, r.status, r.unanswered
)
SELECT stored.run_id, counted.thread_id, counted.status, counted.unanswered
FROM stored LEFT JOIN counted ON true
"""

#: Postgres: `STORE_ANSWER`, and the lock of its run's thread tried (`server.locks`'s key)
#: when it was the last answer the run waited for: `locked`. Params: as `INSERT_ANSWER`.
STORE_ANSWER_TRY_LOCK = """
WITH stored AS (
  INSERT INTO device_inbox (call_id, run_id, ok, payload, received_at)
  SELECT dc.call_id, dc.run_id, ?, ?, ?
  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
        WHERE call_id = ? LIMIT 1) dc
  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL) AND dc.done = 0
  ON CONFLICT (call_id) DO NOTHING
  RETURNING run_id
), counted AS (
  UPDATE runs r SET unanswered = r.unanswered - 1 FROM stored
  WHERE r.run_id = stored.run_id
  RETURNING r.thread_id, r.status, r.unanswered
)
SELECT stored.run_id, counted.thread_id, counted.status, counted.unanswered,
       CASE WHEN counted.status = 'interrupted' AND counted.unanswered <= 0
            THEN pg_try_advisory_lock(hashtextextended(counted.thread_id, 0))
            ELSE false END AS locked
FROM stored LEFT JOIN counted ON true
"""

#: SQLite: one call less for the run of an open call of this user's device that has no
#: answer yet, just before `INSERT_ANSWER` in one transaction (one writer at a time, so the
#: two see the same calls and answers). Params: call id, user id, device id.
COUNT_ANSWER = """
UPDATE runs SET unanswered = unanswered - 1
WHERE run_id = (
  SELECT dc.run_id
  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
        WHERE call_id = ? LIMIT 1) dc
  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL) AND dc.done = 0
    AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = dc.call_id))
RETURNING thread_id, status, unanswered
"""

#: What an answer that stored nothing was: a duplicate, a late one, or an unknown call.
SELECT_CALL = "SELECT call_id, run_id, user_id, device_id, done FROM device_calls WHERE call_id = ?"

# ── Claim and read: what a step starts from ───────────────────────────────────
# A parked run whose every open call is answered becomes running (claimed), and the step
# reads the run, its assistant, its open calls with their answers, in the claim's statement
# (one snapshot: the read shows the run as it was before the claim). `_MARKED`: also its
# thread's latest root checkpoint and its number of stored writes (the checkpointer's
# tables), what the step may take from the checkpoints this process keeps (`checkpoints.kept`).

#: Postgres, after an answer: the claim of the answered call's run, with its calls checked
#: only once the run's counter says none is left unanswered (so an answer that leaves calls
#: open reads none of them), and the read of the run if it was claimed. Params: the time
#: twice, call id, user id, device id, and the call, user and device again.
CLAIM_AFTER_ANSWER = """
WITH claimed AS (
  UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?)
  WHERE run_id = (SELECT dc.run_id
                  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
                        WHERE call_id = ? LIMIT 1) dc
                  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL))
    AND unanswered <= 0
    AND status = 'interrupted'
    AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0)
    AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0
                    AND c.call_id NOT IN (SELECT call_id FROM device_inbox))
  RETURNING run_id
)
SELECT r.run_id, r.thread_id, r.assistant_id, r.user_id, r.status, r.kwargs, r.metadata,
       r.device_id, r.error, r.counts, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.cron_id,
       a.assistant_id AS a_assistant_id, a.graph_id AS a_graph_id, a.name AS a_name,
       a.description AS a_description, a.config AS a_config, a.context AS a_context,
       a.metadata AS a_metadata, a.version AS a_version, a.created_at AS a_created_at,
       a.updated_at AS a_updated_at,
       c.interrupt_id, c.call_id, i.call_id AS answered, i.ok, i.payload,
       EXISTS (SELECT 1 FROM claimed) AS claimed
FROM runs r
LEFT JOIN assistants a ON a.assistant_id = r.assistant_id AND a.user_id = r.user_id
LEFT JOIN device_calls c ON c.run_id = r.run_id AND c.done = 0
LEFT JOIN device_inbox i ON i.call_id = c.call_id
WHERE r.run_id = (SELECT dc.run_id
                  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
                        WHERE call_id = ? LIMIT 1) dc
                  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL))
  AND EXISTS (SELECT 1 FROM claimed)
ORDER BY c.seq
"""

#: `CLAIM_AFTER_ANSWER` with the thread's latest checkpoint. Params: the same.
CLAIM_AFTER_ANSWER_MARKED = """
WITH claimed AS (
  UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?)
  WHERE run_id = (SELECT dc.run_id
                  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
                        WHERE call_id = ? LIMIT 1) dc
                  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL))
    AND unanswered <= 0
    AND status = 'interrupted'
    AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0)
    AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0
                    AND c.call_id NOT IN (SELECT call_id FROM device_inbox))
  RETURNING run_id
)
SELECT r.run_id, r.thread_id, r.assistant_id, r.user_id, r.status, r.kwargs, r.metadata,
       r.device_id, r.error, r.counts, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.cron_id,
       a.assistant_id AS a_assistant_id, a.graph_id AS a_graph_id, a.name AS a_name,
       a.description AS a_description, a.config AS a_config, a.context AS a_context,
       a.metadata AS a_metadata, a.version AS a_version, a.created_at AS a_created_at,
       a.updated_at AS a_updated_at,
       c.interrupt_id, c.call_id, i.call_id AS answered, i.ok, i.payload,
       EXISTS (SELECT 1 FROM claimed) AS claimed,
       mark.checkpoint_id AS mark_checkpoint, mark.writes AS mark_writes
FROM runs r
LEFT JOIN assistants a ON a.assistant_id = r.assistant_id AND a.user_id = r.user_id
LEFT JOIN device_calls c ON c.run_id = r.run_id AND c.done = 0
LEFT JOIN device_inbox i ON i.call_id = c.call_id
LEFT JOIN LATERAL (
  SELECT k.checkpoint_id,
         (SELECT count(*) FROM checkpoint_writes w
          WHERE w.thread_id = k.thread_id AND w.checkpoint_ns = ''
            AND w.checkpoint_id = k.checkpoint_id) AS writes
  FROM checkpoints k WHERE k.thread_id = r.thread_id AND k.checkpoint_ns = ''
  ORDER BY k.checkpoint_id DESC LIMIT 1
) mark ON true
WHERE r.run_id = (SELECT dc.run_id
                  FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls
                        WHERE call_id = ? LIMIT 1) dc
                  WHERE dc.user_id = ? AND (dc.device_id = ? OR dc.device_id IS NULL))
  AND EXISTS (SELECT 1 FROM claimed)
ORDER BY c.seq
"""

#: Postgres, a step under its thread's lock: the claim of the run if it is parked with every
#: answer in, and the read of the run whether or not. Params: the time twice, the run id
#: twice.
CLAIM_AND_READ = """
WITH claimed AS (
  UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?)
  WHERE run_id = ?
    AND status = 'interrupted'
    AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0)
    AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0
                    AND c.call_id NOT IN (SELECT call_id FROM device_inbox))
  RETURNING run_id
)
SELECT r.run_id, r.thread_id, r.assistant_id, r.user_id, r.status, r.kwargs, r.metadata,
       r.device_id, r.error, r.counts, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.cron_id,
       a.assistant_id AS a_assistant_id, a.graph_id AS a_graph_id, a.name AS a_name,
       a.description AS a_description, a.config AS a_config, a.context AS a_context,
       a.metadata AS a_metadata, a.version AS a_version, a.created_at AS a_created_at,
       a.updated_at AS a_updated_at,
       c.interrupt_id, c.call_id, i.call_id AS answered, i.ok, i.payload,
       EXISTS (SELECT 1 FROM claimed) AS claimed
FROM runs r
LEFT JOIN assistants a ON a.assistant_id = r.assistant_id AND a.user_id = r.user_id
LEFT JOIN device_calls c ON c.run_id = r.run_id AND c.done = 0
LEFT JOIN device_inbox i ON i.call_id = c.call_id
WHERE r.run_id = ?
ORDER BY c.seq
"""

#: `CLAIM_AND_READ` with the thread's latest checkpoint. Params: the same.
CLAIM_AND_READ_MARKED = """
WITH claimed AS (
  UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?)
  WHERE run_id = ?
    AND status = 'interrupted'
    AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0)
    AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0
                    AND c.call_id NOT IN (SELECT call_id FROM device_inbox))
  RETURNING run_id
)
SELECT r.run_id, r.thread_id, r.assistant_id, r.user_id, r.status, r.kwargs, r.metadata,
       r.device_id, r.error, r.counts, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.cron_id,
       a.assistant_id AS a_assistant_id, a.graph_id AS a_graph_id, a.name AS a_name,
       a.description AS a_description, a.config AS a_config, a.context AS a_context,
       a.metadata AS a_metadata, a.version AS a_version, a.created_at AS a_created_at,
       a.updated_at AS a_updated_at,
       c.interrupt_id, c.call_id, i.call_id AS answered, i.ok, i.payload,
       EXISTS (SELECT 1 FROM claimed) AS claimed,
       mark.checkpoint_id AS mark_checkpoint, mark.writes AS mark_writes
FROM runs r
LEFT JOIN assistants a ON a.assistant_id = r.assistant_id AND a.user_id = r.user_id
LEFT JOIN device_calls c ON c.run_id = r.run_id AND c.done = 0
LEFT JOIN device_inbox i ON i.call_id = c.call_id
LEFT JOIN LATERAL (
  SELECT k.checkpoint_id,
         (SELECT count(*) FROM checkpoint_writes w
          WHERE w.thread_id = k.thread_id AND w.checkpoint_ns = ''
            AND w.checkpoint_id = k.checkpoint_id) AS writes
  FROM checkpoints k WHERE k.thread_id = r.thread_id AND k.checkpoint_ns = ''
  ORDER BY k.checkpoint_id DESC LIMIT 1
) mark ON true
WHERE r.run_id = ?
ORDER BY c.seq
"""

#: SQLite: the claim alone. Params: the time twice, the run id.
CLAIM = """
UPDATE runs SET status = 'running', updated_at = ?, started_at = COALESCE(started_at, ?)
WHERE run_id = ?
  AND status = 'interrupted'
  AND EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0)
  AND NOT EXISTS (SELECT 1 FROM device_calls c WHERE c.run_id = runs.run_id AND c.done = 0
                  AND c.call_id NOT IN (SELECT call_id FROM device_inbox))
RETURNING run_id
"""

#: SQLite: the read alone, after the claim in the same transaction. Params: the run id.
READ = """
SELECT r.run_id, r.thread_id, r.assistant_id, r.user_id, r.status, r.kwargs, r.metadata,
       r.device_id, r.error, r.counts, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.cron_id,
       a.assistant_id AS a_assistant_id, a.graph_id AS a_graph_id, a.name AS a_name,
       a.description AS a_description, a.config AS a_config, a.context AS a_context,
       a.metadata AS a_metadata, a.version AS a_version, a.created_at AS a_created_at,
       a.updated_at AS a_updated_at,
       c.interrupt_id, c.call_id, i.call_id AS answered, i.ok, i.payload
FROM runs r
LEFT JOIN assistants a ON a.assistant_id = r.assistant_id AND a.user_id = r.user_id
LEFT JOIN device_calls c ON c.run_id = r.run_id AND c.done = 0
LEFT JOIN device_inbox i ON i.call_id = c.call_id
WHERE r.run_id = ?
ORDER BY c.seq
"""

# ── Park: a step's end with device calls pending ──────────────────────────────
# A park's calls are inserted by one statement whatever their number (as arrays: a statement
# per call, or a row of parameters each, grows past Postgres's 65,535 parameters at ~6,000
# calls and plans in time quadratic in them), and only while the run is live.

#: Postgres: store the calls and mark the run interrupted. Params: device id, created at,
#: pushed at (None: not sent yet), the interrupt ids, call ids, names and args (JSON text)
#: as four parallel arrays, the run id; the time and the run id.
PARK = """
WITH inserted AS (
  INSERT INTO device_calls (call_id, run_id, thread_id, interrupt_id, user_id, device_id,
                            name, args, seq, created_at, pushed_at)
  SELECT c.call_id, r.run_id, r.thread_id, c.interrupt_id, r.user_id, ?, c.name, c.args,
         c.seq - 1, ?, ?
  FROM runs r,
       unnest(?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY
         AS c (interrupt_id, call_id, name, args, seq)
  WHERE r.run_id = ? AND r.status IN ('pending', 'running', 'interrupted')
  ON CONFLICT (call_id) DO NOTHING
)
UPDATE runs SET status = 'interrupted', updated_at = ?
WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')
RETURNING run_id
"""

#: Postgres: `PARK` after a step that consumed the run's open calls and their answers: they
#: are closed and the answers dropped in the same statement (the writes touch different
#: rows). Params: the run id twice, then as `PARK`.
PARK_RESUMED = """
WITH closed AS (
  UPDATE device_calls SET done = 1 WHERE run_id = ? AND done = 0
), dropped AS (
  DELETE FROM device_inbox WHERE run_id = ?
), inserted AS (
  INSERT INTO device_calls (call_id, run_id, thread_id, interrupt_id, user_id, device_id,
                            name, args, seq, created_at, pushed_at)
  SELECT c.call_id, r.run_id, r.thread_id, c.interrupt_id, r.user_id, ?, c.name, c.args,
         c.seq - 1, ?, ?
  FROM runs r,
       unnest(?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY
         AS c (interrupt_id, call_id, name, args, seq)
  WHERE r.run_id = ? AND r.status IN ('pending', 'running', 'interrupted')
  ON CONFLICT (call_id) DO NOTHING
)
UPDATE runs SET status = 'interrupted', updated_at = ?
WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')
RETURNING run_id
"""

#: SQLite: the park's statements one by one, in one transaction.
CLOSE_OPEN_CALLS = "UPDATE device_calls SET done = 1 WHERE run_id = ? AND done = 0"
DELETE_ANSWERS = "DELETE FROM device_inbox WHERE run_id = ?"
#: Params: device id, created at, pushed at, the calls as one JSON array of 4-element arrays
#: (interrupt id, call id, name, args), the run id.
INSERT_CALLS = """
INSERT INTO device_calls (call_id, run_id, thread_id, interrupt_id, user_id, device_id,
                          name, args, seq, created_at, pushed_at)
SELECT json_extract(c.value, '$[1]'), r.run_id, r.thread_id, json_extract(c.value, '$[0]'),
       r.user_id, ?, json_extract(c.value, '$[2]'), json_extract(c.value, '$[3]'), c.key, ?, ?
FROM runs r, json_each(?) c
WHERE r.run_id = ? AND r.status IN ('pending', 'running', 'interrupted')
ON CONFLICT (call_id) DO NOTHING
"""
MARK_INTERRUPTED = """
UPDATE runs SET status = 'interrupted', updated_at = ?
WHERE run_id = ? AND status IN ('pending', 'running', 'interrupted')
RETURNING run_id
"""

#: The park's last statement: the run's counter set from its open calls and their answers,
#: once they are stored (a statement of its own, so on Postgres it sees the park's writes);
#: it returns the run only if it is parked. Params: the run id.
COUNT_UNANSWERED = """
UPDATE runs SET unanswered = (
  SELECT count(*) FROM device_calls c
  WHERE c.run_id = runs.run_id AND c.done = 0
    AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id))
WHERE run_id = ? AND status = 'interrupted'
RETURNING run_id
"""

# ── The outbox, read for sending ──────────────────────────────────────────────

OUTBOX_COLUMNS = (
    "c.call_id, c.run_id, c.thread_id, c.interrupt_id, c.device_id, c.name, c.args, r.assistant_id"
)
#: Calls waiting for this device (or any device of its user), in the order they were parked.
FOR_DEVICE = f"""
SELECT {OUTBOX_COLUMNS}
FROM device_calls c JOIN runs r ON r.run_id = c.run_id
WHERE c.user_id = ? AND (c.device_id = ? OR c.device_id IS NULL) AND c.done = 0
  AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id)
ORDER BY c.created_at, c.seq
"""
FOR_RUN = f"""
SELECT {OUTBOX_COLUMNS}
FROM device_calls c JOIN runs r ON r.run_id = c.run_id
WHERE c.run_id = ? AND c.done = 0
  AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id)
ORDER BY c.seq
"""
#: Calls for this device no process has sent (parked by one that does not hold its socket).
UNPUSHED_FOR_DEVICE = f"""
SELECT {OUTBOX_COLUMNS}
FROM device_calls c JOIN runs r ON r.run_id = c.run_id
WHERE c.user_id = ? AND c.device_id = ? AND c.done = 0 AND c.pushed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id)
ORDER BY c.created_at, c.seq
"""
BIND_UNBOUND = (
    "UPDATE device_calls SET device_id = ? WHERE user_id = ? AND device_id IS NULL AND done = 0"
)
#: The calls just sent, in one statement. Params: the time, the call ids (an array).
MARK_PUSHED = "UPDATE device_calls SET pushed_at = ? WHERE call_id = ANY(?::text[])"
#: SQLite: the same, the call ids as one JSON array.
MARK_PUSHED_SQLITE = (
    "UPDATE device_calls SET pushed_at = ? WHERE call_id IN (SELECT value FROM json_each(?))"
)
RUN_DEVICES = (
    "SELECT DISTINCT device_id FROM device_calls WHERE run_id = ? AND device_id IS NOT NULL"
)


# ── Records ───────────────────────────────────────────────────────────────────

AnswerOutcome = Literal["stored", "duplicate", "late", "unknown"]


@dataclass(frozen=True)
class DeviceAnswer:
    """A device's answer to one call, as it arrived."""

    user_id: str
    device_id: str
    call_id: str
    ok: bool
    #: The result, or the error text.
    payload: Any
    #: When it arrived: the inbox row's time, and the claim's if it completes its run.
    received_at: str = field(default_factory=now)

    def insert_params(self) -> tuple[Any, ...]:
        """Params of `INSERT_ANSWER` and the `STORE_ANSWER`s."""
        return (int(self.ok), json.dumps(self.payload), self.received_at, *self.call())

    def call(self) -> tuple[str, str, str]:
        """The call's lookup, as every statement that starts from an answer takes it."""
        return (self.call_id, self.user_id, self.device_id)


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
    #: The bridge's result for the call (`{"ok": ..., "result" | "error": ...}`).
    answer: Json | None


@dataclass(frozen=True)
class Execution:
    """What executing a run starts from."""

    run: Run
    #: None once deleted.
    assistant: Assistant | None
    open_calls: list[OpenCall]
    #: The run was parked with every call answered and is now `running`: resume those calls.
    claimed: bool = False
    #: Postgres: its thread's latest checkpoint, read under the thread's lock.
    checkpoint: CheckpointMark | None = None


# ── Answers ───────────────────────────────────────────────────────────────────


async def store_answer(db: Database, answer: DeviceAnswer) -> Answer:
    """Store an answer durably (invariant 5) and count it against its run's open calls, in
    one statement on Postgres, one transaction on SQLite."""
    if db.kind == "postgres":
        stored = await db.write(STORE_ANSWER, *answer.insert_params())
    else:
        counted, inserted = await db.results(
            (COUNT_ANSWER, answer.call()), (INSERT_ANSWER, answer.insert_params())
        )
        stored = [{**inserted[0], **counted[0]} if counted else inserted[0]] if inserted else []
    return await outcome(db, answer, stored)


def store_answer_and_try_lock(answer: DeviceAnswer) -> Statement:
    """Postgres: `STORE_ANSWER_TRY_LOCK`, for the first statement of `ThreadLocks.try_take`
    (its row names the thread and says whether its lock was taken); `outcome` reads it."""
    return (STORE_ANSWER_TRY_LOCK, answer.insert_params())


def claim_after_answer(answer: DeviceAnswer, *, marks: bool) -> Query["Execution | None"]:
    """Postgres: the claim of the answered call's run and the step's read of it, for after
    `store_answer_and_try_lock` in the same pipeline; None when nothing was claimed."""
    sql = CLAIM_AFTER_ANSWER_MARKED if marks else CLAIM_AFTER_ANSWER
    stamp = answer.received_at
    params = (stamp, stamp, *answer.call(), *answer.call())
    return Query(((sql, params),), _execution)


async def outcome(db: Database, answer: DeviceAnswer, stored: Rows) -> Answer:
    """What became of an answer, from the rows its statement returned (none: it was not new,
    and one more read tells a duplicate, a late and an unknown one apart). A run whose
    counter is at 0 or below is complete: the counter can be low, never high, if a duplicate
    was stored as a park closed its call (Postgres: it waited for the park's delete of the
    first answer, then found no conflict), so it goes on down to the real last answer, and
    the claim checks the calls themselves before it resumes the run."""
    if stored:
        row = stored[0]
        count, thread_id = row.get("unanswered"), row.get("thread_id")
        completes = row.get("status") == "interrupted" and count is not None and count <= 0
        thread = None if thread_id is None else str(thread_id)
        return Answer("stored", str(row["run_id"]), thread, completes)
    rows = await db.fetch(SELECT_CALL, answer.call_id)
    if (
        not rows
        or rows[0]["user_id"] != answer.user_id
        or rows[0]["device_id"] not in (answer.device_id, None)
    ):
        return Answer("unknown")
    run_id = str(rows[0]["run_id"])
    return Answer("late" if rows[0]["done"] else "duplicate", run_id)


# ── Claim and read ────────────────────────────────────────────────────────────


def claim_and_read(kind: str, run_id: str, *, marks: bool) -> Query["Execution | None"]:
    """What a step reads first, under its thread's lock: claim the run if it is parked with
    every answer in, then read it; on Postgres in one statement. None: no such run."""
    stamp = now()
    if kind == "postgres":
        sql = CLAIM_AND_READ_MARKED if marks else CLAIM_AND_READ
        return Query(((sql, (stamp, stamp, run_id, run_id)),), _execution)
    return Query(((CLAIM, (stamp, stamp, run_id)), (READ, (run_id,))), _execution)


def _execution(results: list[Rows]) -> Execution | None:
    """The run as a step needs it, from the claim and the read (SQLite) or the two in one
    statement (Postgres, with its `claimed` column)."""
    if len(results) == 2:
        claims, rows = results
        claimed = bool(claims)
    else:
        (rows,) = results
        claimed = bool(rows and rows[0]["claimed"])
    if not rows:
        return None
    first = rows[0]
    run = runs.decode(first)
    if claimed:  # read in the claim's statement, so as it was before the claim
        run = replace(run, status="running")
    assistant = None if first["a_graph_id"] is None else assistants.decode(first, prefix="a_")
    calls = [
        OpenCall(
            interrupt_id=str(row["interrupt_id"]),
            call_id=str(row["call_id"]),
            answer=None if row["answered"] is None else _result(row),
        )
        for row in rows
        if row["call_id"] is not None
    ]
    mark = None
    if "mark_writes" in first:
        mark = CheckpointMark(
            thread_id=run.thread_id,
            checkpoint_id=first["mark_checkpoint"],
            writes=int(first["mark_writes"] or 0),
        )
    return Execution(run, assistant, calls, claimed=claimed, checkpoint=mark)


def _result(row: dict[str, Any]) -> Json:
    """A stored answer as the bridge's result for its call."""
    payload = loads(row["payload"])
    return {"ok": True, "result": payload} if row["ok"] else {"ok": False, "error": str(payload)}


# ── Park ──────────────────────────────────────────────────────────────────────


def park(
    kind: str,
    *,
    run: Run,
    calls: Sequence[ParkCall],
    device_id: str | None,
    pushed: bool = False,
    resumed: bool = False,
) -> Query[bool]:
    """Store the calls of the pending interrupts and mark the run (so its thread)
    interrupted, in one transaction that stores nothing if the run has ended meanwhile
    (cancelled from another server process); reads whether it parked. `resumed`: the step
    just run consumed the run's open calls and their answers (closed and dropped in the same
    transaction). `pushed`: this process holds the device's socket and sends them next (no
    other process needs to). The statements are the same whatever the number of calls."""
    stamp = now()
    rows = [(i, c, name, json.dumps(args)) for i, c, name, args in calls]
    sent = stamp if pushed else None
    mark = (stamp, run.run_id)
    count = (COUNT_UNANSWERED, (run.run_id,))
    if kind == "postgres":  # four parallel arrays
        arrays = tuple([row[k] for row in rows] for k in range(4))
        insert = (device_id, stamp, sent, *arrays, run.run_id)
        if resumed:
            return Query(((PARK_RESUMED, (run.run_id, run.run_id, *insert, *mark)), count), _parked)
        return Query(((PARK, (*insert, *mark)), count), _parked)
    statements: list[Statement] = []
    if resumed:
        statements += [(CLOSE_OPEN_CALLS, (run.run_id,)), (DELETE_ANSWERS, (run.run_id,))]
    statements.append((INSERT_CALLS, (device_id, stamp, sent, json.dumps(rows), run.run_id)))
    statements += [(MARK_INTERRUPTED, mark), count]
    return Query(tuple(statements), _parked)


def _parked(results: list[Rows]) -> bool:
    """The last statement, `COUNT_UNANSWERED`, returns the run only if it parked."""
    return bool(results and results[-1])


# ── The outbox ────────────────────────────────────────────────────────────────


async def for_device(db: Database, *, user_id: str, device_id: str) -> list[OutboxCall]:
    """Calls waiting for this device, unbound calls of its user included (and now bound)."""
    await db.execute((BIND_UNBOUND, (device_id, user_id)))
    return [_outbox(r) for r in await db.fetch(FOR_DEVICE, user_id, device_id)]


async def unpushed_for_device(db: Database, *, user_id: str, device_id: str) -> list[OutboxCall]:
    """Calls for this device that no process could send yet (parked by a process that does
    not hold its socket); unbound calls of its user are bound to it first."""
    await db.execute((BIND_UNBOUND, (device_id, user_id)))
    return [_outbox(r) for r in await db.fetch(UNPUSHED_FOR_DEVICE, user_id, device_id)]


async def for_run(db: Database, run_id: str) -> list[OutboxCall]:
    """The run's open calls still without an answer."""
    return [_outbox(r) for r in await db.fetch(FOR_RUN, run_id)]


async def mark_pushed(db: Database, call_ids: Sequence[str]) -> None:
    if db.kind == "postgres":
        await db.execute((MARK_PUSHED, (now(), list(call_ids))))
    else:
        await db.execute((MARK_PUSHED_SQLITE, (now(), json.dumps(list(call_ids)))))


async def run_devices(db: Database, run_id: str) -> list[str]:
    """The devices the run's open calls went to."""
    return [str(r["device_id"]) for r in await db.fetch(RUN_DEVICES, run_id)]


def _outbox(row: dict[str, Any]) -> OutboxCall:
    return OutboxCall(
        call_id=str(row["call_id"]),
        run_id=str(row["run_id"]),
        thread_id=str(row["thread_id"]),
        assistant_id=str(row["assistant_id"]),
        interrupt_id=str(row["interrupt_id"]),
        device_id=row["device_id"],
        name=str(row["name"]),
        args=loads(row["args"]),
    )
