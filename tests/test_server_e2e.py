"""End to end through real processes: `relaygraph serve` and `relaygraph device`, driven with
the official LangGraph SDK, on SQLite and on Postgres.

A local-agent run over the sample folder must end `success` with every entity on the device
exactly once, however its device and its server are killed (SIGKILL) and restarted on the
way, and it stays ONE run record from create to success.

Kill points are reached deterministically, never by timing:
- the fake model server holds the second processing model call (the server is mid-step,
  the device has run the triage, gather and project calls and sits idle);
- the TCP relay (`tests/support/tcp_relay.py`) between device and server swallows what the
  device sends, so the device runs a whole batch and stores its results, but no
  `tool_result` reaches the server before the kill;
- or the device is simply not connected, so the run parks on it.
"""

import asyncio
import contextlib
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from device import LocalDevice
from harness.fake_openai import PROCESSING, TRIAGE, FakeOpenAI, Hold
from harness.processes import DeviceProcess, ServerProcess, clean_env
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import until
from tests.test_kill_resume import EXPECTED_ROWS

pytestmark = pytest.mark.slow

USER = "alice"
DEVICE = "laptop"
DEADLINE = 120.0  # seconds any single wait may take before the test fails
FINAL = ("success", "partial", "error", "cancelled")
EXECUTION = re.compile(r"^(ran|replayed) (\w+) \((\S+)\): ", re.MULTILINE)
CONNECTED = "connected to "

T = TypeVar("T")


# ── Fixtures ──────────────────────────────────────────────────────────────────


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The server's database: a SQLite file, or a fresh database on the real Postgres."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "server.db")


class Stack:
    """Everything one test starts: the fake model, the server, the relay, the device.

    `close()` stops all of it; `logs()` is every server and device log, for failures.
    """

    deadline = DEADLINE

    def __init__(self, tmp: Path, workspace: Path, database_url: str) -> None:
        self.tmp = tmp
        self.workspace = workspace
        self.database_url = database_url
        self.entities = tmp / "entities.db"
        self.fake: FakeOpenAI | None = None
        self.server: ServerProcess | None = None
        self.relay: TcpRelay | None = None
        self.device: DeviceProcess | None = None
        self.key = ""
        self.token = ""

    # starting

    def start_server(self, *, fake_model: bool = False) -> ServerProcess:
        """The server (offline extractor, or the fake OpenAI server as its model)."""
        env = clean_env()
        if fake_model:
            self.fake = FakeOpenAI().start()
            env = clean_env(OPENAI_BASE_URL=self.fake.base_url, OPENAI_API_KEY="test")
        self.server = ServerProcess(database_url=self.database_url, workdir=self.tmp, env=env)
        self.server.start()
        self.key = self.server.api_key(USER)
        self.token = self.server.device_token(USER, DEVICE)
        return self.server

    def start_relay(self) -> TcpRelay:
        assert self.server is not None
        self.relay = TcpRelay(self.server.port).start()
        return self.relay

    def start_device(self) -> DeviceProcess:
        """The device (through the relay when there is one); a restart keeps its database."""
        assert self.server is not None
        if self.device is None:
            url = self.relay.url if self.relay is not None else self.server.url
            self.device = DeviceProcess(
                server=url,
                token=self.token,
                root=self.workspace,
                db=self.entities,
                workdir=self.tmp,
            )
        return self.device.start()

    def client(self) -> LangGraphClient:
        """A new SDK client (a new connection pool: the server may have been restarted)."""
        assert self.server is not None
        return get_client(url=self.server.url, api_key=self.key)

    def close(self) -> None:
        for stop in (
            self.device.stop if self.device else None,
            self.server.stop if self.server else None,
            self.relay.stop if self.relay else None,
            self.fake.stop if self.fake else None,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()

    # reading

    def logs(self) -> str:
        parts = []
        for pattern in ("server-*.log", "device-*.log"):
            for path in sorted(self.tmp.glob(pattern)):
                parts.append(f"──── {path.name} ────\n{path.read_text(errors='replace')[-20000:]}")
        return "\n".join(parts)

    def device_logs(self) -> list[str]:
        return [p.read_text(errors="replace") for p in sorted(self.tmp.glob("device-*.log"))]

    def executed(self) -> dict[str, str]:
        """Call id -> tool name of every call the device ran (its `call_results` table)."""
        if not self.entities.exists():
            return {}
        uri = f"file:{self.entities}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            try:
                return dict(db.execute("SELECT id, name FROM call_results").fetchall())
            except sqlite3.OperationalError:  # the device has not created its tables yet
                return {}

    def check_alive(self) -> None:
        for name, process in (("server", self.server), ("device", self.device)):
            popen = process.process if process is not None else None
            if popen is not None and popen.returncode is None and popen.poll() is not None:
                raise AssertionError(f"the {name} exited ({popen.returncode}):\n{self.logs()}")


@pytest.fixture
def stack(tmp_path: Path, workspace: Path, database_url: str) -> Iterator[Stack]:
    with contextlib.closing(Stack(tmp_path, workspace, database_url)) as stack:
        yield stack


# ── Waiting ───────────────────────────────────────────────────────────────────


async def arrived(stack: Stack, hold: Hold, what: str) -> None:
    await until(stack, what, hold.arrived.is_set)


async def bounded(stack: Stack, what: str, work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, DEADLINE)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}:\n{stack.logs()}") from None


async def devices_connected(stack: Stack, times: int) -> str:
    """Wait until the current device log says `connected` `times` times."""
    assert stack.device is not None
    device = stack.device
    return await until(
        stack, f"device connection #{times}", lambda: device.log().count(CONNECTED) >= times
    )


# ── The job ───────────────────────────────────────────────────────────────────


async def start_job(stack: Stack, client: LangGraphClient) -> tuple[str, str]:
    """Assistant, thread and a background run of the local agent; (thread id, run id)."""
    assistant = await client.assistants.create(
        graph_id="local_agent",
        context={"directory_paths": [str(stack.workspace)], "device_id": DEVICE},
    )
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], assistant["assistant_id"], input={})
    assert run["status"] == "pending", run
    return thread["thread_id"], run["run_id"]


def pending_calls(thread: dict[str, Any]) -> list[dict[str, Any]]:
    """The device calls of a thread's pending interrupts."""
    return [
        call
        for interrupts in (thread.get("interrupts") or {}).values()
        for interrupt in interrupts
        if isinstance(interrupt.get("value"), dict)
        and interrupt["value"].get("type") == "device_calls"
        for call in interrupt["value"]["calls"]
    ]


async def parked_on(
    stack: Stack, client: LangGraphClient, thread_id: str, run_id: str, tool_prefix: str
) -> list[dict[str, Any]]:
    """Wait until the run is parked (`interrupted`) on device calls named `tool_prefix*`;
    those calls."""

    async def parked() -> list[dict[str, Any]] | None:
        run = await client.runs.get(thread_id, run_id)
        assert run["status"] not in FINAL, f"{run}\n{stack.logs()}"
        thread = await client.threads.get(thread_id)
        calls = pending_calls(thread)
        if (
            run["status"] == "interrupted"
            and thread["status"] == "interrupted"
            and calls
            and all(c["name"].startswith(tool_prefix) for c in calls)
        ):
            return calls
        return None

    return await until(stack, f"the run parked on {tool_prefix}* calls", parked)


def hold_second_processing_call(fake: FakeOpenAI) -> tuple[Hold, Hold]:
    """Holds on the first two processing model calls (the first is released at once by the
    test, so the second is the one that stops the run: the project calls have run)."""
    return fake.hold(when=PROCESSING), fake.hold(when=PROCESSING)


async def through_first_hold(stack: Stack, first: Hold, second: Hold) -> dict[str, str]:
    """Let the first processing call through, wait on the second; the calls run by then."""
    await arrived(stack, first, "the first processing model call")
    first.release()
    await arrived(stack, second, "the second processing model call")
    executed = stack.executed()
    assert "create_project" in executed.values(), f"{executed}\n{stack.logs()}"
    return executed


async def all_executed(stack: Stack, calls: list[dict[str, Any]]) -> None:
    ids = {c["id"] for c in calls}
    await until(stack, "the device to run the batch", lambda: ids <= set(stack.executed()))


async def finish(
    stack: Stack, client: LangGraphClient, thread_id: str, run_id: str
) -> dict[str, Any]:
    """Join the run and check everything the job must have left behind; the final values."""
    values = await bounded(stack, "runs.join", client.runs.join(thread_id, run_id))
    context = f"{values}\n{stack.logs()}"
    assert isinstance(values, dict) and "__error__" not in values, context
    report = values["report"]
    assert report["status"] == "success", context
    assert report["errors"] == [], context
    assert report["created"] == EXPECTED_ROWS, context
    # Every read reached the run too (a lost result would count as a file not read).
    assert report["files_processed"] == report["files_scanned"] > 0, context
    assert all(g["refused_calls"] == 0 for g in report["outcomes"]), context

    run = await client.runs.get(thread_id, run_id)
    assert run["run_id"] == run_id
    assert run["status"] == "success", f"{run}\n{stack.logs()}"
    assert run["error"] is None, run
    assert run["counts"] == {
        "created": report["created"],
        "updated": report["updated"],
        "files_processed": report["files_processed"],
    }, run
    runs = await client.runs.list(thread_id)
    assert [r["run_id"] for r in runs] == [run_id], f"one run record per job: {runs}"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "idle", thread

    check_device_side(stack, values)
    return values


def check_device_side(stack: Stack, values: dict[str, Any]) -> None:
    """Every entity once, every call run once, every result the run needed delivered."""
    local = LocalDevice([stack.workspace], stack.entities)
    try:
        counts = local.count_rows()
        tables = {t: local.rows(t) for t in EXPECTED_ROWS}
        calls = local.rows("call_results")
    finally:
        local.close()
    context = stack.logs()
    assert counts == EXPECTED_ROWS, f"{counts}\n{context}"
    assert counts == values["report"]["created"], "the report counts what the device holds"
    for table, rows in tables.items():
        titles = [r.get("title") or r.get("name") for r in rows]
        duplicates = [t for t, n in Counter(titles).items() if n > 1]
        assert not duplicates, f"{table} created twice: {duplicates}\n{context}"

    # One run key: the job was never restarted from scratch under new call ids.
    run_key = values["run_key"]
    assert calls and all(c["id"].startswith(f"{run_key}/") for c in calls), calls
    assert all(c["ok"] for c in calls), [c for c in calls if not c["ok"]]
    creates = [c for c in calls if c["name"].startswith("create_")]
    assert len(creates) == sum(EXPECTED_ROWS.values()), creates

    # Every call ran exactly once over all device processes, and each one that ran is
    # stored with its result (a repeat was answered from `call_results`, never re-run).
    ran = Counter(
        call_id
        for log in stack.device_logs()
        for how, _, call_id in EXECUTION.findall(log)
        if how == "ran"
    )
    twice = [c for c, n in ran.items() if n > 1]
    assert not twice, f"device calls ran twice: {twice}\n{context}"
    assert set(ran) == {c["id"] for c in calls}, context


def replayed(log: str) -> set[str]:
    return {call_id for how, _, call_id in EXECUTION.findall(log) if how == "replayed"}


# ── 1. A whole run through real processes ────────────────────────────────────


async def test_local_agent_run_through_serve_and_device(stack: Stack) -> None:
    stack.start_server()
    stack.start_device()
    await devices_connected(stack, 1)
    client = stack.client()

    thread_id, run_id = await start_job(stack, client)

    await finish(stack, client, thread_id, run_id)


# ── 2. The device killed mid-run and restarted ───────────────────────────────


@pytest.mark.parametrize("kill_point", ["between-batches", "results-in-flight"])
async def test_device_killed_mid_run_and_restarted(stack: Stack, kill_point: str) -> None:
    stack.start_server(fake_model=True)
    assert stack.fake is not None
    first, second = hold_second_processing_call(stack.fake)
    if kill_point == "results-in-flight":
        stack.start_relay()
    client = stack.client()

    # No device yet: the run parks on its first batch, and the run and thread say so.
    thread_id, run_id = await start_job(stack, client)
    triage = await parked_on(stack, client, thread_id, run_id, "")
    assert {c["name"] for c in triage} >= {"scan_directory"}, triage
    assert stack.executed() == {}

    device = stack.start_device()
    before = await through_first_hold(stack, first, second)

    if kill_point == "between-batches":
        # The device has run the calls so far and answered them; it dies while idle.
        device.kill()
        second.release()
        batch = await parked_on(stack, client, thread_id, run_id, "create_")
        assert not {c["id"] for c in batch} & set(stack.executed()), "nobody ran these yet"
        assert stack.executed() == before
    else:
        # The device runs the whole next batch and stores its results, but none reaches
        # the server: it dies with every `tool_result` in flight.
        assert stack.relay is not None and stack.relay.hold_upstream() == 1
        second.release()
        batch = await parked_on(stack, client, thread_id, run_id, "create_")
        await all_executed(stack, batch)
        device.kill()
        assert stack.relay.held_bytes() > 0
        run = await client.runs.get(thread_id, run_id)
        assert run["status"] == "interrupted", "the server heard none of the results"

    device.start()
    await finish(stack, client, thread_id, run_id)

    restarted = device.log()
    assert f"{len(batch)} pending" in restarted, restarted
    if kill_point == "results-in-flight":
        assert replayed(restarted) == {c["id"] for c in batch}, stack.logs()
    else:
        assert replayed(restarted) == set(), stack.logs()


# ── 3. The server killed mid-run and restarted ───────────────────────────────


@pytest.mark.parametrize("kill_point", ["mid-model-step", "results-in-flight"])
async def test_server_killed_mid_run_and_restarted(stack: Stack, kill_point: str) -> None:
    server = stack.start_server(fake_model=True)
    assert stack.fake is not None
    first, second = hold_second_processing_call(stack.fake)
    if kill_point == "results-in-flight":
        stack.start_relay()
    device = stack.start_device()
    await devices_connected(stack, 1)
    client = stack.client()
    thread_id, run_id = await start_job(stack, client)
    before = await through_first_hold(stack, first, second)

    if kill_point == "mid-model-step":
        # The server is inside a model call, between two device batches.
        run = await client.runs.get(thread_id, run_id)
        assert run["status"] == "running", run
        calls_at_kill = stack.fake.calls
        server.kill()
        second.release()  # answered into a dead socket
    else:
        # The device runs the next batch; every result is lost with the server.
        assert stack.relay is not None and stack.relay.hold_upstream() == 1
        second.release()
        batch = await parked_on(stack, client, thread_id, run_id, "create_")
        await all_executed(stack, batch)
        server.kill()
        assert stack.relay.held_bytes() > 0

    server.start()  # same port, same database
    client = stack.client()
    run = await client.runs.get(thread_id, run_id)
    assert run["run_id"] == run_id and run["status"] not in FINAL, run
    await devices_connected(stack, 2)  # the reference device's backoff, on its own

    await finish(stack, client, thread_id, run_id)

    assert device.starts == 1, "the device was never restarted"
    assert set(before) <= set(stack.executed())
    if kill_point == "mid-model-step":
        assert stack.fake.calls > calls_at_kill, "the killed model step ran again"
        assert replayed(device.log()) == set(), stack.logs()
    else:
        assert replayed(device.log()) == {c["id"] for c in batch}, stack.logs()


async def test_server_killed_while_parked_on_an_offline_device(stack: Stack) -> None:
    server = stack.start_server()
    client = stack.client()
    thread_id, run_id = await start_job(stack, client)
    triage = await parked_on(stack, client, thread_id, run_id, "")

    server.kill()
    server.start()
    client = stack.client()
    run = await client.runs.get(thread_id, run_id)
    assert run["status"] == "interrupted", f"still parked after the restart: {run}"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "interrupted", thread
    assert pending_calls(thread) == triage

    device = stack.start_device()
    await finish(stack, client, thread_id, run_id)
    assert f"{len(triage)} pending" in device.log(), device.log()


# ── 4. One run record from create to success ─────────────────────────────────


@pytest.mark.parametrize("how", ["create-join", "wait"])
async def test_one_run_record_spans_the_whole_job(stack: Stack, how: str) -> None:
    """Through device round trips (the device offline at first), the job is one run id:
    `runs.list` never shows a second record, and that record goes from `pending` through
    `interrupted` to `success`; `runs.wait` answers only at the end."""
    stack.start_server()
    client = stack.client()
    assistant = await client.assistants.create(
        graph_id="local_agent",
        context={"directory_paths": [str(stack.workspace)], "device_id": DEVICE},
    )
    thread_id = (await client.threads.create())["thread_id"]
    waiting: asyncio.Task[Any] | None = None
    try:
        if how == "wait":
            waiting = asyncio.create_task(
                client.runs.wait(thread_id, assistant["assistant_id"], input={})
            )
            listed = await until(stack, "the run record", lambda: client.runs.list(thread_id))
            run_id = listed[0]["run_id"]
        else:
            run = await client.runs.create(thread_id, assistant["assistant_id"], input={})
            run_id = run["run_id"]
        first = await client.runs.get(thread_id, run_id)
        seen: list[str] = []
        started: list[str] = []

        async def one_record() -> str | None:
            """The one run of the thread (asserted); its status once final."""
            runs = await client.runs.list(thread_id)
            assert [r["run_id"] for r in runs] == [run_id], f"{runs}\n{stack.logs()}"
            record = runs[0]
            assert record["created_at"] == first["created_at"], record
            if record["started_at"] is not None:
                started.append(record["started_at"])
            if not seen or seen[-1] != record["status"]:
                seen.append(record["status"])
            return record["status"] if record["status"] in FINAL else None

        async def parked() -> bool:
            await one_record()
            return seen[-1] == "interrupted"

        await until(stack, "the run parked on the offline device", parked)
        if waiting is not None:
            assert not waiting.done(), "runs.wait answered while the run was parked"
        stack.start_device()
        status = await until(stack, "the end of the run", one_record)

        assert status == "success", f"{seen}\n{stack.logs()}"
        assert "interrupted" in seen and seen[-1] == "success", seen
        assert set(seen) <= {"pending", "running", "interrupted", "success"}, seen
        assert len(set(started)) == 1, f"one start time for the whole job: {set(started)}"
        if waiting is not None:
            values = await bounded(stack, "runs.wait", waiting)
            assert values["report"]["status"] == "success", values
        await finish(stack, client, thread_id, run_id)
    finally:
        if waiting is not None and not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)


# ── 5. A chunked run: the server killed between chunks' device batches ───────

#: Files and TODO lines of the chunked tree; at `CHUNKED_BUDGET` tokens it needs many chunks.
NOTES, TODOS = 16, 10
CHUNKED_BUDGET = 8_000


def chunked_tree(root: Path) -> set[str]:
    """A client folder of notes with TODO lines of their own; the task titles they make."""
    notes = root / "Acme" / "notes"
    notes.mkdir(parents=True)
    prose = "We went over the plan again and agreed to keep the scope as it is. " * 6
    expected = set()
    for i in range(NOTES):
        todos = [f"Acme follow-up {i}-{j}" for j in range(TODOS)]
        expected |= set(todos)
        body = [f"# Meeting {i}", prose, *(f"TODO: {t}" for t in todos)]
        (notes / f"meeting-{i:02}.md").write_text("\n".join(body) + "\n")
    return expected


async def test_server_killed_mid_chunked_run_and_restarted(
    tmp_path: Path, database_url: str
) -> None:
    """Chunks run side by side, each its own read, lookup and writes, their calls parked
    together. The server is killed inside the first model call made after creates ran (the
    step that consumes their results); restarted, it runs that step again and finishes the
    run: every file processed, every TODO a task exactly once, no device call run twice."""
    root = tmp_path / "tree"
    expected = chunked_tree(root)
    with contextlib.closing(Stack(tmp_path, root, database_url)) as stack:
        server = stack.start_server(fake_model=True)
        assert stack.fake is not None
        device = stack.start_device()
        await devices_connected(stack, 1)
        client = stack.client()
        assistant = await client.assistants.create(
            graph_id="local_agent",
            context={
                "directory_paths": [str(root)],
                "device_id": DEVICE,
                "max_prompt_tokens": CHUNKED_BUDGET,
            },
        )
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(thread_id, assistant["assistant_id"], input={})

        def creates() -> list[str]:
            return [c for c, name in stack.executed().items() if name == "create_task"]

        # Hold processing calls one after another until one arrives after creates ran.
        while True:
            hold = stack.fake.hold(when=PROCESSING)
            await arrived(stack, hold, "a processing model call")
            if creates():
                break
            hold.release()
        created_before = creates()
        run_now = await client.runs.get(thread_id, run["run_id"])
        assert run_now["status"] == "running", run_now  # inside the step after the creates
        server.kill()
        hold.release()  # answered into a dead socket

        server.start()
        client = stack.client()
        values = await bounded(stack, "runs.join", client.runs.join(thread_id, run["run_id"]))
        report = values["report"]
        context = f"{report}\n{stack.logs()}"
        assert report["status"] == "success", context
        assert report["chunks"] > 3, context
        assert report["files_processed"] == report["files_scanned"] == NOTES, context
        assert report["failed_files"] == [], context
        assert device.starts == 1

        local = LocalDevice([root], stack.entities)
        try:
            tasks = Counter(str(r["title"]) for r in local.rows("tasks"))
            projects = Counter(str(r["name"]) for r in local.rows("projects"))
        finally:
            local.close()
        assert set(tasks) == expected and max(tasks.values()) == 1, tasks
        assert projects == Counter({"Acme": 1}), projects
        assert report["created"]["tasks"] == len(expected), context
        ran = Counter(
            call_id
            for log in stack.device_logs()
            for how, _, call_id in EXECUTION.findall(log)
            if how == "ran"
        )
        assert ran and max(ran.values()) == 1, f"a device call ran twice\n{context}"
        assert set(created_before) <= set(ran)


# ── 6. A file that could not be read is retried by the assistant's next run ──


async def test_a_file_that_failed_is_retried_by_the_next_run(stack: Stack) -> None:
    """The file is deleted between the scan and its read, so the first run cannot process
    it; put back with its old modification time, it is unchanged for the next run's scan,
    and that run processes it all the same (the assistant's retry ledger), and only it."""
    stack.start_server(fake_model=True)
    assert stack.fake is not None
    stack.start_device()
    await devices_connected(stack, 1)
    client = stack.client()
    assistant = await client.assistants.create(
        graph_id="local_agent",
        context={"directory_paths": [str(stack.workspace)], "device_id": DEVICE},
    )
    thread_id = (await client.threads.create())["thread_id"]
    victim = sorted(p for p in stack.workspace.rglob("*.md"))[0]
    kept, stat = victim.read_bytes(), victim.stat()

    hold = stack.fake.hold(when=TRIAGE)
    first = await client.runs.create(thread_id, assistant["assistant_id"], input={})
    await arrived(stack, hold, "the triage model call (the scan is done)")
    victim.unlink()
    hold.release()
    values = await bounded(stack, "runs.join", client.runs.join(thread_id, first["run_id"]))
    report = values["report"]
    assert report["status"] == "partial", f"{report}\n{stack.logs()}"
    assert [f["path"] for f in report["failed_files"]] == [str(victim)], report

    victim.write_bytes(kept)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = await client.runs.create(thread_id, assistant["assistant_id"], input={})
    values = await bounded(stack, "runs.join", client.runs.join(thread_id, second["run_id"]))
    report = values["report"]
    assert report["status"] == "success", f"{report}\n{stack.logs()}"
    assert report["retried"] == [str(victim)], report
    assert report["files_processed"] == 1 and report["failed_files"] == [], report

    third = await client.runs.create(thread_id, assistant["assistant_id"], input={})
    values = await bounded(stack, "runs.join", client.runs.join(thread_id, third["run_id"]))
    assert values["report"]["files_processed"] == 0, "retried once, then done"
    local = LocalDevice([stack.workspace], stack.entities)
    try:
        assert local.count_rows() == EXPECTED_ROWS, "every entity of the folder, once"
    finally:
        local.close()
