"""The application's schema: `MIGRATIONS[i]` brings it to version `i + 1`, and `migrate`
applies the ones a database has not seen (the `langgraph-checkpoint-postgres` pattern). The
same SQL runs on SQLite and Postgres.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from checkpoints.database import Database

MIGRATIONS: Sequence[str] = (
    """CREATE TABLE IF NOT EXISTS relaygraph_runs (
        thread_id TEXT PRIMARY KEY,
        agent_key TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        report TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS relaygraph_runs_agent ON relaygraph_runs (agent_key, status)",
    """CREATE TABLE IF NOT EXISTS relaygraph_watermarks (
        agent_key TEXT PRIMARY KEY,
        modified_since TEXT NOT NULL
    )""",
    # ── server: users, keys, devices ──
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS devices (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, device_id)
    )""",
    # ── server: assistants, threads, runs ──
    """CREATE TABLE IF NOT EXISTS assistants (
        assistant_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        graph_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        config TEXT NOT NULL,
        context TEXT NOT NULL,
        metadata TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS assistants_user ON assistants (user_id, graph_id)",
    """CREATE TABLE IF NOT EXISTS threads (
        thread_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS threads_user ON threads (user_id, updated_at)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        metadata TEXT NOT NULL,
        device_id TEXT,
        error TEXT,
        counts TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS runs_thread ON runs (thread_id, created_at)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status)",
    # ── server: the device bridge's outbox and durable inbox ──
    """CREATE TABLE IF NOT EXISTS device_calls (
        call_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        interrupt_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        device_id TEXT,
        name TEXT NOT NULL,
        args TEXT NOT NULL,
        seq INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS device_calls_device ON device_calls (user_id, device_id, done)",
    "CREATE INDEX IF NOT EXISTS device_calls_run ON device_calls (run_id, done)",
    """CREATE TABLE IF NOT EXISTS device_inbox (
        call_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        ok INTEGER NOT NULL,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS device_inbox_run ON device_inbox (run_id)",
    # at most one active run per thread, enforced by the database (concurrent creates)
    "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs (thread_id) "
    "WHERE status IN ('pending', 'running', 'interrupted')",
    # ── schedules ──
    """CREATE TABLE IF NOT EXISTS crons (
        cron_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        thread_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT NOT NULL,
        end_time TEXT,
        enabled INTEGER NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        on_run_completed TEXT NOT NULL,
        next_run_at TEXT,
        overdue INTEGER NOT NULL DEFAULT 0,
        last_run_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS crons_due ON crons (enabled, next_run_at)",
    "ALTER TABLE runs ADD COLUMN cron_id TEXT",
    "ALTER TABLE devices ADD COLUMN online_until TEXT",
    "CREATE INDEX IF NOT EXISTS runs_device ON runs (user_id, device_id, status)",
    "ALTER TABLE device_calls ADD COLUMN pushed_at TEXT",
    # ── files an agent's run could not process: retried on its next run ──
    """CREATE TABLE IF NOT EXISTS relaygraph_file_retries (
        agent_key TEXT NOT NULL,
        path TEXT NOT NULL,
        error TEXT NOT NULL,
        failed_at TEXT NOT NULL,
        PRIMARY KEY (agent_key, path)
    )""",
    # ── server: a run's number of open calls without an answer (storing one is O(1)) ──
    "ALTER TABLE runs ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0",
    "UPDATE runs SET unanswered = (SELECT count(*) FROM device_calls c "
    "WHERE c.run_id = runs.run_id AND c.done = 0 "
    "AND NOT EXISTS (SELECT 1 FROM device_inbox i WHERE i.call_id = c.call_id)) "
    "WHERE status IN ('pending', 'running', 'interrupted')",
    # ── one table of where each local agent's next run starts; `relaygraph run` keeps its
    #    unfinished thread there, not in run records of its own (a run's record is `runs`) ──
    """CREATE TABLE IF NOT EXISTS relaygraph_agent_progress (
        agent_key TEXT PRIMARY KEY,
        modified_since TEXT,
        unfinished_thread TEXT
    )""",
    "INSERT INTO relaygraph_agent_progress (agent_key, modified_since) "
    "SELECT agent_key, modified_since FROM relaygraph_watermarks",
    "INSERT INTO relaygraph_agent_progress (agent_key, unfinished_thread) "
    "SELECT agent_key, max(thread_id) FROM relaygraph_runs r WHERE status = 'running' "
    "AND started_at = (SELECT max(started_at) FROM relaygraph_runs l "
    "WHERE l.agent_key = r.agent_key AND l.status = 'running') GROUP BY agent_key "
    "ON CONFLICT (agent_key) DO UPDATE SET unfinished_thread = excluded.unfinished_thread",
    "DROP TABLE relaygraph_runs",
    "DROP TABLE relaygraph_watermarks",
    # ── server: API keys that expire ──
    "ALTER TABLE api_keys ADD COLUMN expires_at TEXT",
)

CREATE_VERSIONS = "CREATE TABLE IF NOT EXISTS relaygraph_migrations (v INTEGER PRIMARY KEY)"
SELECT_VERSION = "SELECT max(v) AS v FROM relaygraph_migrations"
INSERT_VERSION = "INSERT INTO relaygraph_migrations (v) VALUES (?)"


async def migrate(db: "Database") -> None:
    """Apply the migrations this database has not seen yet (idempotent)."""
    await db.execute((CREATE_VERSIONS, ()))
    rows = await db.fetch(SELECT_VERSION)
    version = (rows[0]["v"] or 0) if rows else 0
    for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        await db.execute((sql, ()), (INSERT_VERSION, (number,)))
