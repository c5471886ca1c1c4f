"""An answer's way to its run's next step, with the run manager over a real database.

On Postgres, the answer that completes a run takes the thread's lock, claims the run and reads
it in one round trip, and the step starts from there when a slot is free; a busy thread or no
free slot sends the run through the queue instead. On both backends a step stores its park as
it lets the thread's lock go, before it pushes the calls. A failed statement never leaves a
thread's lock behind on a pooled connection."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import pytest
from fastapi import WebSocket
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.store.memory import InMemoryStore
from starlette.websockets import WebSocketState

from checkpoints import Database, open_checkpointers, open_database
from checkpoints.caching_saver import CachingPostgresSaver
from checkpoints.database import PostgresDatabase
from checkpoints.kept import LatestCheckpoints
from checkpoints.sql import Query
from device.protocol import ToolResult
from harness.records import agentic_run, parked
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import Connection, DeviceHub
from server.locks import ThreadLocks
from server.records import Run
from server.runs import INTERRUPT, RunManager
from server.storage import bridge, runs
from tests.support import loop_brain
from tests.support.scripted import ScriptedChatModel

USER, DEVICE = "ana", "laptop"
ERROR = "__error__"  # the channel of the write LangGraph stores for a failed task
WORKERS = 2
SETTLE = 10.0  # seconds for a step to end
BUSY = 1.0  # seconds a lock wait may take before the lock counts as held


class RecordingSocket:
    """The device's socket as the server sees it: frames sent are kept; `on_send` runs as
    each one goes out."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.on_send: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    async def send_text(self, text: str) -> None:
        frame = json.loads(text)
        if self.on_send is not None:
            await self.on_send(frame)
        self.frames.append(frame)

    def calls(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "tool_call"]


@dataclass
class World:
    db: Database
    manager: RunManager
    socket: RecordingSocket
    model: ScriptedChatModel
    run: Run = field(init=False)  # set by `first_call`

    async def first_call(self) -> dict[str, Any]:
        """Create an agentic-loop run on the device and run its first step: it parks on
        the first step's `create_task` call, which is pushed."""
        self.run = await agentic_run(
            self.db,
            user_id=USER,
            device_id=DEVICE,
            kwargs={"input": {"task": "make three tasks"}},
        )
        await self.manager.execute(self.run.run_id)
        assert await self.status() == "interrupted"
        return self.socket.calls()[-1]

    async def answer(self, call: dict[str, Any]) -> str:
        frame = ToolResult(type="tool_result", id=call["id"], ok=True, result={"id": "t1"})
        return (await self.manager.answer(USER, DEVICE, frame)).outcome

    async def settled(self) -> None:
        """Until no step runs."""
        async with asyncio.timeout(SETTLE):
            while self.manager.executing:
                await asyncio.sleep(0.01)

    async def worked_until_calls(self, count: int) -> None:
        """Start the manager's workers; stop them once `count` calls have been pushed and
        no step runs."""
        await self.manager.start()
        try:
            async with asyncio.timeout(SETTLE):
                while len(self.socket.calls()) < count:
                    await asyncio.sleep(0.01)
            await self.settled()
        finally:
            await self.manager.stop()

    async def status(self) -> str:
        found = await runs.get(self.db, self.run.run_id)
        assert found is not None
        return str(found.status)


def world_over(
    db: Database, saver: BaseCheckpointSaver | None = None, *, model_turns: int = 20
) -> World:
    """A run manager on `db` whose device is connected; checkpoints in memory unless
    `saver` (which, if it keeps checkpoints, gets the marks it needs)."""
    marks = isinstance(saver, CachingPostgresSaver)
    hub, socket = DeviceHub(), RecordingSocket()
    hub.register(Connection(USER, DEVICE, cast(WebSocket, socket)))
    model = ScriptedChatModel(script=[loop_brain.answer] * model_turns)
    manager = RunManager(
        db=db,
        graphs=GraphRegistry(model, [saver or InMemorySaver()], InMemoryStore()),
        hub=hub,
        events=RunEvents(),
        locks=ThreadLocks(db),
        workers=WORKERS,
        checkpoint_marks=marks,
    )  # not started: nothing takes runs from the queue until a test starts it
    return World(db, manager, socket, model)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with open_database(database_url) as db:
        yield world_over(db)


@pytest.fixture
async def pg_world(postgres_url: str) -> AsyncIterator[World]:
    async with open_database(postgres_url) as db:
        yield world_over(db)


@asynccontextmanager
async def kept_world(postgres_url: str, *, model_turns: int = 20) -> AsyncIterator[World]:
    """On Postgres, with a saver that keeps the latest checkpoints (as the server's do)."""
    async with (
        open_database(postgres_url) as db,
        open_checkpointers(postgres_url, count=1, keep_latest=8) as (saver,),
    ):
        yield world_over(db, saver, model_turns=model_turns)


def kept(world: World) -> LatestCheckpoints:
    saver = world.manager.graphs.saver_for(world.run.thread_id)
    assert isinstance(saver, CachingPostgresSaver)
    return saver.latest


@pytest.fixture
async def other_pool(postgres_url: str) -> AsyncIterator[ThreadLocks]:
    """Thread locks on a pool of their own: another server process, as far as locks go."""
    async with open_database(postgres_url) as db:
        yield ThreadLocks(db)


async def is_free(locks: ThreadLocks, thread_id: str) -> bool:
    """Whether the thread's lock can be taken now (taken and let go again if so)."""
    try:
        lease = await asyncio.wait_for(locks.take(thread_id), BUSY)
    except TimeoutError:
        return False
    await lease.release()
    return True


def checked_out(db: Database) -> int:
    """Connections of the pool in use now."""
    assert isinstance(db, PostgresDatabase)
    stats = db.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_the_last_answer_starts_the_step_without_the_queue(pg_world: World) -> None:
    first = await pg_world.first_call()

    assert await pg_world.answer(first) == "stored"
    await pg_world.settled()

    assert pg_world.manager.queue.empty()  # never queued: nothing takes from the queue here
    second = pg_world.socket.calls()[-1]
    assert second["id"] != first["id"] and second["name"] == "create_task"
    assert second["args"]["title"] == "Step 2 task"
    assert await pg_world.status() == "interrupted"


async def test_an_answer_for_a_busy_thread_queues_its_run(
    pg_world: World, other_pool: ThreadLocks
) -> None:
    first = await pg_world.first_call()
    busy = await other_pool.take(pg_world.run.thread_id)  # a step in another process

    assert await pg_world.answer(first) == "stored"

    assert list(pg_world.manager.executing) == []
    assert pg_world.manager.queue.qsize() == 1
    assert len(pg_world.socket.calls()) == 1
    await busy.release()
    await pg_world.worked_until_calls(2)
    assert pg_world.socket.calls()[-1]["args"]["title"] == "Step 2 task"
    assert await pg_world.status() == "interrupted"


async def test_with_every_slot_taken_an_answer_queues_its_run(pg_world: World) -> None:
    first = await pg_world.first_call()
    for _ in range(WORKERS):
        await pg_world.manager.queue.slots.acquire()

    assert await pg_world.answer(first) == "stored"

    assert pg_world.manager.queue.qsize() == 1
    assert list(pg_world.manager.executing) == []
    assert await pg_world.status() == "interrupted"  # left for the worker to claim


async def test_an_answer_that_leaves_a_call_open_lets_the_lock_go(
    pg_world: World, other_pool: ThreadLocks
) -> None:
    await pg_world.first_call()
    run = pg_world.run
    await parked(
        pg_world.db,
        run=run,
        calls=[("i2", "c1", "list_tasks", {}), ("i2", "c2", "list_tasks", {})],
        device_id=DEVICE,
        resumed=True,
    )

    assert await pg_world.answer({"id": "c1"}) == "stored"

    assert await is_free(other_pool, run.thread_id)
    assert checked_out(pg_world.db) == 0  # the lock's connection is back in the pool
    assert pg_world.manager.queue.empty() and not pg_world.manager.executing
    assert await pg_world.status() == "interrupted"


async def test_a_failed_statement_under_the_lock_leaves_no_lock_behind(
    pg_world: World, other_pool: ThreadLocks
) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        await pg_world.manager.locks.take("t-1", ("SELECT 1 / 0", ()))

    assert await is_free(other_pool, "t-1")
    assert checked_out(pg_world.db) == 0


#: Makes a transaction's commit take this long (a deferred trigger that sleeps).
SLOW_COMMIT = 0.5
SLOW_COMMIT_TABLE = (
    "CREATE TABLE parked (thread_id TEXT)",
    "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_sleep({SLOW_COMMIT}); RETURN NULL; END $$",
    "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON parked DEFERRABLE INITIALLY DEFERRED "
    "FOR EACH ROW EXECUTE FUNCTION slow_commit()",
)


async def test_a_lease_is_held_until_its_last_statements_commit(
    pg_world: World, other_pool: ThreadLocks
) -> None:
    """A pipeline is one transaction, committed at its end, after the unlock has run: the
    lock must stay taken (for the transaction) until then, or another process could take it
    and read the thread as it was before the park."""
    await pg_world.db.execute(*((sql, ()) for sql in SLOW_COMMIT_TABLE))
    lease = await pg_world.manager.locks.take("t-1")
    waiting = asyncio.create_task(other_pool.take("t-1", ("SELECT count(*) AS n FROM parked", ())))
    await asyncio.sleep(0.2)
    assert not waiting.done()

    await lease.release(("INSERT INTO parked VALUES ('t-1')", ()))
    second = await asyncio.wait_for(waiting, SETTLE)
    assert second.results[0][0]["n"] == 1  # it got the lock only once the insert was committed
    await second.release()


async def test_a_step_lets_its_lock_go_with_the_park_before_the_push(world: World) -> None:
    seen: list[tuple[str, bool]] = []

    async def while_pushing(frame: dict[str, Any]) -> None:
        if frame["type"] == "tool_call":
            free = await is_free(world.manager.locks, world.run.thread_id)
            seen.append((await world.status(), free))

    world.socket.on_send = while_pushing
    first = await world.first_call()
    await world.answer(first)
    await world.worked_until_calls(2)

    assert seen == [("interrupted", True), ("interrupted", True)]


async def test_a_resumed_step_takes_its_checkpoint_from_memory(postgres_url: str) -> None:
    async with kept_world(postgres_url) as world:
        first = await world.first_call()
        assert await world.answer(first) == "stored"  # straight from the answer
        await world.settled()
        second = world.socket.calls()[-1]
        assert second["args"]["title"] == "Step 2 task"
        assert kept(world).hits == 1

        for _ in range(WORKERS):  # the queue's way: the worker's read has the mark too
            await world.manager.queue.slots.acquire()
        assert await world.answer(second) == "stored"
        for _ in range(WORKERS):
            world.manager.queue.slots.release()
        await world.worked_until_calls(len(world.socket.calls()) + 1)
        assert world.socket.calls()[-1]["args"]["title"] == "Step 3 task"
        assert kept(world).hits == 2


async def stored_checkpoint(world: World) -> CheckpointTuple:
    """The thread's latest checkpoint, read from the database."""
    saver = world.manager.graphs.saver_for(world.run.thread_id)
    assert isinstance(saver, AsyncPostgresSaver)
    found = await AsyncPostgresSaver.aget_tuple(
        saver, {"configurable": {"thread_id": world.run.thread_id}}
    )
    assert found is not None
    return found


async def test_a_step_stores_its_checkpoint_with_its_park(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's checkpoint is written in the park's transaction, not by the saver."""
    written: list[str] = []

    async def not_here(*args: Any, **kwargs: Any) -> None:
        written.append("saver")
        raise AssertionError("the saver wrote a checkpoint itself")

    async with kept_world(postgres_url) as world:
        monkeypatch.setattr(AsyncPostgresSaver, "aput", not_here)
        monkeypatch.setattr(AsyncPostgresSaver, "aput_writes", not_here)
        first = await world.first_call()
        assert await world.answer(first) == "stored"
        await world.settled()
        second = world.socket.calls()[-1]

        assert written == []
        stored = await stored_checkpoint(world)
        (interrupt,) = [w[2] for w in stored.pending_writes if w[1] == INTERRUPT]
        assert [call["id"] for call in interrupt[0].value["calls"]] == [second["id"]]


async def test_a_park_the_database_refuses_stores_nothing_of_the_step(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint and the park are one transaction: when the park fails, the step's
    checkpoint is not stored either, no call goes out, and the run ends as an error."""
    async with kept_world(postgres_url) as world:
        first = await world.first_call()
        parked = await stored_checkpoint(world)
        park = bridge.park

        def failing(*args: Any, **kwargs: Any) -> Query[bool]:
            query = park(*args, **kwargs)
            return Query((*query.statements, ("SELECT 1 / 0", ())), query.read)

        monkeypatch.setattr(bridge, "park", failing)
        assert await world.answer(first) == "stored"
        await world.settled()

        assert world.socket.calls() == [first]
        run = await runs.get(world.db, world.run.run_id)
        assert run is not None and run.status == "error" and run.error is not None
        assert "could not be stored" in run.error and "division by zero" in run.error
        assert (await stored_checkpoint(world)).config == parked.config
        assert len(kept(world)) == 0
        assert await is_free(world.manager.locks, world.run.thread_id)


async def test_a_failed_step_forgets_its_kept_checkpoint(postgres_url: str) -> None:
    async with kept_world(postgres_url, model_turns=2) as world:  # the third turn fails
        call = await world.first_call()
        assert len(kept(world)) == 1

        assert await world.answer(call) == "stored"
        await world.settled()
        assert await world.status() == "error"
        assert len(kept(world)) == 0
        stored = await stored_checkpoint(world)  # what LangGraph wrote as the step failed
        assert any(channel == ERROR for _, channel, _ in stored.pending_writes)


async def test_a_step_cancelled_midway_stores_where_it_stopped(postgres_url: str) -> None:
    """Cancelled during its model turn, the step stops at the next step boundary; the
    checkpoint LangGraph writes as it stops is stored with the lock held."""
    async with kept_world(postgres_url) as world:
        first = await world.first_call()
        parked = await stored_checkpoint(world)

        def cancel_then_answer(messages: list[Any], names: set[str]) -> Any:
            world.manager.cancelling.add(world.run.run_id)  # as RunManager.cancel does
            return loop_brain.answer(messages, names)

        world.model.script.insert(0, cancel_then_answer)
        assert await world.answer(first) == "stored"
        await world.settled()

        assert world.socket.calls() == [first]  # stopped before its next call
        stopped = await stored_checkpoint(world)
        assert (
            stopped.config["configurable"]["checkpoint_id"]
            != parked.config["configurable"]["checkpoint_id"]
        )
        assert await is_free(world.manager.locks, world.run.thread_id)
