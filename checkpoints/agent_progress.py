"""Where each local agent's next run starts, by agent key (`relaygraph run`'s folder key, or
`assistant:<id>` on the server): the watermark ("modified since"), the ledger of files its
runs could not process (retried on the next run whether changed or not), and, for
`relaygraph run`, the thread of a run that has not finished (resumed instead of a new run;
the server's runs are rows of `runs`, which say the same by their status)."""

from typing import Any

from checkpoints.clock import now
from checkpoints.database import Database
from checkpoints.sql import Statement

SELECT_WATERMARK = "SELECT modified_since FROM relaygraph_agent_progress WHERE agent_key = ?"
UPSERT_WATERMARK = (
    "INSERT INTO relaygraph_agent_progress (agent_key, modified_since) VALUES (?, ?) "
    "ON CONFLICT (agent_key) DO UPDATE SET modified_since = excluded.modified_since"
)
SELECT_UNFINISHED = "SELECT unfinished_thread FROM relaygraph_agent_progress WHERE agent_key = ?"
SET_UNFINISHED = (
    "INSERT INTO relaygraph_agent_progress (agent_key, unfinished_thread) VALUES (?, ?) "
    "ON CONFLICT (agent_key) DO UPDATE SET unfinished_thread = excluded.unfinished_thread"
)
CLEAR_UNFINISHED = (
    "UPDATE relaygraph_agent_progress SET unfinished_thread = NULL "
    "WHERE agent_key = ? AND unfinished_thread = ?"
)
SELECT_RETRIES = (
    "SELECT path FROM relaygraph_file_retries WHERE agent_key = ? ORDER BY failed_at, path LIMIT ?"
)
DELETE_RETRY = "DELETE FROM relaygraph_file_retries WHERE agent_key = ? AND path = ?"
UPSERT_RETRY = (
    "INSERT INTO relaygraph_file_retries (agent_key, path, error, failed_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (agent_key, path) DO UPDATE SET error = excluded.error"
)
#: Files retried in one run (the triage takes at most as many; the rest wait their turn).
RETRIES_PER_RUN = 1_000


async def watermark(db: Database, agent_key: str) -> str | None:
    """The "modified since" for this agent's next run (None: process everything)."""
    rows = await db.fetch(SELECT_WATERMARK, agent_key)
    return str(rows[0]["modified_since"]) if rows and rows[0]["modified_since"] else None


async def retry_files(db: Database, agent_key: str) -> list[str]:
    """The files earlier runs could not process, oldest failure first."""
    rows = await db.fetch(SELECT_RETRIES, agent_key, RETRIES_PER_RUN)
    return [str(r["path"]) for r in rows]


async def unfinished_thread(db: Database, agent_key: str) -> str | None:
    """The thread of this agent's `relaygraph run` that never finished (killed, crashed)."""
    rows = await db.fetch(SELECT_UNFINISHED, agent_key)
    return str(rows[0]["unfinished_thread"]) if rows and rows[0]["unfinished_thread"] else None


async def begin_run(db: Database, agent_key: str, thread_id: str) -> None:
    """Mark `thread_id` as this agent's run under way, before its first step."""
    await db.execute((SET_UNFINISHED, (agent_key, thread_id)))


def outcome_statements(
    agent_key: str, report: dict[str, Any], *, thread_id: str | None = None
) -> list[Statement]:
    """What a finished run changes for the next one, to run in one transaction: the
    watermark moves (unless the run failed as a whole), the files it retried leave the
    ledger, the files it could not process enter it, and the run of `thread_id` (given by
    `relaygraph run`) is no longer the one to resume."""
    statements: list[Statement] = []
    if report.get("watermark"):
        statements.append((UPSERT_WATERMARK, (agent_key, report["watermark"])))
    statements += [(DELETE_RETRY, (agent_key, path)) for path in report.get("retried") or []]
    stamp = now()
    statements += [
        (UPSERT_RETRY, (agent_key, f["path"], f["error"][:1_000], stamp))
        for f in report.get("failed_files") or []
    ]
    if thread_id is not None:
        statements.append((CLEAR_UNFINISHED, (agent_key, thread_id)))
    return statements
