"""The device outbox and inbox as the run manager uses them, on SQLite and a real Postgres:
answers stored in one statement that says whether they complete their run, a parked run
claimed and read under its thread's lock, the park that closes the answered calls and opens the
next ones, and a thread's status following its active run."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from checkpoints import Database, open_database
from checkpoints.factory import IdleCheck
from harness.records import agentic_run, parked
from server.locks import ThreadLocks
from server.records import Run
from server.storage import accounts, bridge, runs, threads
from server.storage.bridge import DeviceAnswer, Execution

USER = "ana"
DEVICE = "laptop"


@dataclass
class Outbox:
    db: Database
    locks: ThreadLocks
    run: Run

    async def park(self, *calls: tuple[str, str], resumed: bool = False) -> None:
        """Park the run on `(interrupt id, call id)` calls to its device."""
        await parked(
            self.db,
            run=self.run,
            calls=[(interrupt, call, "list_tasks", {}) for interrupt, call in calls],
            device_id=DEVICE,
            resumed=resumed,
        )

    async def answer(self, call_id: str, *, device: str = DEVICE) -> Any:
        return await bridge.store_answer(
            self.db, DeviceAnswer(USER, device, call_id, True, [call_id])
        )

    async def execution(self) -> Execution:
        """What a worker reads under the thread's lock (claiming the run if it can)."""
        read = bridge.claim_and_read(self.db.kind, self.run.run_id, marks=False)
        async with self.locks.hold(self.run.thread_id, *read.statements) as lease:
            execution = read.read(lease.results)
        assert execution is not None
        return execution

    async def thread_status(self) -> str:
        thread = await threads.get(self.db, user_id=USER, thread_id=self.run.thread_id)
        assert thread is not None
        return str(thread.status)


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    async with open_database(database_url) as db:
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        run = await agentic_run(db, user_id=USER, device_id=DEVICE)
        assert await runs.start(db, run)
        yield Outbox(db, ThreadLocks(db), run)


async def test_the_last_missing_answer_says_it_completes_the_run(outbox: Outbox) -> None:
    await outbox.park(("i1", "c1"), ("i1", "c2"))

    first = await outbox.answer("c1")
    assert (first.outcome, first.completes) == ("stored", False)
    assert (first.run_id, first.thread_id) == (outbox.run.run_id, outbox.run.thread_id)
    last = await outbox.answer("c2")
    assert (last.outcome, last.completes) == ("stored", True)

    assert (await outbox.answer("c2")).outcome == "duplicate"
    assert (await outbox.answer("nope")).outcome == "unknown"
    assert (await outbox.answer("c1", device="phone")).outcome == "unknown"  # not its device


async def test_a_parked_run_is_claimed_only_once_every_answer_is_in(outbox: Outbox) -> None:
    await outbox.park(("i1", "c1"), ("i2", "c2"))
    assert await outbox.thread_status() == "interrupted"
    await outbox.answer("c1")

    waiting = await outbox.execution()
    assert not waiting.claimed and waiting.run.status == "interrupted"
    assert [(c.call_id, c.answer) for c in waiting.open_calls] == [
        ("c1", {"ok": True, "result": ["c1"]}),
        ("c2", None),
    ]

    await outbox.answer("c2")
    ready = await outbox.execution()
    assert ready.claimed and ready.run.status == "running"
    assert [c.interrupt_id for c in ready.open_calls] == ["i1", "i2"]
    assert ready.assistant is not None and ready.assistant.graph_id == "agentic_loop"
    assert await outbox.thread_status() == "busy"
    assert not (await outbox.execution()).claimed  # running now: nothing to claim


async def test_a_park_after_a_resume_closes_the_answered_calls(outbox: Outbox) -> None:
    await outbox.park(("i1", "c1"))
    await outbox.answer("c1")
    assert (await outbox.execution()).claimed

    await outbox.park(("i2", "c2"), resumed=True)

    parked = await outbox.execution()
    assert [(c.interrupt_id, c.call_id, c.answer) for c in parked.open_calls] == [
        ("i2", "c2", None)
    ]
    assert parked.run.status == "interrupted" and not parked.claimed
    assert (await outbox.answer("c1")).outcome == "late"  # closed: dropped, not an error
    assert (await outbox.answer("c2")).completes


async def test_a_run_cancelled_during_its_step_is_not_parked_again(outbox: Outbox) -> None:
    """Another server process cancels the run while this one runs its step: the step's park
    stores no call and leaves the run cancelled."""
    assert await runs.cancel(outbox.db, outbox.run)

    stored = await parked(
        outbox.db, run=outbox.run, calls=[("i1", "c1", "list_tasks", {})], device_id=DEVICE
    )

    assert not stored
    run = await runs.get(outbox.db, outbox.run.run_id)
    assert run is not None and run.status == "cancelled"
    assert await bridge.for_device(outbox.db, user_id=USER, device_id=DEVICE) == []
    assert await outbox.thread_status() == "idle"


async def test_a_finished_run_leaves_its_thread_the_status_it_gave_it(outbox: Outbox) -> None:
    await outbox.park(("i1", "c1"))
    await runs.finish(
        outbox.db,
        run=outbox.run, status="error", error="boom", counts={}, thread_status="error"
    )
    assert await outbox.thread_status() == "error"
    assert (await outbox.answer("c1")).outcome == "unknown"  # the run's calls are gone


async def test_a_pooled_connection_is_pinged_only_after_idling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pings: list[object] = []

    async def ping(conn: object) -> None:
        pings.append(conn)

    monkeypatch.setattr("checkpoints.factory.AsyncConnectionPool.check_connection", ping)
    monkeypatch.setattr("checkpoints.factory.time.monotonic", lambda: clock[0])
    clock = [100.0]
    check = IdleCheck(idle_seconds=5.0)
    conn = Connection()

    await check(conn)  # never handed out before
    clock[0] += 1.0
    await check(conn)  # in use a second ago
    clock[0] += 6.0
    await check(conn)  # idle for six seconds
    conn.broken = True
    await check(conn)

    assert pings == [conn, conn, conn]


class Connection:
    """What `IdleCheck` looks at on a psycopg connection."""

    broken = False
