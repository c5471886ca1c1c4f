"""The store of `relaygraph run`: where each agent's next run starts
(`checkpoints.agent_progress`), including the thread of a run a killed process left, which
the next `run` of the same agent resumes from its checkpoint."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from checkpoints import agent_progress
from checkpoints.database import Database, open_database


class AppStore:
    """The progress of the agents `relaygraph run` runs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def unfinished_run(self, agent_key: str) -> str | None:
        """The thread of this agent's run that never finished (killed, crashed), if any."""
        return await agent_progress.unfinished_thread(self.db, agent_key)

    async def start_run(self, thread_id: str, agent_key: str) -> None:
        await agent_progress.begin_run(self.db, agent_key, thread_id)

    async def finish_run(self, thread_id: str, agent_key: str, report: dict[str, Any]) -> None:
        """What the next run starts from, in one transaction."""
        await self.db.execute(
            *agent_progress.outcome_statements(agent_key, report, thread_id=thread_id)
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
