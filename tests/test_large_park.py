"""A run parks on a batch of any size: a first run over 10,000 files hands its device
thousands of calls at once, and the park stores them with one statement whose parameters do
not grow with the batch (Postgres refuses a statement of more than 65,535 parameters, which a
row of parameters per call passed at about 6,000 calls), on SQLite and Postgres alike."""

from typing import Any

from checkpoints import open_database
from harness.records import agentic_run, parked
from server.repository import Repository

USER, DEVICE = "ana", "laptop"
#: Past the 5,957 calls of 11 parameters each that fit in one Postgres statement.
LARGE = 10_000


def batch(interrupt: str, size: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (interrupt, f"{interrupt}/call-{n:05d}", "create_task", {"title": f"Task {n}", "n": n})
        for n in range(size)
    ]


class Kind:
    """Stands in for a `Database` where only its kind is read (statements are built, not run)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def shape(kind: str, size: int, *, resumed: bool) -> list[tuple[str, int]]:
    repo = Repository(Kind(kind))  # type: ignore[arg-type]
    run = {"run_id": "r", "thread_id": "t", "user_id": USER}
    statements = repo.park_statements(
        run=run, calls=batch("i", size), device_id=DEVICE, resumed=resumed
    )
    return [(sql, len(params)) for sql, params in statements]


def test_a_park_is_the_same_statements_whatever_the_batch_size() -> None:
    for kind in ("sqlite", "postgres"):
        for resumed in (False, True):
            assert shape(kind, 1, resumed=resumed) == shape(kind, LARGE, resumed=resumed)


async def test_a_batch_past_the_parameter_limit_parks_whole(database_url: str) -> None:
    async with open_database(database_url) as db:
        repo = Repository(db)
        await repo.add_device(user_id=USER, device_id=DEVICE)
        run = await agentic_run(repo, user_id=USER, device_id=DEVICE)
        assert await repo.start_step(run)
        first = batch("i1", LARGE)
        assert await parked(repo, run=run, calls=first, device_id=DEVICE)
        # the same park again (a step re-run after a crash) adds nothing
        assert await parked(repo, run=run, calls=first, device_id=DEVICE)

        pending = await repo.pending_for_device(user_id=USER, device_id=DEVICE)
        assert [(c.call_id, c.name, c.args) for c in pending] == [
            (call_id, name, args) for _, call_id, name, args in first
        ]
        assert {c.interrupt_id for c in pending} == {"i1"}
        assert len(await repo.unpushed_for_device(user_id=USER, device_id=DEVICE)) == LARGE

        await repo.mark_pushed([c.call_id for c in pending[: LARGE // 2]])
        unpushed = await repo.unpushed_for_device(user_id=USER, device_id=DEVICE)
        assert [c.call_id for c in unpushed] == [c.call_id for c in pending[LARGE // 2 :]]

        second = batch("i2", LARGE)  # the step that consumed the first batch parks the next
        assert await parked(repo, run=run, calls=second, device_id=DEVICE, resumed=True)
        pending = await repo.pending_for_device(user_id=USER, device_id=DEVICE)
        assert [c.call_id for c in pending] == [call_id for _, call_id, _, _ in second]


async def test_a_park_of_an_ended_run_stores_nothing(database_url: str) -> None:
    async with open_database(database_url) as db:
        repo = Repository(db)
        await repo.add_device(user_id=USER, device_id=DEVICE)
        run = await agentic_run(repo, user_id=USER, device_id=DEVICE)
        assert await repo.cancel_run(run=run)
        assert not await parked(repo, run=run, calls=batch("i1", LARGE), device_id=DEVICE)
        assert await repo.pending_for_device(user_id=USER, device_id=DEVICE) == []
