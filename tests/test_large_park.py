"""A run parks on a batch of any size: a first run over 10,000 files hands its device
thousands of calls at once, and the park stores them with one statement whose parameters do
not grow with the batch (Postgres refuses a statement of more than 65,535 parameters, which a
row of parameters per call passed at about 6,000 calls), on SQLite and Postgres alike."""

from typing import Any

from checkpoints import open_database
from harness.records import agentic_run, parked
from server.records import Run
from server.storage import accounts, bridge, runs

USER, DEVICE = "ana", "laptop"
#: Past the 5,957 calls of 11 parameters each that fit in one Postgres statement.
LARGE = 10_000


def batch(interrupt: str, size: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (interrupt, f"{interrupt}/call-{n:05d}", "create_task", {"title": f"Task {n}", "n": n})
        for n in range(size)
    ]


def shape(kind: str, size: int, *, resumed: bool) -> list[tuple[str, int]]:
    run = Run(
        run_id="r",
        thread_id="t",
        assistant_id="a",
        user_id=USER,
        status="running",
        kwargs={},
        metadata={},
        device_id=DEVICE,
        error=None,
        counts=None,
        created_at="2026-12-03T00:00:00+00:00",
        updated_at="2026-12-03T00:00:00+00:00",
        started_at=None,
        finished_at=None,
        cron_id=None,
    )
    query = bridge.park(kind, run=run, calls=batch("i", size), device_id=DEVICE, resumed=resumed)
    return [(sql, len(params)) for sql, params in query.statements]


def test_a_park_is_the_same_statements_whatever_the_batch_size() -> None:
    for kind in ("sqlite", "postgres"):
        for resumed in (False, True):
            assert shape(kind, 1, resumed=resumed) == shape(kind, LARGE, resumed=resumed)


async def test_a_batch_past_the_parameter_limit_parks_whole(database_url: str) -> None:
    async with open_database(database_url) as db:
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        run = await agentic_run(db, user_id=USER, device_id=DEVICE)
        assert await runs.start(db, run)
        first = batch("i1", LARGE)
        assert await parked(db, run=run, calls=first, device_id=DEVICE)
        # the same park again (a step re-run after a crash) adds nothing
        assert await parked(db, run=run, calls=first, device_id=DEVICE)

        pending = await bridge.for_device(db, user_id=USER, device_id=DEVICE)
        assert [(c.call_id, c.name, c.args) for c in pending] == [
            (call_id, name, args) for _, call_id, name, args in first
        ]
        assert {c.interrupt_id for c in pending} == {"i1"}
        assert len(await bridge.unpushed_for_device(db, user_id=USER, device_id=DEVICE)) == LARGE

        await bridge.mark_pushed(db, [c.call_id for c in pending[: LARGE // 2]])
        unpushed = await bridge.unpushed_for_device(db, user_id=USER, device_id=DEVICE)
        assert [c.call_id for c in unpushed] == [c.call_id for c in pending[LARGE // 2 :]]

        second = batch("i2", LARGE)  # the step that consumed the first batch parks the next
        assert await parked(db, run=run, calls=second, device_id=DEVICE, resumed=True)
        pending = await bridge.for_device(db, user_id=USER, device_id=DEVICE)
        assert [c.call_id for c in pending] == [call_id for _, call_id, _, _ in second]


async def test_a_park_of_an_ended_run_stores_nothing(database_url: str) -> None:
    async with open_database(database_url) as db:
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        run = await agentic_run(db, user_id=USER, device_id=DEVICE)
        assert await runs.cancel(db, run)
        assert not await parked(db, run=run, calls=batch("i1", LARGE), device_id=DEVICE)
        assert await bridge.for_device(db, user_id=USER, device_id=DEVICE) == []
