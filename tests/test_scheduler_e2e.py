"""Crons end to end through real processes: `relaygraph serve` (one or two) and
`relaygraph device`, driven with the official LangGraph SDK, on SQLite and on Postgres.

Time passing is simulated, never waited for: a test makes a cron due by writing a past
`next_run_at` into the server's database (in the same fixed-width format the server
writes, `checkpoints.clock.iso`), and the scheduler, ticking every 0.3 s, fires it. Every
wait is a poll with a deadline; nothing asserts on how long anything took.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from checkpoints.clock import iso
from checkpoints.sql import postgres_sql
from device import LocalDevice
from harness.fake_openai import FakeOpenAI
from harness.processes import DeviceProcess, ServerProcess, clean_env
from tests.support.waiting import until
from tests.test_kill_resume import EXPECTED_ROWS

pytestmark = pytest.mark.slow

USER = "alice"
DEVICE = "laptop"
INTERVAL = "0.3"  # RELAYGRAPH_SCHEDULER_INTERVAL: seconds between scheduler ticks
DEADLINE = 180.0  # seconds any single wait may take before the test fails
FINAL = ("success", "partial", "error", "cancelled")
CONNECTED = "connected to "
#: A moment long gone: a cron whose next run is then is due now (simulated time passing).
PAST = iso(datetime(2020, 1, 1, tzinfo=UTC))
#: A moment the test never reaches: the clock "stands still" before the cron's next tick.
FAR_FUTURE = iso(datetime(2999, 1, 1, tzinfo=UTC))
#: Fires once a year (1 January, 00:00 UTC): never on its own while a test runs.
YEARLY = "0 0 1 1 *"
EVERY_MINUTE = "* * * * *"


# ── The server's database, read and written directly ─────────────────────────


class ServerDatabase:
    """Short transactions on the server's database (SQLite in WAL mode, or Postgres), to
    simulate time passing and to count rows. SQL uses `?` placeholders on both."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._run(sql, params, fetch=True)

    def execute(self, sql: str, *params: Any) -> int:
        return self._run(sql, params, fetch=False)

    def _run(self, sql: str, params: Sequence[Any], *, fetch: bool) -> Any:
        if self.postgres:
            with psycopg.connect(self.url) as conn:  # commits on leaving the block
                cursor = conn.execute(postgres_sql(sql), params)
                return cursor.fetchall() if fetch else cursor.rowcount
        with contextlib.closing(sqlite3.connect(self.url, timeout=30)) as conn, conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if fetch else cursor.rowcount

    # simulated time

    def make_due(self, cron_ids: Sequence[str]) -> None:
        """Simulate time passing: every cron's next run is in the past, so it is due now."""
        self._set_next_run(cron_ids, PAST)

    def hold_clock(self, cron_ids: Sequence[str]) -> None:
        """Simulate the clock not reaching the crons' next tick (an every-minute cron must
        not fire on its own between the ticks a test makes due)."""
        self._set_next_run(cron_ids, FAR_FUTURE)

    def _set_next_run(self, cron_ids: Sequence[str], when: str) -> None:
        marks = ", ".join("?" * len(cron_ids))
        changed = self.execute(
            f"UPDATE crons SET next_run_at = ? WHERE cron_id IN ({marks})", when, *cron_ids
        )
        assert changed == len(cron_ids), f"{changed} of {len(cron_ids)} crons updated"

    # reading

    def runs_per_cron(self) -> dict[str, int]:
        rows = self.fetch(
            "SELECT cron_id, count(*) FROM runs WHERE cron_id IS NOT NULL GROUP BY cron_id"
        )
        return {str(cron_id): int(n) for cron_id, n in rows}

    def not_yet_fired(self, cron_ids: Sequence[str]) -> int:
        """How many of the crons are still due (their next run not in the future again)."""
        marks = ", ".join("?" * len(cron_ids))
        rows = self.fetch(
            f"SELECT count(*) FROM crons WHERE cron_id IN ({marks}) "
            "AND (next_run_at IS NULL OR next_run_at <= ?)",
            *cron_ids,
            iso(datetime.now(UTC)),
        )
        return int(rows[0][0])

    def online_until(self) -> str | None:
        rows = self.fetch(
            "SELECT online_until FROM devices WHERE user_id = ? AND device_id = ?", USER, DEVICE
        )
        return rows[0][0] if rows else None


# ── Processes ─────────────────────────────────────────────────────────────────


class Stack:
    """Every process one test starts (servers, devices, the fake model); `close()` stops
    all of them, `logs()` is what they wrote, for failures."""

    deadline = DEADLINE

    def __init__(self, tmp: Path, workspace: Path, database_url: str) -> None:
        self.tmp = tmp
        self.workspace = workspace
        self.database_url = database_url
        self.db = ServerDatabase(database_url)
        self.entities = tmp / "entities.db"
        self.servers: list[ServerProcess] = []
        self.devices: list[DeviceProcess] = []
        self.fake: FakeOpenAI | None = None
        self.key = ""
        self.token = ""

    def start_server(self, *, fake_model: bool = False, interval: str = INTERVAL) -> ServerProcess:
        """One more `relaygraph serve` on the stack's database, in its own directory (its
        own logs); the first one creates the API key and the device token."""
        extra = {"RELAYGRAPH_SCHEDULER_INTERVAL": interval}
        if fake_model:
            self.fake = self.fake or FakeOpenAI().start()
            extra.update(OPENAI_BASE_URL=self.fake.base_url, OPENAI_API_KEY="test")
        workdir = self.tmp / f"server{len(self.servers) + 1}"
        workdir.mkdir()
        server = ServerProcess(
            database_url=self.database_url, workdir=workdir, env=clean_env(**extra)
        )
        self.servers.append(server)
        server.start()
        if not self.key:
            self.key = server.api_key(USER)
            self.token = server.device_token(USER, DEVICE)
        return server

    def start_device(self, server: ServerProcess) -> DeviceProcess:
        device = DeviceProcess(
            server=server.url,
            token=self.token,
            root=self.workspace,
            db=self.entities,
            workdir=self.tmp,
        )
        self.devices.append(device)
        return device.start()

    def client(self, server: ServerProcess | None = None) -> LangGraphClient:
        return get_client(url=(server or self.servers[0]).url, api_key=self.key)

    def http(self, server: ServerProcess | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=(server or self.servers[0]).url,
            headers={"X-Api-Key": self.key},
            timeout=30,
        )

    def close(self) -> None:
        stops: list[Callable[[], None]] = [d.stop for d in self.devices]
        stops += [s.stop for s in self.servers]
        if self.fake is not None:
            stops.append(self.fake.stop)
        for stop in stops:
            with contextlib.suppress(Exception):
                stop()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp.rglob("*.log")):
            if path.name.startswith(("server-", "device-")):
                text = path.read_text(errors="replace")[-15000:]
                parts.append(f"──── {path.relative_to(self.tmp)} ────\n{text}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for process in [*self.servers, *self.devices]:
            popen = process.process
            if popen is not None and popen.returncode is None and popen.poll() is not None:
                name = type(process).__name__
                raise AssertionError(f"a {name} exited ({popen.returncode}):\n{self.logs()}")

    # the device's side

    def entity_counts(self) -> dict[str, int]:
        local = LocalDevice([self.workspace], self.entities)
        try:
            return local.count_rows()
        finally:
            local.close()

    def device_calls(self) -> dict[str, str]:
        """Call id -> tool name of every call the device ran (its `call_results` table)."""
        local = LocalDevice([self.workspace], self.entities)
        try:
            return {str(r["id"]): str(r["name"]) for r in local.rows("call_results")}
        finally:
            local.close()


@pytest.fixture
def stack(tmp_path: Path, workspace: Path, database_url: str) -> Iterator[Stack]:
    with contextlib.closing(Stack(tmp_path, workspace, database_url)) as stack:
        yield stack


@pytest.fixture
def sqlite_stack(tmp_path: Path, workspace: Path) -> Iterator[Stack]:
    with contextlib.closing(Stack(tmp_path, workspace, str(tmp_path / "server.db"))) as stack:
        yield stack


@pytest.fixture
def postgres_stack(tmp_path: Path, workspace: Path, postgres_url: str) -> Iterator[Stack]:
    with contextlib.closing(Stack(tmp_path, workspace, postgres_url)) as stack:
        yield stack


# ── Waiting ───────────────────────────────────────────────────────────────────


async def device_online(stack: Stack, device: DeviceProcess) -> None:
    """The device said hello and the server recorded it present."""
    await until(stack, "the device to connect", lambda: CONNECTED in device.log())
    await until(stack, "the device's presence", stack.db.online_until)


async def scheduler_ticks(stack: Stack, count: int) -> None:
    """Wait for `count` more ticks of the server holding the device: each one renews the
    device's presence (`online_until` moves on)."""
    seen = stack.db.online_until()
    for number in range(count):
        previous = seen

        def renewed(previous: str | None = previous) -> str | None:
            current = stack.db.online_until()
            return current if current and current != previous else None

        seen = await until(stack, f"scheduler tick #{number + 1}", renewed)


async def clear_of_minute_boundary(margin: float = 15.0) -> None:
    """An every-minute cron fires on its own at each wall-clock minute. A forced tick's
    run moves its next run to the coming minute until the test holds the clock
    (`hold_clock`); starting well before a minute boundary keeps that window clear."""
    now = datetime.now(UTC)
    left = 60 - now.second - now.microsecond / 1e6
    if left < margin:
        await asyncio.sleep(left + 0.5)


# ── Runs of an assistant ─────────────────────────────────────────────────────


async def assistant_runs(stack: Stack, assistant_id: str) -> list[dict[str, Any]]:
    """`GET /assistants/{id}/runs`: the assistant's run log, newest first."""
    async with stack.http() as http:
        response = await http.get(f"/assistants/{assistant_id}/runs", params={"limit": 1000})
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    return runs


async def runs_appear(stack: Stack, assistant_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until the assistant has `count` runs (failing on more); oldest first."""

    async def enough() -> list[dict[str, Any]] | None:
        runs = await assistant_runs(stack, assistant_id)
        assert len(runs) <= count, f"more runs than due ticks: {runs}\n{stack.logs()}"
        return list(reversed(runs)) if len(runs) == count else None

    return await until(stack, f"{count} run(s) of the assistant", enough)


async def run_ends(
    stack: Stack, assistant_id: str, run_id: str, timeout: float = DEADLINE
) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        for run in await assistant_runs(stack, assistant_id):
            if run["run_id"] == run_id and run["status"] in FINAL:
                return run
        return None

    return await until(stack, f"the end of run {run_id}", final, timeout)


async def local_agent(stack: Stack, client: LangGraphClient) -> dict[str, Any]:
    """A local-agent assistant over the workspace, bound to the device."""
    return await client.assistants.create(
        graph_id="local_agent",
        context={"directory_paths": [str(stack.workspace)], "device_id": DEVICE},
    )


# ── 1. Offline device: overdue, fired on device_hello, once ──────────────────


async def test_overdue_cron_fires_once_when_the_device_says_hello(stack: Stack) -> None:
    """Due while its device is offline, a cron is marked overdue and starts nothing; the
    device's hello fires it once, and the run completes; due again, it runs once more."""
    stack.start_server()
    client = stack.client()
    assistant = await local_agent(stack, client)
    assistant_id = assistant["assistant_id"]
    cron = await client.crons.create(assistant_id, schedule=EVERY_MINUTE, on_run_completed="keep")
    cron_id = cron["cron_id"]
    assert cron["overdue"] is False and cron["next_run_date"] is not None, cron

    # Time passes (simulated) while the device is offline: the cron is due, cannot fire.
    stack.db.make_due([cron_id])

    async def overdue() -> bool:
        [found] = await client.crons.search(assistant_id=assistant_id)
        return bool(found["overdue"])

    await until(stack, "the cron to be marked overdue", overdue)
    assert await assistant_runs(stack, assistant_id) == []
    [found] = await client.crons.search(assistant_id=assistant_id)
    assert found["next_run_date"] == PAST, "an overdue cron stays due"
    assert found["last_run_at"] is None, found

    # The device says hello: the overdue tick fires, once (no backlog of missed minutes).
    await clear_of_minute_boundary()
    device = stack.start_device(stack.servers[0])
    [first] = await runs_appear(stack, assistant_id, 1)
    stack.db.hold_clock([cron_id])
    assert first["cron_id"] == cron_id and first["device_id"] == DEVICE, first
    first = await run_ends(stack, assistant_id, first["run_id"])
    assert first["status"] == "success", f"{first}\n{stack.logs()}"
    assert first["error"] is None, first
    assert first["counts"]["created"] == EXPECTED_ROWS, first
    assert stack.entity_counts() == EXPECTED_ROWS, stack.logs()
    [found] = await client.crons.search(assistant_id=assistant_id)
    assert found["overdue"] is False and found["last_run_at"] is not None, found
    assert CONNECTED in device.log()

    # Due once more while the device is online: one more run, two in total.
    await clear_of_minute_boundary()
    stack.db.make_due([cron_id])
    runs = await runs_appear(stack, assistant_id, 2)
    stack.db.hold_clock([cron_id])
    assert runs[0]["run_id"] == first["run_id"], runs
    second = await run_ends(stack, assistant_id, runs[1]["run_id"])
    assert second["cron_id"] == cron_id, second
    assert second["status"] == "success", f"{second}\n{stack.logs()}"
    assert second["thread_id"] != first["thread_id"], "each tick runs on a new thread"
    assert stack.entity_counts() == EXPECTED_ROWS, "the re-run created nothing twice"

    # A few more ticks change nothing: no backlog of missed minutes fires later.
    await scheduler_ticks(stack, 3)
    runs = await assistant_runs(stack, assistant_id)
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]], runs
    assert stack.db.runs_per_cron() == {cron_id: 2}


# ── 2. Two server processes, one Postgres: one run per due tick ──────────────

CRONS = 25
ROUNDS = 4  # CRONS x ROUNDS = 100 due ticks in all
TASK = "check; then report"


async def test_two_servers_fire_each_due_tick_exactly_once(postgres_stack: Stack) -> None:
    """Both servers' schedulers race for the same due crons (FOR UPDATE SKIP LOCKED):
    every due tick becomes exactly one run, whichever process claims it."""
    stack = postgres_stack
    first = stack.start_server()
    second = stack.start_server()
    device = stack.start_device(first)
    await device_online(stack, device)
    clients = [stack.client(first), stack.client(second)]

    assistant = await clients[0].assistants.create(graph_id="agentic_loop", context={})
    assistant_id = assistant["assistant_id"]
    crons = await asyncio.gather(
        *[
            clients[n % 2].crons.create(
                assistant_id,
                schedule=YEARLY,
                input={"task": f"{TASK} #{n}"},
                on_run_completed="keep",
            )
            for n in range(CRONS)
        ]
    )
    cron_ids = [c["cron_id"] for c in crons]
    assert len(set(cron_ids)) == CRONS
    assert stack.db.runs_per_cron() == {}

    for round_number in range(1, ROUNDS + 1):
        # Simulated time: every cron is due at once, for both servers' schedulers.
        stack.db.make_due(cron_ids)
        await until(
            stack,
            f"round {round_number}: every cron fired",
            lambda: stack.db.not_yet_fired(cron_ids) == 0,
        )
        counts = stack.db.runs_per_cron()
        assert counts == dict.fromkeys(cron_ids, round_number), (
            f"round {round_number}: runs per cron {sorted(counts.values())}\n{stack.logs()}"
        )

    total = sum(stack.db.runs_per_cron().values())
    assert total == CRONS * ROUNDS == 100
    runs = await assistant_runs(stack, assistant_id)
    assert len(runs) == total and len({r["run_id"] for r in runs}) == total
    assert len({r["thread_id"] for r in runs}) == total, "each tick runs on a new thread"
    # A few more ticks of both schedulers fire nothing more.
    await scheduler_ticks(stack, 3)
    assert sum(stack.db.runs_per_cron().values()) == total


# ── 3. A scheduled re-run over an unchanged folder costs nothing ─────────────


async def test_rerun_over_unchanged_folder_makes_no_model_calls(sqlite_stack: Stack) -> None:
    """The second scheduled run reads the assistant's watermark: nothing changed since the
    first, so it scans, asks the model nothing and writes no entity."""
    stack = sqlite_stack
    server = stack.start_server(fake_model=True)
    assert stack.fake is not None
    device = stack.start_device(server)
    await device_online(stack, device)
    client = stack.client()
    assistant = await local_agent(stack, client)
    assistant_id = assistant["assistant_id"]
    cron = await client.crons.create(assistant_id, schedule=YEARLY, on_run_completed="keep")
    cron_id = cron["cron_id"]

    # First due tick: everything is new.
    stack.db.make_due([cron_id])
    [first] = await runs_appear(stack, assistant_id, 1)
    first = await run_ends(stack, assistant_id, first["run_id"])
    assert first["status"] == "success", f"{first}\n{stack.logs()}"
    assert first["counts"]["created"] == EXPECTED_ROWS, first
    model_calls = stack.fake.calls
    assert model_calls > 0
    entities = stack.entity_counts()
    assert entities == EXPECTED_ROWS, stack.logs()
    calls_before = stack.device_calls()
    assert any(name.startswith("create_") for name in calls_before.values())

    # Due again: the folder has not changed since the first run started.
    stack.db.make_due([cron_id])
    runs = await runs_appear(stack, assistant_id, 2)
    second = await run_ends(stack, assistant_id, runs[1]["run_id"])
    assert second["cron_id"] == cron_id, second
    assert second["status"] == "success", f"{second}\n{stack.logs()}"
    assert second["error"] is None, second

    assert stack.fake.calls == model_calls, "the re-run asked the model"
    assert stack.entity_counts() == entities
    new_calls = {
        call_id: name
        for call_id, name in stack.device_calls().items()
        if call_id not in calls_before
    }
    assert new_calls, "the re-run scanned the folder on the device"
    writes = sorted(n for n in new_calls.values() if n.startswith(("create_", "update_")))
    assert writes == [], f"the re-run wrote entities: {writes}"
    assert not any(second["counts"]["created"].values()), second
    assert not any(second["counts"]["updated"].values()), second


# ── 4. Invalid schedules are refused, naming the problem ─────────────────────

INVALID = [
    pytest.param({"schedule": "0 0 30 2 *"}, "schedule", "never fires", id="30-february"),
    pytest.param({"schedule": "61 * * * *"}, "schedule", "out of range", id="minute-61"),
    pytest.param({"schedule": "0 0 * * * *"}, "schedule", "has 6", id="six-fields"),
    pytest.param(
        {"schedule": "0 9 * * *", "timezone": "Mars/Olympus"},
        "timezone",
        "Unknown timezone",
        id="unknown-timezone",
    ),
]


def refused(error: httpx.HTTPStatusError, field: str, problem: str) -> None:
    """A 422 whose body names the field and the problem."""
    response = error.response
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(problem in item["msg"] and item["loc"][-1] == field for item in detail), detail


@pytest.fixture(scope="module")
def api_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One server (SQLite) for every invalid-schedule case: each case has its assistant."""
    tmp = tmp_path_factory.mktemp("crons-api")
    stack = Stack(tmp, tmp, str(tmp / "server.db"))
    try:
        stack.start_server()
        yield stack
    finally:
        stack.close()


@pytest.mark.parametrize(("fields", "field", "problem"), INVALID)
async def test_invalid_schedule_is_refused_with_the_reason(
    api_stack: Stack, fields: dict[str, str], field: str, problem: str
) -> None:
    stack = api_stack
    client = stack.client()
    assistant = await local_agent(stack, client)
    assistant_id = assistant["assistant_id"]
    thread = await client.threads.create()

    with pytest.raises(httpx.HTTPStatusError) as created:
        await client.crons.create(assistant_id, **fields)  # type: ignore[arg-type]
    refused(created.value, field, problem)
    with pytest.raises(httpx.HTTPStatusError) as for_thread:
        await client.crons.create_for_thread(thread["thread_id"], assistant_id, **fields)  # type: ignore[arg-type]
    refused(for_thread.value, field, problem)
    assert await client.crons.search(assistant_id=assistant_id) == [], "nothing was created"

    # Changing a valid cron to the invalid schedule is refused too, and changes nothing.
    cron = await client.crons.create(assistant_id, schedule=YEARLY)
    with pytest.raises(httpx.HTTPStatusError) as updated:
        await client.crons.update(cron["cron_id"], **fields)  # type: ignore[arg-type]
    refused(updated.value, field, problem)
    [found] = await client.crons.search(assistant_id=assistant_id)
    assert (found["schedule"], found["timezone"]) == (YEARLY, "UTC"), found
    assert found["next_run_date"] == cron["next_run_date"], found

    # The raw response body, without the SDK.
    async with stack.http() as http:
        response = await http.post("/runs/crons", json={"assistant_id": assistant_id, **fields})
    assert response.status_code == 422, response.text
    assert problem in response.text, response.text
    rows = stack.db.fetch("SELECT cron_id FROM crons WHERE assistant_id = ?", assistant_id)
    assert rows == [(cron["cron_id"],)], "only the valid cron exists"


# ── Across processes, and through database errors ─────────────────────────────


async def test_cron_fired_by_the_other_server_reaches_the_device(postgres_stack: Stack) -> None:
    stack = postgres_stack
    # The server holding the device ticks every 5 s, the other one every 0.3 s: a tick made
    # due just after the holder's tick is claimed by the other server first.
    holder = stack.start_server(interval="5")
    stack.start_server()
    device = stack.start_device(holder)
    await device_online(stack, device)
    client = stack.client(holder)
    assistant = await local_agent(stack, client)
    assistant_id = assistant["assistant_id"]
    cron = await client.crons.create(assistant_id, schedule=YEARLY, on_run_completed="keep")

    await scheduler_ticks(stack, 1)  # the holder just ticked (it renewed the presence)
    await asyncio.sleep(0.5)  # and is done with that tick
    stack.db.make_due([cron["cron_id"]])  # simulated time: due now
    [run] = await runs_appear(stack, assistant_id, 1)
    run = await run_ends(stack, assistant_id, run["run_id"], timeout=45)
    assert run["status"] == "success", run
    assert stack.entity_counts() == EXPECTED_ROWS


async def test_scheduler_survives_a_locked_database(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    server = stack.start_server()
    device = stack.start_device(server)
    await device_online(stack, device)
    client = stack.client()
    assistant = await client.assistants.create(graph_id="agentic_loop", context={})
    cron = await client.crons.create(
        assistant["assistant_id"], schedule=YEARLY, input={"task": TASK}, on_run_completed="keep"
    )

    # Another process holds the write lock longer than the server's busy timeout (10 s):
    # a tick that starts meanwhile fails with "database is locked".
    with contextlib.closing(sqlite3.connect(stack.database_url, isolation_level=None)) as lock:
        lock.execute("BEGIN IMMEDIATE")
        await asyncio.sleep(13)
        lock.execute("ROLLBACK")

    stack.db.make_due([cron["cron_id"]])  # simulated time: due now
    await until(
        stack,
        "the cron to fire after the hiccup",
        lambda: stack.db.runs_per_cron() == {cron["cron_id"]: 1},
        timeout=20,
    )
