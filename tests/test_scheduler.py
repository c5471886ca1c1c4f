"""The scheduler with an injected clock, no sleeping, on SQLite and a real Postgres."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from fastapi import WebSocket
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from starlette.websockets import WebSocketState

from checkpoints import open_database
from checkpoints.clock import iso
from checkpoints.database import Database
from harness.records import parked as park
from server.crontab import next_fire, parse_schedule
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import Connection, DeviceHub
from server.locks import ThreadLocks
from server.records import Cron
from server.runs import RunManager
from server.scheduler import Scheduler
from server.storage import accounts, assistants, bridge, crons, runs, threads
from server.storage.bridge import DeviceAnswer
from tests.support.scripted import ScriptedChatModel

USER = "ana"
FAR_FUTURE = iso(datetime(2100, 1, 1, tzinfo=UTC))


class ClosedSocket:
    """Stands in for a device's socket; sends are skipped (nothing is pushed in these tests)."""

    application_state = WebSocketState.DISCONNECTED


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    db: Database
    runs: RunManager
    scheduler: Scheduler
    clock: Clock

    async def assistant(self, device_id: str | None = "laptop") -> str:
        context = {"directory_paths": ["/tmp/x"], **({"device_id": device_id} if device_id else {})}
        assistant, _ = await assistants.create(
            self.db, user_id=USER, graph_id="agentic_loop", context=context
        )
        return assistant.assistant_id

    async def cron(self, assistant_id: str, expr: str, tz: str = "UTC") -> str:
        schedule = parse_schedule(expr, tz)
        first = next_fire(schedule, self.clock())
        stamp = iso(self.clock())
        cron = await crons.create(
            self.db,
            Cron(
                cron_id=str(uuid.uuid4()),
                user_id=USER,
                assistant_id=assistant_id,
                thread_id=None,
                schedule=expr,
                timezone=tz,
                end_time=None,
                enabled=True,
                payload={"input": {"task": "check"}},
                metadata={},
                on_run_completed="keep",
                next_run_at=iso(first) if first else None,
                overdue=False,
                last_run_at=None,
                created_at=stamp,
                updated_at=stamp,
            ),
        )
        return cron.cron_id

    async def cron_by_id(self, cron_id: str) -> Cron | None:
        return await crons.get_any_user(self.db, cron_id)

    async def online(self, device_id: str = "laptop") -> None:
        """The device is connected to this process (a socket in its hub) and present."""
        await accounts.add_device(self.db, user_id=USER, device_id=device_id)
        self.runs.hub.register(Connection(USER, device_id, cast(WebSocket, ClosedSocket())))
        await accounts.set_online(self.db, user_id=USER, device_id=device_id, until=FAR_FUTURE)

    async def cron_runs(self) -> list[dict[str, object]]:
        return await self.db.fetch(
            "SELECT run_id, cron_id, device_id, created_at FROM runs WHERE cron_id IS NOT NULL "
            "ORDER BY created_at"
        )


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with open_database(database_url) as db:
        yield _world(db, Clock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC)))


def _world(db: Database, clock: Clock) -> World:
    hub = DeviceHub()
    runs = RunManager(
        db=db,
        graphs=GraphRegistry(ScriptedChatModel(), [InMemorySaver()], InMemoryStore()),
        hub=hub,
        events=RunEvents(),
        locks=ThreadLocks(db),
        workers=1,
    )  # workers never started: the test reads what was queued and stored
    return World(db, runs, Scheduler(db=db, runs=runs, hub=hub, clock=clock), clock)


async def test_missed_ticks_coalesce_into_one_run(world: World) -> None:
    await world.online()
    cron_id = await world.cron(await world.assistant(), "*/5 * * * *")
    world.clock.now += timedelta(hours=3)  # 36 ticks missed

    fired = await world.scheduler.tick()

    assert len(fired) == 1 and world.runs.queue.qsize() == 1
    cron = await world.cron_by_id(cron_id)
    assert cron is not None and cron.next_run_at is not None
    assert cron.next_run_at > iso(world.clock.now)
    assert await world.scheduler.tick() == []
    world.clock.now += timedelta(minutes=5)
    assert len(await world.scheduler.tick()) == 1


@pytest.mark.parametrize(
    ("start", "day"),
    [
        (datetime(2026, 3, 28, 22, 0, tzinfo=UTC), "2026-03-29"),  # 02:00 -> 03:00
        (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), "2026-10-25"),
    ],  # 03:00 -> 02:00
    ids=["spring-forward", "fall-back"],
)
async def test_a_local_time_fires_once_across_daylight_saving_changes(
    world: World, start: datetime, day: str
) -> None:
    await world.online()
    world.clock.now = start
    await world.cron(await world.assistant(), "30 2 * * *", "Europe/Berlin")
    fired_at = []
    while world.clock.now < start + timedelta(hours=26):
        world.clock.now += timedelta(minutes=10)
        if await world.scheduler.tick():
            fired_at.append(
                world.clock.now.astimezone(parse_schedule("* * * * *", "Europe/Berlin").zone)
            )
    assert len(fired_at) == 1, fired_at
    assert fired_at[0].date().isoformat() == day


async def test_an_offline_device_makes_the_cron_overdue_until_its_hello(world: World) -> None:
    await accounts.add_device(world.db, user_id=USER, device_id="laptop")
    cron_id = await world.cron(await world.assistant(), "0 * * * *")
    world.clock.now += timedelta(hours=5)

    assert await world.scheduler.tick() == []
    cron = await world.cron_by_id(cron_id)
    assert cron is not None and cron.overdue is True

    world.runs.hub.register(Connection(USER, "laptop", cast(WebSocket, ClosedSocket())))
    await world.scheduler.device_connected(USER, "laptop")  # what device_hello calls

    runs = await world.cron_runs()
    assert [r["cron_id"] for r in runs] == [cron_id]
    assert runs[0]["device_id"] == "laptop"
    cron = await world.cron_by_id(cron_id)
    assert cron is not None and cron.overdue is False
    assert await world.scheduler.tick() == []


async def test_an_unbound_assistant_runs_on_any_connected_device(world: World) -> None:
    await world.online("desktop")
    await world.cron(await world.assistant(device_id=None), "0 * * * *")
    world.clock.now += timedelta(hours=1)
    await world.scheduler.tick()
    assert [r["device_id"] for r in await world.cron_runs()] == ["desktop"]


async def test_scheduled_runs_of_one_device_start_one_after_another(world: World) -> None:
    await world.online()
    assistant = await world.assistant()
    await world.cron(assistant, "0 * * * *")
    await world.cron(assistant, "0 * * * *")
    world.clock.now += timedelta(hours=1)
    fired = await world.scheduler.tick()
    assert len(fired) == 2
    first, second = [await runs.get(world.db, r) for r in fired]
    assert first is not None and second is not None
    ordered = sorted([first, second], key=lambda r: (r.created_at, r.run_id))
    assert await world.runs._waits_for_its_device(ordered[0]) is False
    assert await world.runs._waits_for_its_device(ordered[1]) is True


async def test_two_schedulers_on_one_postgres_fire_each_due_tick_exactly_once(
    postgres_url: str,
) -> None:
    clock = Clock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    async with open_database(postgres_url) as db_a, open_database(postgres_url) as db_b:
        a, b = _world(db_a, clock), _world(db_b, clock)
        await a.online("desk")  # one device on each process: both may fire every cron
        await b.online("laptop")
        assistant = await a.assistant(device_id=None)
        crons = [await a.cron(assistant, "*/10 * * * *") for _ in range(25)]
        for _ in range(4):  # 4 rounds x 25 crons = 100 due ticks
            clock.now += timedelta(minutes=10)
            await asyncio.gather(*(s.scheduler.tick() for s in (a, b, a, b)))
        per_cron = Counter(r["cron_id"] for r in await a.cron_runs())
    assert sum(per_cron.values()) == 100
    assert per_cron == dict.fromkeys(crons, 4)


async def test_a_device_connected_to_another_process_leaves_the_cron_due(world: World) -> None:
    await accounts.add_device(world.db, user_id=USER, device_id="laptop")
    await accounts.set_online(world.db, user_id=USER, device_id="laptop", until=FAR_FUTURE)
    cron_id = await world.cron(await world.assistant(), "0 * * * *")
    world.clock.now += timedelta(hours=1)
    assert await world.scheduler.tick() == []
    cron = await world.cron_by_id(cron_id)
    assert cron is not None and cron.overdue is False
    assert cron.next_run_at is not None
    assert cron.next_run_at <= iso(world.clock.now), "still due for the other process"


async def test_a_run_is_queued_once_however_often_it_is_found_pending(world: World) -> None:
    world.runs.enqueue("run-1")
    world.runs.enqueue("run-1")  # a stale-pending sweep finding it again
    world.runs.enqueue("run-2")
    assert world.runs.queue.qsize() == 2


async def test_an_answered_run_nobody_resumed_is_queued_by_the_sweep(world: World) -> None:
    """Two answers of one run stored at once by two connections each see the other missing,
    so neither queues the run; the tick's sweep does, once the run has waited a while."""
    assistant_id = await world.assistant()
    parked: dict[str, str] = {}
    for name, calls in (("answered", ["a1"]), ("waiting", ["w1", "w2"])):
        thread, _ = await threads.create(world.db, user_id=USER)
        assert thread is not None
        run = await runs.create(
            world.db,
            user_id=USER,
            thread_id=thread.thread_id,
            assistant_id=assistant_id,
            kwargs={},
            metadata=None,
            device_id="laptop",
        )
        await park(
            world.db,
            run=run,
            calls=[("i", c, "list_tasks", {}) for c in calls],
            device_id="laptop",
        )
        await bridge.store_answer(world.db, DeviceAnswer(USER, "laptop", calls[0], True, []))
        parked[name] = run.run_id
    world.clock.now = datetime.now(UTC)

    await world.scheduler.tick()
    assert world.runs.queue.queued == set()  # parked just now: the answer's own path may be running

    world.clock.now = datetime.now(UTC) + timedelta(minutes=5)
    await world.scheduler.tick()
    assert world.runs.queue.queued == {parked["answered"]}
