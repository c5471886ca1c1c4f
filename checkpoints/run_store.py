"""The store of `relaygraph run`: its run records, and what each agent's next run starts
from (the watermark and the ledger of files to retry, shared with the server's assistants).
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from checkpoints.clock import now
from checkpoints.database import Database, Statement, open_database

SELECT_UNFINISHED = (
    "SELECT thread_id FROM relaygraph_runs WHERE agent_key = ? AND status = 'running' "
    "ORDER BY started_at DESC LIMIT 1"
)
INSERT_RUN = (
    "INSERT INTO relaygraph_runs (thread_id, agent_key, status, started_at) "
    "VALUES (?, ?, 'running', ?)"
)
FINISH_RUN = (
    "UPDATE relaygraph_runs SET status = ?, finished_at = ?, report = ? WHERE thread_id = ?"
)
SELECT_WATERMARK = "SELECT modified_since FROM relaygraph_watermarks WHERE agent_key = ?"
UPSERT_WATERMARK = (
    "INSERT INTO relaygraph_watermarks (agent_key, modified_since) VALUES (?, ?) "
    "ON CONFLICT (agent_key) DO UPDATE SET modified_since = excluded.modified_since"
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


def outcome_statements(agent_key: str, report: dict[str, Any]) -> list[Statement]:
    """What a finished run changes for the next one, in its own transaction: the watermark
    moves (unless the run failed as a whole), the files it retried leave the ledger, and
    the files it could not process enter it (retried next run, changed or not)."""
    statements: list[Statement] = []
    if report.get("watermark"):
        statements.append((UPSERT_WATERMARK, (agent_key, report["watermark"])))
    statements += [(DELETE_RETRY, (agent_key, path)) for path in report.get("retried") or []]
    stamp = now()
    statements += [
        (UPSERT_RETRY, (agent_key, f["path"], f["error"][:1_000], stamp))
        for f in report.get("failed_files") or []
    ]
    return statements


class AppStore:
    """Run records and watermarks of the agents this process runs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def unfinished_run(self, agent_key: str) -> str | None:
        """The thread of this agent's run that never finished (killed, crashed), if any."""
        rows = await self.db.fetch(SELECT_UNFINISHED, agent_key)
        return str(rows[0]["thread_id"]) if rows else None

    async def start_run(self, thread_id: str, agent_key: str) -> None:
        await self.db.execute((INSERT_RUN, (thread_id, agent_key, now())))

    async def finish_run(self, thread_id: str, agent_key: str, report: dict[str, Any]) -> None:
        """Record the outcome and, in the same transaction, what the next run starts from:
        the watermark and the ledger of files to retry (`outcome_statements`)."""
        await self.db.execute(
            (FINISH_RUN, (report["status"], now(), json.dumps(report), thread_id)),
            *outcome_statements(agent_key, report),
        )

    async def retry_files(self, agent_key: str) -> list[str]:
        """The files earlier runs could not process, oldest failure first."""
        rows = await self.db.fetch(SELECT_RETRIES, agent_key, RETRIES_PER_RUN)
        return [str(r["path"]) for r in rows]

    async def watermark(self, agent_key: str) -> str | None:
        """The "modified since" for this agent's next run (None: process everything)."""
        rows = await self.db.fetch(SELECT_WATERMARK, agent_key)
        return str(rows[0]["modified_since"]) if rows else None


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[AppStore]:
    """The application store of `relaygraph run` in the database `url` names."""
    async with open_database(url, pool_size=2) as db:
        yield AppStore(db)
