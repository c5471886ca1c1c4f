"""An answer's way to its run's next step, with the run manager over a real database.

On Postgres, the answer that completes a run takes the thread's lock, claims the run and reads
it in one round trip, and the step starts from there when a slot is free; a busy thread or no
free slot sends the run through the queue instead. On both backends a step stores its park as
it lets the thread's lock go, before it pushes the calls. A failed statement never leaves a
thread's lock behind on a pooled connection."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import pytest
from fastapi import WebSocket
from langgraph.checkpoint.memory import InMemorySaver
from starlette.websockets import WebSocketState

from checkpoints import Database, open_database
from checkpoints.store import PostgresDatabase
from device.protocol import ToolResult
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import Connection, DeviceHub
from server.locks import ThreadLocks
from server.repository import Repository
from server.runs import RunManager
from tests.support import loop_brain
from tests.support.scripted import ScriptedChatModel

USER, DEVICE = "ana", "laptop"
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
    repo: Repository
    manager: RunManager
    socket: RecordingSocket
    run: dict[str, Any] = field(default_factory=dict)

    async def first_call(self) -> dict[str, Any]:
        """Create an agentic-loop run on the device and run its first step: it parks on
        the first step's `create_task` call, which is pushed."""
        assistant, _ = await self.repo.create_assistant(
            user_id=USER, graph_id="agentic_loop", context={"device_id": DEVICE}
        )
        thread, _ = await self.repo.create_thread(user_id=USER)
        assert thread is not None
        self.run = await self.repo.create_run(
            user_id=USER,
            thread_id=thread["thread_id"],
            assistant_id=assistant["assistant_id"],
            kwargs={"input": {"task": "make three tasks"}},
            metadata=None,
            device_id=DEVICE,
        )
        await self.manager.execute(self.run["run_id"])
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
        found = await self.repo.get_run(self.run["run_id"])
        assert found is not None
        return str(found["status"])


def world_over(db: Database) -> World:
    repo, hub, socket = Repository(db), DeviceHub(), RecordingSocket()
    hub.register(Connection(USER, DEVICE, cast(WebSocket, socket)))
    model = ScriptedChatModel(script=[loop_brain.answer] * 20)
    manager = RunManager(
        repo=repo,
        graphs=GraphRegistry(model, [InMemorySaver()]),
        hub=hub,
        events=RunEvents(),
        locks=ThreadLocks(db),
        workers=WORKERS,
    )  # not started: nothing takes runs from the queue until a test starts it
    return World(db, repo, manager, socket)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with open_database(database_url) as db:
        yield world_over(db)


@pytest.fixture
async def pg_world(postgres_url: str) -> AsyncIterator[World]:
    async with open_database(postgres_url) as db:
        yield world_over(db)


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
    busy = await other_pool.take(pg_world.run["thread_id"])  # a step in another process

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
        await pg_world.manager.slots.acquire()

    assert await pg_world.answer(first) == "stored"

    assert pg_world.manager.queue.qsize() == 1
    assert list(pg_world.manager.executing) == []
    assert await pg_world.status() == "interrupted"  # left for the worker to claim


async def test_an_answer_that_leaves_a_call_open_lets_the_lock_go(
    pg_world: World, other_pool: ThreadLocks
) -> None:
    await pg_world.first_call()
    run = pg_world.run
    await pg_world.repo.park_run(
        run=run,
        calls=[("i2", "c1", "list_tasks", {}), ("i2", "c2", "list_tasks", {})],
        device_id=DEVICE,
        resumed=True,
    )

    assert await pg_world.answer({"id": "c1"}) == "stored"

    assert await is_free(other_pool, run["thread_id"])
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


async def test_a_step_lets_its_lock_go_with_the_park_before_the_push(world: World) -> None:
    seen: list[tuple[str, bool]] = []

    async def while_pushing(frame: dict[str, Any]) -> None:
        if frame["type"] == "tool_call":
            free = await is_free(world.manager.locks, world.run["thread_id"])
            seen.append((await world.status(), free))

    world.socket.on_send = while_pushing
    first = await world.first_call()
    await world.answer(first)
    await world.worked_until_calls(2)

    assert seen == [("interrupted", True), ("interrupted", True)]
