"""Where each local agent's next run starts, by agent key (`relaygraph run`'s folder key, or
`assistant:<id>` on the server): the watermark ("modified since") and the ledger of files
its runs could not process, retried on the next run whether changed or not."""

from typing import Any

from checkpoints.clock import now
from checkpoints.database import Database
from checkpoints.sql import Statement

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


async def watermark(db: Database, agent_key: str) -> str | None:
    """The "modified since" for this agent's next run (None: process everything)."""
    rows = await db.fetch(SELECT_WATERMARK, agent_key)
    return str(rows[0]["modified_since"]) if rows else None


async def retry_files(db: Database, agent_key: str) -> list[str]:
    """The files earlier runs could not process, oldest failure first."""
    rows = await db.fetch(SELECT_RETRIES, agent_key, RETRIES_PER_RUN)
    return [str(r["path"]) for r in rows]


def outcome_statements(agent_key: str, report: dict[str, Any]) -> list[Statement]:
    """What a finished run changes for the next one, to run in one transaction (with the
    run's own record, if it has one): the watermark moves (unless the run failed as a whole),
    the files it retried leave the ledger, and the files it could not process enter it."""
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
