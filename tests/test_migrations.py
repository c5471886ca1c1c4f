"""The migrations bring a database of an older version forward without losing what it held:
`relaygraph run`'s run records became each agent's unfinished thread."""

import sqlite3

import psycopg
import pytest

from checkpoints import open_database, open_store
from checkpoints.migrations import CREATE_VERSIONS, INSERT_VERSION, MIGRATIONS
from checkpoints.sql import postgres_sql

#: The version before `relaygraph_agent_progress` (run records of the CLI's own, watermarks).
BEFORE_PROGRESS = next(
    i for i, sql in enumerate(MIGRATIONS) if "TABLE IF NOT EXISTS relaygraph_agent_progress" in sql
)
OLD_ROWS = [
    "INSERT INTO relaygraph_runs VALUES ('t-done', 'local:a', 'success', '2026-01-01', "
    "'2026-01-01', '{}')",
    "INSERT INTO relaygraph_runs VALUES ('t-old', 'local:a', 'running', '2026-01-02', NULL, NULL)",
    "INSERT INTO relaygraph_runs VALUES ('t-new', 'local:a', 'running', '2026-01-03', NULL, NULL)",
    "INSERT INTO relaygraph_runs VALUES ('t-b', 'local:b', 'running', '2026-01-01', NULL, NULL)",
    "INSERT INTO relaygraph_watermarks VALUES ('local:a', '2026-01-01T00:00:00+00:00')",
    "INSERT INTO relaygraph_watermarks VALUES ('assistant:x', '2026-02-01T00:00:00+00:00')",
]


def _at_old_version(url: str) -> None:
    """The schema as it was before the agent-progress table, holding `OLD_ROWS`."""
    statements = [(CREATE_VERSIONS, ())]
    statements += [(sql, ()) for sql in MIGRATIONS[:BEFORE_PROGRESS]]
    statements += [(INSERT_VERSION, (v,)) for v in range(1, BEFORE_PROGRESS + 1)]
    statements += [(sql, ()) for sql in OLD_ROWS]
    if url.startswith("postgresql"):
        with psycopg.connect(url) as pg:
            for sql, params in statements:
                pg.execute(postgres_sql(sql), params)
        return
    with sqlite3.connect(url) as lite:
        for sql, params in statements:
            lite.execute(sql, params)


@pytest.fixture
def old_database(request: pytest.FixtureRequest, database_url: str) -> str:
    _at_old_version(database_url)
    return database_url


async def test_run_records_become_unfinished_threads_and_watermarks_stay(
    old_database: str,
) -> None:
    async with open_store(old_database) as store:
        assert await store.unfinished_run("local:a") == "t-new", "the latest unfinished run"
        assert await store.unfinished_run("local:b") == "t-b"
        assert await store.unfinished_run("assistant:x") is None
        assert await store.watermark("local:a") == "2026-01-01T00:00:00+00:00"
        assert await store.watermark("assistant:x") == "2026-02-01T00:00:00+00:00"
        assert await store.watermark("local:b") is None
        tables = await store.db.fetch(
            "SELECT count(*) AS n FROM relaygraph_migrations WHERE v > ?", BEFORE_PROGRESS
        )
        assert tables[0]["n"] == len(MIGRATIONS) - BEFORE_PROGRESS


async def test_the_old_tables_are_gone(old_database: str) -> None:
    async with open_database(old_database) as db:
        for table in ("relaygraph_runs", "relaygraph_watermarks"):
            with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
                await db.fetch(f"SELECT 1 FROM {table}")


async def test_a_finished_run_is_no_longer_the_one_to_resume(database_url: str) -> None:
    async with open_store(database_url) as store:
        await store.start_run("t-1", "local:a")
        assert await store.unfinished_run("local:a") == "t-1"
        await store.finish_run("t-0", "local:a", {"status": "success", "watermark": "w0"})
        assert await store.unfinished_run("local:a") == "t-1", "another thread's end"
        await store.finish_run("t-1", "local:a", {"status": "success", "watermark": "w1"})
        assert await store.unfinished_run("local:a") is None
        assert await store.watermark("local:a") == "w1"
        await store.start_run("t-2", "local:a")
        await store.finish_run("t-2", "local:a", {"status": "error", "watermark": None})
        assert await store.watermark("local:a") == "w1", "a failed run leaves the watermark"
        assert await store.unfinished_run("local:a") is None
