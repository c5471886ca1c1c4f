"""The store of `relaygraph run`: a record per run of an agent (so a killed run resumes its
thread), and, through `checkpoints.agent_progress`, where the agent's next run starts."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from checkpoints import agent_progress
from checkpoints.clock import now
from checkpoints.database import Database, open_database

SELECT_UNFINISHED = (
    "SELECT thread_id FROM relaygraph_runs WHERE agent_key = ? AND status = 'running' "
    "ORDER BY started_at DESC LIMIT 1"
)
INSERT_AGENT_RUN = (
    "INSERT INTO relaygraph_runs (thread_id, agent_key, status, started_at) "
    "VALUES (?, ?, 'running', ?)"
)
FINISH_AGENT_RUN = (
    "UPDATE relaygraph_runs SET status = ?, finished_at = ?, report = ? WHERE thread_id = ?"
)


class AppStore:
    """Run records, watermarks and retry ledgers of the agents `relaygraph run` runs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def unfinished_run(self, agent_key: str) -> str | None:
        """The thread of this agent's run that never finished (killed, crashed), if any."""
        rows = await self.db.fetch(SELECT_UNFINISHED, agent_key)
        return str(rows[0]["thread_id"]) if rows else None

    async def start_run(self, thread_id: str, agent_key: str) -> None:
        await self.db.execute((INSERT_AGENT_RUN, (thread_id, agent_key, now())))

    async def finish_run(self, thread_id: str, agent_key: str, report: dict[str, Any]) -> None:
        """Record the outcome and, in the same transaction, what the next run starts from
        (`agent_progress.outcome_statements`)."""
        await self.db.execute(
            (FINISH_AGENT_RUN, (report["status"], now(), json.dumps(report), thread_id)),
            *agent_progress.outcome_statements(agent_key, report),
        )

    async def retry_files(self, agent_key: str) -> list[str]:
        return await agent_progress.retry_files(self.db, agent_key)

    async def watermark(self, agent_key: str) -> str | None:
        return await agent_progress.watermark(self.db, agent_key)


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[AppStore]:
    """The application store of `relaygraph run` in the database `url` names."""
    async with open_database(url, pool_size=2) as db:
        yield AppStore(db)
