"""Storing one device answer costs the same however many calls its run has open.

The statements that store an answer are read through the database's own account of them, never
timed: on Postgres `EXPLAIN (ANALYZE, FORMAT JSON)` of each, run and rolled back, says how many
rows of the outbox, the inbox and the runs its scans read; on SQLite `EXPLAIN QUERY PLAN` says
that each of its searches is a primary-key lookup. The run has thousands of open calls, half
of them answered, so a statement that counted the run's other calls would read thousands."""

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from checkpoints import Database, open_database
from checkpoints.sql import postgres_sql
from harness.records import agentic_run, parked
from server.locks import ThreadLocks
from server.records import Run
from server.storage import accounts, bridge, runs
from server.storage.bridge import DeviceAnswer

USER, DEVICE = "ana", "laptop"
#: Two sizes: with no statistics yet, Postgres 15 plans a lookup of a call by its id and its
#: device through the index of the device's open calls up to about 1,000 of them.
OPEN_CALLS = [1_000, 3_000]
#: Rows a scan of the statements that store one answer may read: the call, its answer (if
#: any) and its run, each by primary key, and the run again for the claim.
FEW_ROWS = 8
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}
BRIDGE_TABLES = {"device_calls", "device_inbox", "runs"}
UNANSWERED = "SELECT unanswered FROM runs WHERE run_id = ?"
#: A SQLite search by primary key (`call_id` of the outbox and the inbox, `run_id` of runs).
BY_KEY = re.compile(
    r"^SEARCH \w+ USING (COVERING )?INDEX sqlite_autoindex_\w+_1 \((call_id|run_id)=\?\)$"
)


class RecordingDatabase:
    """A `Database` that keeps the statements it is given and runs none of them (it has no
    rows), for the statements a storage function would run."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return []

    async def write(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        self.statements.append((sql, params))
        return []

    async def results(self, *statements: tuple[str, Any]) -> list[list[dict[str, Any]]]:
        self.statements += [(sql, tuple(params)) for sql, params in statements]
        return [[] for _ in statements]


@dataclass
class Busy:
    """A run parked on calls of its device (from `busy`: thousands, half of them answered)."""

    url: str
    db: Database
    run: Run
    calls: list[str] = field(default_factory=list)

    async def answer(self, call_id: str) -> Any:
        return await bridge.store_answer(self.db, answer_to(call_id))

    async def answer_statements(self, call_id: str) -> list[tuple[str, tuple[Any, ...]]]:
        """What `bridge.store_answer` runs to store this answer (recorded, not run)."""
        recording = RecordingDatabase(self.db.kind)
        await bridge.store_answer(recording, answer_to(call_id))  # type: ignore[arg-type]
        return recording.statements


def answer_to(call_id: str) -> DeviceAnswer:
    return DeviceAnswer(USER, DEVICE, call_id, True, {"id": call_id})


@pytest.fixture(params=OPEN_CALLS)
async def busy(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Busy]:
    size = int(request.param)
    async with open_database(database_url) as db:
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        run = await agentic_run(db, user_id=USER, device_id=DEVICE)
        assert await runs.start(db, run)
        calls = [f"call-{n:05d}" for n in range(size)]
        assert await parked(
            db,
            run=run,
            calls=[("i1", c, "create_task", {"title": c}) for c in calls],
            device_id=DEVICE,
        )
        world = Busy(database_url, db, run, calls)
        for call_id in calls[: size // 2]:
            assert (await world.answer(call_id)).outcome == "stored"
        yield world


def rows_read(plan: dict[str, Any]) -> int:
    """Rows of the bridge's tables the scans of an executed plan read, over every loop,
    filtered out ones included."""
    read = 0
    if plan.get("Node Type") in SCANS and plan.get("Relation Name") in BRIDGE_TABLES:
        loops = int(plan.get("Actual Loops", 1))
        kept = int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
        read += kept * loops
    return read + sum(rows_read(child) for child in plan.get("Plans", []))


async def explained(
    url: str, statements: list[tuple[str, tuple[Any, ...]]], *, analyze: bool
) -> list[int]:
    """Postgres: each statement run under `EXPLAIN ANALYZE` in one transaction, rolled back;
    the rows each one read. `analyze`: the tables' statistics are gathered first."""
    read = []
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        if analyze:
            await conn.execute("ANALYZE")
        async with conn.transaction(force_rollback=True):
            for sql, params in statements:
                explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + postgres_sql(sql)
                rows = await (await conn.execute(explain, params)).fetchall()
                read.append(rows_read(rows[0]["QUERY PLAN"][0]["Plan"]))
    return read


def table_reads(busy: Busy, statements: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """SQLite: the searches and scans of tables in each statement's query plan (not the
    scans of a subquery's rows, its co-routine)."""
    conn = busy.db.conn  # type: ignore[attr-defined]
    lines = [
        str(row[3])
        for sql, params in statements
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    ]
    subqueries = {line.split()[1] for line in lines if line.startswith("CO-ROUTINE ")}
    return [
        line
        for line in lines
        if line.startswith(("SEARCH ", "SCAN ")) and line.split()[1] not in subqueries
    ]


async def test_storing_an_answer_reads_no_other_call_of_its_run(busy: Busy) -> None:
    call_id = busy.calls[len(busy.calls) // 2]
    stored = await busy.answer_statements(call_id)
    if busy.db.kind == "sqlite":
        reads = table_reads(busy, stored)
        assert reads and all(BY_KEY.match(line) for line in reads), reads
        return
    answer = answer_to(call_id)  # store, try the lock, claim: one round trip
    claim = bridge.claim_after_answer(answer, marks=False)
    pipelined = [bridge.store_answer_and_try_lock(answer), *claim.statements]
    for statistics in (False, True):  # the plans of a new table, then of an analyzed one
        for statements in (stored, pipelined):
            read = await explained(busy.url, statements, analyze=statistics)
            assert sum(read) <= FEW_ROWS, (statistics, read, statements)
    assert (await busy.answer(call_id)).outcome == "stored"  # nothing of it was kept


async def test_the_last_of_thousands_of_answers_completes_the_run(busy: Busy) -> None:
    *others, last = busy.calls[len(busy.calls) // 2 :]
    for call_id in others:
        answer = await busy.answer(call_id)
        assert (answer.outcome, answer.completes) == ("stored", False)
    assert (await busy.answer(busy.calls[0])).outcome == "duplicate"  # counted once

    answer = await busy.answer(last)

    assert (answer.outcome, answer.completes) == ("stored", True)
    assert (await busy.answer(last)).outcome == "duplicate"
    assert await busy.db.fetch(UNANSWERED, busy.run.run_id) == [{"unanswered": 0}]
    read = bridge.claim_and_read(busy.db.kind, busy.run.run_id, marks=False)
    async with ThreadLocks(busy.db).hold(busy.run.thread_id, *read.statements) as lease:
        execution = read.read(lease.results)
    assert execution is not None and execution.claimed
    assert len(execution.open_calls) == len(busy.calls)
    assert all(c.answer == {"ok": True, "result": {"id": c.call_id}} for c in execution.open_calls)


async def test_duplicate_and_late_answers_count_nothing(database_url: str) -> None:
    async with open_database(database_url) as db:
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        run = await agentic_run(db, user_id=USER, device_id=DEVICE)
        world = Busy(database_url, db, run)

        async def park(*calls: str, resumed: bool = False) -> None:
            lines = [("i", c, "list_tasks", {}) for c in calls]
            assert await parked(db, run=run, calls=lines, device_id=DEVICE, resumed=resumed)

        async def unanswered() -> int:
            return int((await db.fetch(UNANSWERED, run.run_id))[0]["unanswered"])

        await park("a1", "a2", "a3")
        assert await unanswered() == 3
        await world.answer("a1")
        assert (await world.answer("a1")).outcome == "duplicate"
        assert (await world.answer("nope")).outcome == "unknown"
        assert await unanswered() == 2
        await world.answer("a2")
        assert (await world.answer("a3")).completes
        assert await unanswered() == 0

        await park("b1", "b2", resumed=True)  # the next batch; the a-calls are closed
        assert (await world.answer("a3")).outcome == "late"
        assert await unanswered() == 2
        assert not (await world.answer("b1")).completes
        assert (await world.answer("b2")).completes
