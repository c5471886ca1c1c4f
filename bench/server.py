"""The server with its device: round trips, throughput and parked runs, end to end.

The server runs in this process and event loop (uvloop, as `relaygraph serve` gets from
uvicorn when it is installed): `create_app(Settings(...), model=...)` under a uvicorn `Server`
on a free loopback port. The device (bench.device) is a minimal WebSocket client speaking
protocol v1 that answers every `tool_call` with `{"ok": true, "result": []}`: in this loop for
(a) and (c), in a process of its own for (b), as a real device is.

The graph is `agentic_loop` with a scripted model (`DeviceLoopModel`): it plans one step,
and in that step it calls the cheap device tool `list_tasks` `rounds` times (the number is in
the task text), then ends the step with a `StepVerdict`. So inside the step every model turn
is exactly one device round trip: the device's answer resumes `execute_tools`, `call_model`
asks for the next `list_tasks`, and `execute_tools` interrupts again; the run parks, its call
goes to the outbox and out over the socket.

(a) Round trip: the time from the device sending a `tool_result` to it receiving the next
    `tool_call`, against two bare LangGraph interrupt/resume loops on a checkpointer of the
    same kind and the same durability, in the same process and loop, all round trips
    interleaved: the same graph and stand-in model resumed in process with
    `Command(resume=...)` (what the server adds: the target applies to this ratio), and
    bench.round_trip's minimal two-node loop (what the graph adds on top). SQLite and
    Postgres; every repeat on fresh databases and a fresh server.
(b) Throughput: 50 concurrent runs of 20 round trips each on Postgres, the device answering
    at once; round trips per second, for `savers=1` and `savers=8`, each next to a reference:
    the bare loop at the same concurrency (what LangGraph and the checkpointer alone reach
    on the machine as it is at that moment).
(c) Parked runs: 5,000 runs that each park at their first device call while the device is
    offline; memory growth and asyncio tasks with all parked, then the time to drain them
    once the device connects (each run needs 1 round trip: `--parked-rounds`).

    .venv/bin/python -m bench.server [--only a|b|c ...] [--write-docs] [--profile]

Postgres: `DATABASE_URL` if set, else a throwaway cluster (harness.postgres) that is
stopped at the end. `--write-docs` records the tables in docs/benchmarks.md (section
"Server"). `--profile` then prints, for (a), the database round trips and messages built per
round trip on each side (deterministic counts) and a cProfile of the full stack's round
trips, and for (b) a cProfile of one run.
"""

import argparse
import asyncio
import contextlib
import cProfile
import gc
import inspect
import json
import logging
import os
import pstats
import re
import resource
import shlex
import statistics
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Durability

from bench.device import DEVICE, BenchDevice, DeviceReport
from bench.round_trip import (
    TOOL,
    Driver,
    Loop,
    Run,
    baseline_loop,
    machine,
    storage,
)
from checkpoints.factory import open_checkpointer, open_checkpointers
from graphs.agentic_loop import build as build_agentic_loop
from harness.processes import free_port
from llm.offline import ToolBindingChatModel
from nodes.context import AgentContext
from nodes.state import Plan, StepVerdict
from server.api.runs import RunCreate, create_run
from server.app import create_app
from server.services import Services
from server.settings import Settings
from server.storage import accounts, assistants

Backend = Literal["sqlite", "postgres"]
#: (a)'s three sides: the minimal loop, the same graph without the server, the full stack.
Side = Literal["bare loop", "same graph", "server"]
SIDES: tuple[Side, ...] = ("bare loop", "same graph", "server")
Part = Literal["a", "b", "c"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")
PARTS: tuple[Part, ...] = ("a", "b", "c")

#: The device's report is one JSON line with a timestamp per answer.
REPORT_LINE_LIMIT = 64 * 1024 * 1024
TARGET_RATIO = 1.5  # (a) full stack / bare interrupt-resume, per round trip
TARGET_RATE = 200.0  # (b) round trips per second, 50 runs at once, Postgres
TARGET_PARKED_MB = 100.0  # (c) RSS growth with every run parked
DURABILITY: Durability = Settings().durability  # the server's default, and the baseline's

USER = "bench-user"
TASK = "Benchmark the device bridge: rounds={rounds}"
STEP = "List the tasks on the device, once per round, then report."
ROUNDS = re.compile(r"rounds=(\d+)")
MAX_STEP_TURNS = 10_000  # the step's turn budget must never end a benchmark run
FINAL = ("success", "partial", "error", "cancelled")
POLL_SECONDS = 0.25
PARK_BATCH = 100  # (c) runs created at a time
PROGRESS_SECONDS = 15.0

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DOCS_TITLE = "# Benchmarks"
SECTION = "## Server"
SUBSECTIONS: dict[Part, str] = {
    "a": "### (a) Device round trip through the server",
    "b": "### (b) Throughput: 50 concurrent runs",
    "c": "### (c) 5,000 parked runs",
}

log = logging.getLogger("bench.server")


def begin_marker(part: Part) -> str:
    return f"<!-- bench.server {part}: begin (generated by --write-docs; edit outside) -->"


def end_marker(part: Part) -> str:
    return f"<!-- bench.server {part}: end -->"


# ── The scripted model ──────────────────────────────────────────────────────────


class DeviceLoopModel(ToolBindingChatModel):
    """A stateless scripted model for the agentic loop, shared by every run of a server.

    Asked for a plan (the `Plan` tool is bound), it plans one step. In the step, it calls
    `list_tasks` until the conversation holds `rounds` tool results (`rounds=N` in the task
    text), then calls `StepVerdict` with success. Each answer depends only on the messages.
    """

    @property
    def _llm_type(self) -> str:
        return "bench-device-loop"

    def respond(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        if Plan.__name__ in tool_names:
            call = ToolCall(name=Plan.__name__, args={"steps": [STEP]}, id="plan")
        else:
            done = sum(isinstance(m, ToolMessage) for m in messages)
            if done < rounds_of(messages):
                call = ToolCall(name=TOOL, args={}, id=f"call{done}")
            else:
                verdict = {"success": True, "result": f"listed the tasks {done} times"}
                call = ToolCall(name=StepVerdict.__name__, args=verdict, id="verdict")
        return AIMessage(content="", tool_calls=[call])


def rounds_of(messages: Sequence[BaseMessage]) -> int:
    """The round trips the task asks for (`rounds=N` in the step request)."""
    for message in messages:
        if isinstance(message, HumanMessage) and (match := ROUNDS.search(message.text)):
            return int(match.group(1))
    return 0


def run_body(assistant_id: str, rounds: int) -> dict[str, Any]:
    """The body of `POST /threads/{id}/runs` for one run of `rounds` device round trips."""
    return {
        "assistant_id": assistant_id,
        "input": {"task": TASK.format(rounds=rounds), "max_steps": 1},
        "if_not_exists": "create",
    }


# ── The device in a process of its own ──────────────────────────────────────────


class DeviceProcess:
    """`BenchDevice` in a process of its own (`python -m bench.device`), answering every call
    at once: what (b) measures against, as a real device is not in the server's process."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "DeviceProcess":
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.device",
            self.url,
            self.token,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
            limit=REPORT_LINE_LIMIT,
        )
        await self._expect("ready", timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def waiting_for(self, count: int) -> None:
        """Tell the device to count afresh until `count` runs have completed."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(f"wait {count}\n".encode())
        await self._process.stdin.drain()
        await self._expect("waiting", timeout=30)

    async def report(self, timeout: float) -> DeviceReport:
        """What the device saw, once the runs it waits for have completed."""
        return DeviceReport(**json.loads(await self._line(timeout)))

    async def _expect(self, word: str, timeout: float) -> None:
        line = await self._line(timeout)
        if line != word:
            raise RuntimeError(f"the device process said {line!r}, not {word!r}")

    async def _line(self, timeout: float) -> str:
        assert self._process is not None and self._process.stdout is not None
        raw = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"the device process ended (exit code {await self._process.wait()})")
        return raw.decode().strip()


# ── The server ──────────────────────────────────────────────────────────────────


@dataclass
class BenchServer:
    """A running in-process server, its API client, and what a device needs to connect."""

    settings: Settings
    services: Services
    client: httpx.AsyncClient
    device_url: str
    device_token: str
    assistant_id: str

    def device(self, *, answer_at_once: bool, reconnect: bool = False) -> BenchDevice:
        return BenchDevice(
            self.device_url, self.device_token, answer_at_once=answer_at_once, reconnect=reconnect
        )

    async def start_run(self, rounds: int) -> str:
        """Create a run through the HTTP API (it is queued at once); its id."""
        thread_id = str(uuid.uuid4())
        response = await self.client.post(
            f"/threads/{thread_id}/runs", json=run_body(self.assistant_id, rounds)
        )
        response.raise_for_status()
        return str(response.json()["run_id"])

    async def start_run_directly(self, rounds: int) -> str:
        """Create a run with the API's own function, without HTTP, and queue it."""
        body = RunCreate.model_validate(run_body(self.assistant_id, rounds))
        run = await create_run(self.services, USER, str(uuid.uuid4()), body)
        self.services.runs.enqueue(run.run_id)
        return run.run_id

    async def idle(self) -> None:
        """Until no run executes or waits in the queue (a parked run's worker is done)."""
        runs = self.services.runs
        while runs.executing or not runs.queue.empty():
            await asyncio.sleep(0.0005)

    async def wait_for(
        self, statuses: str | Sequence[str], count: int, label: str, *, timeout: float
    ) -> None:
        """Until `count` runs have one of `statuses` (polled in the database)."""
        wanted = (statuses,) if isinstance(statuses, str) else tuple(statuses)
        deadline = time.monotonic() + timeout
        shown = time.monotonic()
        while (now := self._count(await self.statuses(), wanted)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {now} of {count} runs {label}")
            if time.monotonic() - shown > PROGRESS_SECONDS:
                print(f"  (c) {label}: {now:,} of {count:,}", file=sys.stderr)
                shown = time.monotonic()
            await asyncio.sleep(POLL_SECONDS)

    @staticmethod
    def _count(statuses: Counter[str], wanted: Sequence[str]) -> int:
        return sum(statuses[status] for status in wanted)

    async def errors(self) -> Counter[str]:
        """The error messages of failed runs, counted."""
        rows = await self.services.db.fetch(
            "SELECT error, count(*) AS n FROM runs WHERE status = 'error' GROUP BY error"
        )
        return Counter({str(r["error"]): int(r["n"]) for r in rows})

    async def statuses(self) -> Counter[str]:
        rows = await self.services.db.fetch(
            "SELECT status, count(*) AS n FROM runs GROUP BY status"
        )
        return Counter({str(r["status"]): int(r["n"]) for r in rows})


@asynccontextmanager
async def running_server(
    url: str, *, workers: int = 8, savers: int = 8, durability: Durability = DURABILITY
) -> AsyncIterator[BenchServer]:
    """`create_app` under uvicorn on a free port, a user with an API key, a device with a
    token, and an `agentic_loop` assistant bound to that device."""
    port = free_port()
    settings = Settings(
        database_url=url, port=port, workers=workers, savers=savers, durability=durability
    )
    app = create_app(settings, model=DeviceLoopModel())
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(), name="bench-uvicorn")
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        services: Services = app.state.services
        key = await accounts.create_api_key(services.db, user_id=USER)
        token = await accounts.add_device(services.db, user_id=USER, device_id=DEVICE)
        assistant, _ = await assistants.create(
            services.db,
            user_id=USER,
            graph_id="agentic_loop",
            name="bench",
            context={"device_id": DEVICE, "max_step_turns": MAX_STEP_TURNS},
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"X-Api-Key": key}, timeout=60, trust_env=False
        ) as client:
            yield BenchServer(
                settings=settings,
                services=services,
                client=client,
                device_url=f"ws://127.0.0.1:{port}/devices/connect",
                device_token=token,
                assistant_id=assistant.assistant_id,
            )
    finally:
        server.should_exit = True
        await serving


# ── (a) One round trip, full stack against bare LangGraph ──────────────────────────


class FullStackDriver:
    """One run on the server and its device, driven one device answer at a time."""

    def __init__(self, server: BenchServer, device: BenchDevice) -> None:
        self.server, self.device = server, device
        self.pending: dict[str, Any] = {}
        self.timings: list[float] = []

    async def start(self, rounds: int, warmup: int) -> None:
        """Create a run of `rounds` round trips, wait for its first call, answer `warmup`."""
        await self.server.start_run(rounds)
        _, self.pending = await self.device.next_call()
        await self.server.idle()
        for _ in range(warmup):
            await self._answer()

    async def round_trip(self) -> None:
        """Answer the pending call; time until the next `tool_call` frame arrives."""
        self.timings.append(await self._answer())

    async def _answer(self) -> float:
        began = time.perf_counter()
        await self.device.answer(self.pending["id"])
        arrived, self.pending = await self.device.next_call()
        # The worker releases the thread's lock after the push; let it finish before the
        # next timed round trip (of either side) starts.
        await self.server.idle()
        return arrived - began


async def opening_messages() -> list[BaseMessage]:
    """Fresh copies of the agentic loop's step conversation at its first device call
    (system prompt + step request): the baseline is seeded with them."""
    graph = build_agentic_loop(DeviceLoopModel()).copy(update={"checkpointer": InMemorySaver()})
    config: RunnableConfig = {"configurable": {"thread_id": "opening"}}
    context = AgentContext(max_step_turns=MAX_STEP_TURNS)
    await graph.ainvoke({"task": TASK.format(rounds=1), "max_steps": 1}, config, context=context)
    state = await graph.aget_state(config)
    return [type(m)(content=m.content) for m in state.values["messages"][:2]]


@dataclass
class RoundTrips:
    """(a) on one backend: the runs of each side and this process's CPU per round trip."""

    backend: Backend
    runs: dict[Side, list[Run]] = field(default_factory=lambda: {s: [] for s in SIDES})
    cpu_ms: dict[Side, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def median_ms(self, side: Side) -> float:
        """The median over runs of each run's median round trip."""
        return statistics.median(run.median_ms for run in self.runs[side])

    def mean_ms(self, side: Side) -> float:
        return statistics.median(run.mean_ms for run in self.runs[side])

    def median_cpu_ms(self, side: Side) -> float:
        return statistics.median(self.cpu_ms[side])

    def ratio(self, baseline: Side = "same graph") -> float:
        """The server's round trip / the baseline's, of the medians."""
        return self.median_ms("server") / self.median_ms(baseline)


def same_graph_loop(saver: Any, rounds: int) -> Loop:
    """The agentic loop with the same stand-in model, driven in process: what LangGraph
    alone spends on the server's graph."""
    graph = build_agentic_loop(DeviceLoopModel()).copy(update={"checkpointer": saver})
    return Loop(
        graph,
        {"task": TASK.format(rounds=rounds), "max_steps": 1},
        AgentContext(max_step_turns=MAX_STEP_TURNS),
        setup_resumes=0,
    )


async def round_trip_pair(
    backend: Backend,
    fresh_url: Callable[[str], str],
    opening: Sequence[BaseMessage],
    *,
    rounds: int,
    warmup: int,
    profile: cProfile.Profile | None = None,
    counter: "Counts | None" = None,
    durability: Durability = DURABILITY,
) -> tuple[dict[Side, Run], dict[Side, float]]:
    """The three sides, each on a fresh database, their rounds interleaved (the order turns
    every round); (timings, CPU ms per round trip) by side. With `profile`, only the server
    runs, under the profiler; with `counter`, the database statements and messages of each
    side are counted."""
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            running_server(fresh_url(f"server-{backend}"), durability=durability)
        )
        device = await stack.enter_async_context(server.device(answer_at_once=False))
        full = FullStackDriver(server, device)
        await full.start(rounds=warmup + rounds + 1, warmup=warmup)
        drivers: dict[Side, Driver] = {}
        for side in ("bare loop", "same graph"):
            saver = await stack.enter_async_context(open_checkpointer(fresh_url(side)))
            loop = (
                baseline_loop(saver, opening)
                if side == "bare loop"
                else same_graph_loop(saver, warmup + rounds + 1)
            )
            drivers[side] = Driver(loop, durability)
            await drivers[side].start(warmup)
        gc.collect()
        cpu: dict[Side, float] = dict.fromkeys(SIDES, 0.0)
        for index in range(rounds):
            if profile is not None:
                profile.enable()
                await full.round_trip()
                profile.disable()
                continue
            turn = index % len(SIDES)
            for side in SIDES[turn:] + SIDES[:turn]:
                began = process_cpu_seconds()
                with counter.counting(side) if counter else contextlib.nullcontext():
                    await (full.round_trip() if side == "server" else drivers[side].round_trip())
                cpu[side] += process_cpu_seconds() - began
    timings: dict[Side, Run] = {side: Run(d.timings) for side, d in drivers.items()}
    timings["server"] = Run(full.timings)
    return timings, {side: cpu[side] * 1000 / rounds for side in SIDES}


class Counts:
    """Counts, per side, of database round trips by where they come from, and of messages
    built (each checkpoint load deserializes the whole conversation). Instrumentation for
    `--profile`: wraps psycopg, aiosqlite and `BaseMessage.__init__` while installed."""

    def __init__(self) -> None:
        self.side: Side | None = None
        self.counts: dict[Side, Counter[str]] = {side: Counter() for side in SIDES}
        self.rounds: dict[Side, int] = dict.fromkeys(SIDES, 0)

    @contextlib.contextmanager
    def counting(self, side: Side) -> Iterator[None]:
        self.side = side
        try:
            yield
        finally:
            self.side = None
            self.rounds[side] += 1

    def _note(self, kind: str) -> None:
        if self.side is not None:
            names = " ".join(f"{f.filename}:{f.name}" for f in traceback.extract_stack(limit=40))
            source = next((label for needle, label in SOURCES if needle in names), "other")
            self.counts[self.side][f"{kind}: {source}"] += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator["Counts"]:
        """Wrap the counted functions; restore them on exit."""
        import aiosqlite
        import psycopg

        targets: list[tuple[Any, str, str]] = [
            (psycopg.AsyncCursor, "execute", "Postgres statement"),
            (psycopg.AsyncCursor, "executemany", "Postgres statement"),
            (psycopg.AsyncTransaction, "__aenter__", "Postgres BEGIN + COMMIT"),
            (aiosqlite.Connection, "execute", "SQLite statement"),
            (aiosqlite.Connection, "executemany", "SQLite statement"),
            (aiosqlite.Connection, "commit", "SQLite commit"),
        ]
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
        for (owner, name, kind), (_, _, original) in zip(targets, originals, strict=True):
            setattr(owner, name, self._counted(original, kind))
        message_init = BaseMessage.__init__

        def init(message: BaseMessage, *args: Any, **kwargs: Any) -> None:
            if self.side is not None:
                self.counts[self.side]["messages built"] += 1
            message_init(message, *args, **kwargs)

        BaseMessage.__init__ = init  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            BaseMessage.__init__ = message_init  # type: ignore[method-assign]
            for owner, name, original in originals:
                setattr(owner, name, original)

    def _counted(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(original):

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self._note(kind)
                return await original(*args, **kwargs)

            return counted

        def counted_sync(*args: Any, **kwargs: Any) -> Any:  # aiosqlite's awaitable results
            self._note(kind)
            return original(*args, **kwargs)

        return counted_sync

    def table(self) -> str:
        keys = sorted({key for counts in self.counts.values() for key in counts})
        lines = [f"| per round trip | {' | '.join(SIDES)} |", "|---|--:|--:|--:|"]
        for key in keys:
            cells = [f"{self.counts[side][key] / max(1, self.rounds[side]):.1f}" for side in SIDES]
            lines.append(f"| {key} | {' | '.join(cells)} |")
        return "\n".join(lines)


#: Where a database call comes from, by the first file:function found on the stack.
SOURCES: tuple[tuple[str, str], ...] = (
    ("check_connection", "pool check on checkout"),
    ("server/locks.py", "thread lock"),
    ("checkpoint/postgres", "checkpointer"),
    ("checkpoint/sqlite", "checkpointer"),
    ("server/storage/", "storage"),
)


async def measure_round_trips(
    backend: Backend,
    fresh_url: Callable[[str], str],
    opening: Sequence[BaseMessage],
    args: argparse.Namespace,
) -> RoundTrips:
    """`--repeats` interleaved runs on fresh databases and a fresh server each."""
    result = RoundTrips(backend)
    for repeat in range(args.repeats):
        runs, cpu = await round_trip_pair(
            backend,
            fresh_url,
            opening,
            rounds=args.rounds,
            warmup=args.warmup,
            durability=args.durability,
        )
        for side, run in runs.items():
            result.runs[side].append(run)
            result.cpu_ms[side].append(cpu[side])
            print(
                f"  (a) {backend:8} {side:10} run {repeat + 1}/{args.repeats}: "
                f"median {run.median_ms:6.2f} ms, mean {run.mean_ms:6.2f} ms, "
                f"CPU {cpu[side]:6.2f} ms",
                file=sys.stderr,
            )
    return result


def round_trip_table(results: Sequence[RoundTrips]) -> str:
    lines = [
        "| backend | bare loop ms/round | same graph ms/round | server + WebSocket + device "
        "ms/round | server / same graph | server / bare loop | CPU ms/round: bare loop, same "
        "graph, server |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        cells = [f"{r.median_ms(side):.2f} (mean {r.mean_ms(side):.2f})" for side in SIDES]
        cpu = ", ".join(f"{r.median_cpu_ms(side):.2f}" for side in SIDES)
        lines.append(
            f"| {r.backend} | {' | '.join(cells)} | **{r.ratio():.2f}x** "
            f"| {r.ratio('bare loop'):.2f}x | {cpu} |"
        )
    return "\n".join(lines)


def round_trip_verdicts(results: Sequence[RoundTrips]) -> list[str]:
    return [
        f"- {r.backend}: {r.ratio():.2f}x the same graph's interrupt/resume, "
        + ("within the target" if r.ratio() <= TARGET_RATIO else "**over the target**")
        + f" ({r.ratio('bare loop'):.2f}x the minimal loop)"
        for r in results
    ]


# ── (b) Throughput ──────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Throughput:
    """One run of (b): `runs` runs of `rounds` round trips, all started at once."""

    what: str  # "server" or "bare LangGraph"
    duplicates: int  # `tool_call` frames delivered again (delivery is at least once)
    savers: int
    workers: int
    runs: int
    round_trips: int
    seconds: float
    steady_rate: float  # round trips/s between the 10th and the 90th percentile answer
    cpu_ms: float  # this process's CPU per round trip (the server, or the bare loop)
    postgres_cpu_ms: float  # the Postgres processes' CPU per round trip
    device_cpu_ms: float | None = None  # the device process's (None: answered in process)

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds


def postgres_cpu_seconds() -> float:
    """CPU time so far of every process named `postgres` on this machine (the throwaway
    cluster; 0 when it runs elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name, rest = text[text.index("(") + 1 :].split(")", 1)
            if name == "postgres":
                fields = rest.split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure_throughput(
    url: str,
    *,
    savers: int,
    workers: int,
    runs: int,
    rounds: int,
    profile: cProfile.Profile | None = None,
    durability: Durability = DURABILITY,
) -> Throughput:
    """Start `runs` runs through the API at once with the device online; time until every
    run has completed."""
    async with running_server(url, workers=workers, savers=savers, durability=durability) as server:
        async with DeviceProcess(server.device_url, server.device_token) as device:
            await device.waiting_for(1)
            await server.start_run(1)  # warm up: one whole run
            await device.report(timeout=60)
            await server.idle()
            gc.collect()
            await device.waiting_for(runs)
            cpu, pg_cpu = process_cpu_seconds(), postgres_cpu_seconds()
            if profile is not None:
                profile.enable()
            began = time.perf_counter()
            await asyncio.gather(*(server.start_run(rounds) for _ in range(runs)))
            report = await device.report(timeout=600)
            seconds = time.perf_counter() - began
            if profile is not None:
                profile.disable()
            cpu, pg_cpu = process_cpu_seconds() - cpu, postgres_cpu_seconds() - pg_cpu
        statuses = await server.statuses()
    answered = sorted(report.answered)
    if report.completed != {"success": runs} or report.calls != runs * rounds or report.disconnects:
        raise RuntimeError(
            f"(b) went wrong: {report.completed}, {report.calls} calls, {statuses}, "
            f"{report.disconnects}"
        )
    low, high = answered[len(answered) // 10], answered[len(answered) * 9 // 10]
    steady = (len(answered) * 8 // 10) / (high - low)
    round_trips = runs * rounds
    return Throughput(
        what="server",
        duplicates=report.duplicates,
        savers=savers,
        workers=workers,
        runs=runs,
        round_trips=round_trips,
        seconds=seconds,
        steady_rate=steady,
        cpu_ms=cpu * 1000 / round_trips,
        postgres_cpu_ms=pg_cpu * 1000 / round_trips,
        device_cpu_ms=report.cpu_seconds * 1000 / round_trips,
    )


async def measure_bare_throughput(
    url: str,
    opening: Sequence[BaseMessage],
    *,
    savers: int,
    workers: int,
    runs: int,
    rounds: int,
    durability: Durability = DURABILITY,
) -> Throughput:
    """The reference for (b): `runs` bare LangGraph loops (bench.round_trip's baseline) of
    `rounds` round trips each, all at once, at most `workers` invocations at a time, their
    threads spread over `savers` checkpointers on one pool as the server spreads them; the
    device is `Command(resume=...)` in process."""
    async with open_checkpointers(url, count=savers, pool_size=Settings().pool_size) as pool:
        gate = asyncio.Semaphore(workers)
        done: list[float] = []

        async def loop(index: int) -> None:
            driver = Driver(baseline_loop(pool[index % len(pool)], opening), durability)
            async with gate:
                await driver.start(0)
            for _ in range(rounds):
                async with gate:
                    await driver.round_trip()
                done.append(time.perf_counter())

        await loop(-1)  # warm up
        done.clear()
        gc.collect()
        cpu, pg_cpu = process_cpu_seconds(), postgres_cpu_seconds()
        began = time.perf_counter()
        await asyncio.gather(*(loop(index) for index in range(runs)))
        seconds = time.perf_counter() - began
        cpu, pg_cpu = process_cpu_seconds() - cpu, postgres_cpu_seconds() - pg_cpu
    done.sort()
    low, high = done[len(done) // 10], done[len(done) * 9 // 10]
    round_trips = runs * rounds
    return Throughput(
        what="bare LangGraph",
        duplicates=0,
        savers=savers,
        workers=workers,
        runs=runs,
        round_trips=round_trips,
        seconds=seconds,
        steady_rate=(len(done) * 8 // 10) / (high - low),
        cpu_ms=cpu * 1000 / round_trips,
        postgres_cpu_ms=pg_cpu * 1000 / round_trips,
    )


def throughput_table(results: Sequence[Sequence[Throughput]]) -> str:
    lines = [
        "| what | savers | workers (bare: invocations at once) | runs x round trips "
        "| round trips/s | steady round trips/s | process CPU ms/round trip "
        "| device process CPU ms/round trip | Postgres CPU ms/round trip "
        "| calls delivered twice |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for repeats in results:
        first = repeats[0]
        rate = statistics.median(t.rate for t in repeats)
        steady = statistics.median(t.steady_rate for t in repeats)
        cpu = statistics.median(t.cpu_ms for t in repeats)
        pg = statistics.median(t.postgres_cpu_ms for t in repeats)
        device_ms = [t.device_cpu_ms for t in repeats if t.device_cpu_ms is not None]
        device = f"{statistics.median(device_ms):.2f}" if device_ms else "(in process)"
        every = ", ".join(f"{t.rate:.0f}" for t in repeats)
        lines.append(
            f"| {first.what} | {first.savers} | {first.workers} | {first.runs} x "
            f"{first.round_trips // first.runs} | {rate:.0f} ({every}) | {steady:.0f} "
            f"| {cpu:.2f} | {device} | {pg:.2f} | {sum(t.duplicates for t in repeats)} |"
        )
    return "\n".join(lines)


def throughput_verdicts(results: Sequence[Sequence[Throughput]]) -> list[str]:
    lines = []
    for repeats in results:
        if repeats[0].what != "server":
            continue
        rate = statistics.median(t.rate for t in repeats)
        status = "meets the target" if rate >= TARGET_RATE else "**below the target**"
        lines.append(
            f"- savers={repeats[0].savers}, workers={repeats[0].workers}: "
            f"{rate:.0f} round trips/s, {status}"
        )
    return lines


# ── (c) Parked runs ─────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Parked:
    """(c): memory and tasks with every run parked, and the drain."""

    backend: Backend
    runs: int
    rounds: int
    workers: int
    savers: int
    park_seconds: float
    rss_before_mb: float
    rss_parked_mb: float
    rss_drained_mb: float
    blocks_before: int
    blocks_parked: int
    tasks_before: int
    tasks_parked: int
    drain_seconds: float
    disconnects: list[str]  # the device's dropped connections during the drain
    failed_hellos: list[str]  # its reconnections that failed
    pending_at_hello: list[int]  # `hello_ok.pending` of each of its connections
    statuses: dict[str, int]  # of the parked runs once drained
    errors: dict[str, int]  # error messages of those that failed

    @property
    def growth_mb(self) -> float:
        return self.rss_parked_mb - self.rss_before_mb


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure_parked(
    backend: Backend,
    url: str,
    *,
    runs: int,
    rounds: int,
    workers: int,
    savers: int,
    durability: Durability = DURABILITY,
) -> Parked:
    """Warm up with the device online, take it offline, park `runs` runs (created with the
    API's own function, no HTTP), then bring the device back and drain them."""
    async with running_server(url, workers=workers, savers=savers, durability=durability) as server:
        async with server.device(answer_at_once=True) as device:
            warmup = 20
            await asyncio.gather(*(server.start_run(rounds) for _ in range(warmup)))
            await device.wait_completed(warmup, timeout=120)
        while server.services.hub.connected_devices(USER):
            await asyncio.sleep(0.01)
        await server.idle()
        gc.collect()
        rss_before, blocks_before = rss_mb(), sys.getallocatedblocks()
        tasks_before = len(asyncio.all_tasks())

        began = time.perf_counter()
        # Paced: each batch is created once the previous one has parked. Created all at once,
        # thousands of runs would wait in the queue as `pending` for minutes, and the
        # scheduler's sweep (server/scheduler.py, `Scheduler.tick`) queues every run pending
        # for over 60 s again on each tick, whether or not it is already queued here, so the
        # queue fills with duplicates that each re-run `_step` to a re-park.
        for start in range(0, runs, PARK_BATCH):
            count = min(PARK_BATCH, runs - start)
            await asyncio.gather(*(server.start_run_directly(rounds) for _ in range(count)))
            await server.wait_for("interrupted", start + count, "parked", timeout=600)
            if (start + count) % 1000 == 0:
                print(f"  (c) parked: {start + count:,} of {runs:,}", file=sys.stderr)
        await server.idle()
        park_seconds = time.perf_counter() - began
        gc.collect()
        rss_parked, blocks_parked = rss_mb(), sys.getallocatedblocks()
        tasks_parked = len(asyncio.all_tasks())
        print(
            f"  (c) {runs} parked in {park_seconds:.1f} s; RSS {rss_before:.0f} -> "
            f"{rss_parked:.0f} MiB; tasks {tasks_before} -> {tasks_parked}",
            file=sys.stderr,
        )

        began = time.perf_counter()
        async with server.device(answer_at_once=True, reconnect=True) as device:
            # Counted in the database: `run_complete` frames sent while the device was
            # reconnecting are not redelivered.
            await server.wait_for(FINAL, warmup + runs, "finished", timeout=1800)
            drain_seconds = time.perf_counter() - began
            pending_at_hello = list(device.pending_at_hello)
            disconnects = list(device.disconnects)
            failed_hellos = list(device.failed_hellos)
        await server.idle()
        gc.collect()
        rss_drained = rss_mb()
        statuses = await server.statuses()
        errors = await server.errors()
    if pending_at_hello[0] != runs:
        raise RuntimeError(f"(c) went wrong: {statuses}, {pending_at_hello} pending")
    statuses["success"] -= warmup
    return Parked(
        backend=backend,
        runs=runs,
        rounds=rounds,
        workers=workers,
        savers=savers,
        park_seconds=park_seconds,
        rss_before_mb=rss_before,
        rss_parked_mb=rss_parked,
        rss_drained_mb=rss_drained,
        blocks_before=blocks_before,
        blocks_parked=blocks_parked,
        tasks_before=tasks_before,
        tasks_parked=tasks_parked,
        drain_seconds=drain_seconds,
        disconnects=disconnects,
        failed_hellos=failed_hellos,
        pending_at_hello=pending_at_hello,
        statuses=dict(statuses),
        errors=dict(errors),
    )


def parked_table(p: Parked) -> str:
    round_trips = p.runs * p.rounds
    reasons = f": {'; '.join(sorted(set(p.disconnects)))}" if p.disconnects else ""
    outcome = ", ".join(f"{n:,} {status}" for status, n in sorted(p.statuses.items()) if n)
    failed = f"{len(p.failed_hellos)}" + (
        f": {'; '.join(sorted(set(p.failed_hellos)))}" if p.failed_hellos else ""
    )
    if p.errors:
        outcome += " (" + "; ".join(f"{n} x `{e}`" for e, n in p.errors.items()) + ")"
    return "\n".join(
        [
            "| measure | value |",
            "|---|--:|",
            f"| runs parked (backend {p.backend}, workers {p.workers}, savers {p.savers}) "
            f"| {p.runs:,} |",
            f"| time to create and park them all | {p.park_seconds:.1f} s "
            f"({p.runs / p.park_seconds:.0f} runs/s) |",
            f"| RSS before -> all parked | {p.rss_before_mb:.0f} -> {p.rss_parked_mb:.0f} MiB "
            f"(**+{p.growth_mb:.1f} MiB**, {p.growth_mb * 1024 / p.runs:.1f} KiB a run) |",
            f"| Python allocated blocks before -> all parked | {p.blocks_before:,} -> "
            f"{p.blocks_parked:,} ({p.blocks_parked - p.blocks_before:+,}) |",
            f"| asyncio tasks before -> all parked | {p.tasks_before} -> {p.tasks_parked} "
            f"(**{p.tasks_parked - p.tasks_before:+d}**) |",
            f"| drain: device connects -> every run finished ({p.rounds} round trip(s) each, "
            f"{round_trips:,} in all) | {p.drain_seconds:.1f} s "
            f"({round_trips / p.drain_seconds:.0f} round trips/s) |",
            f"| device connections dropped during the drain (close code, reason) "
            f"| {len(p.disconnects)}{reasons} |",
            f"| device reconnections that failed (retried every 0.5 s) | {failed} |",
            f"| the parked runs once drained | {outcome} |",
            f"| `hello_ok.pending` of each device connection | "
            f"{', '.join(f'{n:,}' for n in p.pending_at_hello)} |",
            f"| RSS after the drain | {p.rss_drained_mb:.0f} MiB |",
        ]
    )


def parked_verdicts(p: Parked) -> list[str]:
    tasks = p.tasks_parked - p.tasks_before
    failed = p.runs - p.statuses.get("success", 0)
    drain = (
        f"- drain: {p.drain_seconds:.0f} s for {p.runs * p.rounds:,} round trips (no target); "
        + (
            "every run succeeded"
            if not failed and not p.disconnects
            else f"**{len(p.disconnects)} dropped device connection(s), {failed} run(s) "
            "not successful**"
        )
    )
    return [
        f"- tasks: {tasks:+d} with {p.runs:,} runs parked, "
        + ("no task per parked run: meets the target" if tasks < p.runs / 100 else "**missed**"),
        f"- memory: +{p.growth_mb:.1f} MiB, "
        + (
            f"under {TARGET_PARKED_MB:.0f} MB: meets the target"
            if p.growth_mb < TARGET_PARKED_MB
            else "**over the target**"
        ),
        drain,
    ]


# ── Reporting ──────────────────────────────────────────────────────────────────


def command(args: argparse.Namespace) -> str:
    return shlex.join([".venv/bin/python", "-m", "bench.server", *args.argv])


def postgres_note() -> str:
    if os.environ.get("DATABASE_URL"):
        return "`DATABASE_URL`"
    return (
        "a throwaway local cluster (harness.postgres: PostgreSQL over TCP loopback, "
        "`fsync=off`), a new database per server"
    )


def header(
    args: argparse.Namespace, where: str = "server, device and baseline in one process"
) -> list[str]:
    return [
        f"- Command: `{command(args)}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Event loop: {loop_name()}; {where}",
        f"- Checkpoint durability: `{args.durability}`, server and baseline alike",
    ]


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def block_a(results: Sequence[RoundTrips], args: argparse.Namespace) -> str:
    return "\n".join(
        [
            *header(args),
            f"- Rounds: {args.rounds} timed round trips per side and run, after {args.warmup} "
            f"warm-up ones; {args.repeats} runs per backend, each on fresh databases and a "
            f"fresh server, the two sides' round trips interleaved; Postgres: {postgres_note()}",
            "",
            round_trip_table(results),
            "",
            "ms/round: median over the runs of each run's median round trip (in brackets, the "
            "same for the means). Server: from the device sending `tool_result` to it "
            "receiving the next `tool_call`. Same graph: the agentic loop with the same "
            "stand-in model and checkpointer, resumed in process with `Command(resume=...)`. "
            "Bare loop: bench.round_trip's two-node model/tools loop. Ratios: of the medians. "
            "CPU: this process's CPU time (user + system) per round trip, median of the runs "
            "(the server's includes the device client and the worker's work after the push).",
            "",
            f"Target: at most {TARGET_RATIO}x the bare interrupt/resume of the same graph.",
            "",
            *round_trip_verdicts(results),
        ]
    )


def block_b(results: Sequence[Sequence[Throughput]], args: argparse.Namespace) -> str:
    return "\n".join(
        [
            *header(
                args,
                "the server and the bare loop in this process, the device in a "
                "process of its own (`python -m bench.device`), as a real device is",
            ),
            f"- Load: {args.runs} runs of {args.run_rounds} device round trips each, created "
            "at once through the HTTP API with one device online that answers every call at "
            f"once; {args.throughput_repeats} repeats per configuration, each on a fresh "
            f"database and server; Postgres: {postgres_note()}",
            "",
            throughput_table(results),
            "",
            "round trips/s: all round trips / (first run created -> last `run_complete`), "
            "median of the repeats (each repeat in brackets). Steady: the answers between the "
            "10th and 90th percentile over their time span. CPU: per round trip, this process "
            "(the server, or the bare loop), the device's process and the Postgres processes. "
            "Bare LangGraph: the reference, "
            "bench.round_trip's bare interrupt/resume loop, as many loops and round trips, "
            "at most `workers` invocations at a time, threads spread over the same number of "
            "savers on one pool, the device answering in process; it shows what LangGraph "
            "and the checkpointer alone reach on this machine.",
            "",
            f"Target: at least {TARGET_RATE:.0f} round trips/s.",
            "",
            *throughput_verdicts(results),
        ]
    )


def block_c(parked: Parked, args: argparse.Namespace) -> str:
    return "\n".join(
        [
            *header(args),
            f"- Load: {parked.runs:,} runs created with the API's `create_run` (no HTTP) and "
            f"queued while the device is offline, {PARK_BATCH} at a time, each batch once the "
            f"previous one has parked (see below); each parks at its first device call; then "
            f"the device connects, gets every pending call after `hello_ok` and answers at "
            f"once; each run has {parked.rounds} round trip(s). Backend: {parked.backend} "
            f"({postgres_note() if parked.backend == 'postgres' else 'a fresh file'}). "
            "Before: after 20 warm-up runs with the device online and then offline, "
            "`gc.collect()`.",
            "",
            parked_table(parked),
            "",
            f"Targets: no asyncio task per parked run; RSS growth under {TARGET_PARKED_MB:.0f} MB "
            "with every run parked.",
            "",
            *parked_verdicts(parked),
        ]
    )


def write_docs(part: Part, block: str, path: Path = DOCS) -> None:
    """Put `block` between the part's markers in the "Server" section. A missing section is
    added at the end with a subsection and markers for each part, in order; a missing
    subsection at the end of the section. Everything outside the markers is left alone."""
    text = path.read_text() if path.exists() else f"{DOCS_TITLE}\n"
    if f"\n{SECTION}\n" not in text:
        subsections = "".join(
            f"\n{SUBSECTIONS[p]}\n\n{begin_marker(p)}\nNot measured yet: "
            f"`.venv/bin/python -m bench.server --only {p} --write-docs`.\n{end_marker(p)}\n"
            for p in PARTS
        )
        text = f"{text.rstrip()}\n\n{SECTION}\n{subsections}"
    if begin_marker(part) not in text or end_marker(part) not in text:
        start = text.index(f"\n{SECTION}\n") + len(SECTION) + 2
        following = text.find("\n## ", start)
        end = len(text) if following == -1 else following + 1
        subsection = f"\n{SUBSECTIONS[part]}\n\n{begin_marker(part)}\n{end_marker(part)}\n"
        text = f"{text[:end].rstrip()}\n{subsection}" + (f"\n{text[end:]}" if text[end:] else "")
    head, rest = text.split(begin_marker(part), 1)
    tail = rest.split(end_marker(part), 1)[1]
    text = f"{head}{begin_marker(part)}\n{block}\n{end_marker(part)}{tail}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def print_profile(title: str, profile: cProfile.Profile) -> None:
    print(f"\n### cProfile: {title}\n")
    stats = pstats.Stats(profile, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


# ── Entry point ────────────────────────────────────────────────────────────────


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server",
        description="Server benchmarks: (a) device round trip against bare LangGraph, "
        "(b) throughput of 50 concurrent runs, (c) 5,000 parked runs.",
    )
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only these parts (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=30, help="(a) timed rounds per run")
    parser.add_argument("--warmup", type=int, default=5, help="(a) untimed rounds first")
    parser.add_argument("--repeats", type=int, default=3, help="(a) runs per backend")
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), metavar="BACKEND"
    )
    parser.add_argument("--runs", type=int, default=50, help="(b) concurrent runs")
    parser.add_argument("--run-rounds", type=int, default=20, help="(b) round trips per run")
    parser.add_argument(
        "--savers", type=int, nargs="+", default=[1, 8], help="(b) savers settings to compare"
    )
    parser.add_argument("--workers", type=int, default=8, help="(b, c) run workers")
    parser.add_argument("--throughput-repeats", type=int, default=2, help="(b) repeats")
    parser.add_argument("--parked", type=int, default=5000, help="(c) runs to park")
    parser.add_argument("--parked-rounds", type=int, default=1, help="(c) round trips per run")
    parser.add_argument("--parked-backend", choices=BACKENDS, default="postgres")
    parser.add_argument(
        "--durability",
        choices=("exit", "async", "sync"),
        default=DURABILITY,
        help="the server's checkpoint durability, and the baselines' (default: the server's)",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help=f"record the tables in {DOCS.name}"
    )
    parser.add_argument(
        "--profile", action="store_true", help="then profile the server side of (a) and (b)"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.parts = tuple(args.only or PARTS)
    if min(args.rounds, args.repeats, args.runs, args.run_rounds, args.parked) < 1:
        parser.error("counts must be positive")
    if args.parked_rounds < 1 or args.warmup < 0 or args.throughput_repeats < 1:
        parser.error("--parked-rounds and --throughput-repeats must be positive")
    return args


async def run(args: argparse.Namespace, urls: dict[str, Callable[[str], str]]) -> None:
    """Measure the parts asked for; print (and with --write-docs, record) their tables."""
    if "a" in args.parts:
        opening = await opening_messages()
        results = [
            await measure_round_trips(backend, urls[backend], opening, args)
            for backend in args.backends
        ]
        print(f"\n## (a) round trip\n\n{round_trip_table(results)}\n")
        print("\n".join(round_trip_verdicts(results)))
        if args.write_docs:
            write_docs("a", block_a(results, args))
        if args.profile:
            for backend in args.backends:
                pair = partial(
                    round_trip_pair,
                    backend,
                    urls[backend],
                    opening,
                    rounds=args.rounds,
                    warmup=args.warmup,
                    durability=args.durability,
                )
                with Counts().installed() as counter:
                    await pair(counter=counter)
                print(f"\n### Counts: (a) {backend}, after {args.warmup} warm-up rounds\n")
                print(counter.table())
                profile = cProfile.Profile()
                await pair(profile=profile)
                print_profile(f"(a) {backend}, full stack, {args.rounds} round trips", profile)
    if "b" in args.parts:
        opening = await opening_messages()
        throughputs: list[list[Throughput]] = []
        for savers in args.savers:
            server_runs: list[Throughput] = []
            bare_runs: list[Throughput] = []
            for repeat in range(args.throughput_repeats):
                common = {
                    "savers": savers,
                    "workers": args.workers,
                    "runs": args.runs,
                    "durability": args.durability,
                }
                for result, into in (
                    (
                        await measure_throughput(
                            urls["postgres"]("throughput"), rounds=args.run_rounds, **common
                        ),
                        server_runs,
                    ),
                    (
                        await measure_bare_throughput(
                            urls["postgres"]("bare"), opening, rounds=args.run_rounds, **common
                        ),
                        bare_runs,
                    ),
                ):
                    into.append(result)
                    print(
                        f"  (b) {result.what}, savers={savers} workers={args.workers} run "
                        f"{repeat + 1}/{args.throughput_repeats}: {result.rate:.0f} round "
                        f"trips/s (steady {result.steady_rate:.0f}), CPU {result.cpu_ms:.2f} ms "
                        f"+ Postgres {result.postgres_cpu_ms:.2f} ms per round trip",
                        file=sys.stderr,
                    )
            throughputs += [server_runs, bare_runs]
        print(f"\n## (b) throughput\n\n{throughput_table(throughputs)}\n")
        print("\n".join(throughput_verdicts(throughputs)))
        if args.write_docs:
            write_docs("b", block_b(throughputs, args))
        if args.profile:
            profile = cProfile.Profile()
            await measure_throughput(
                urls["postgres"]("throughput"),
                savers=max(args.savers),
                workers=args.workers,
                runs=args.runs,
                rounds=args.run_rounds,
                profile=profile,
                durability=args.durability,
            )
            print_profile(f"(b) savers={max(args.savers)}, workers={args.workers}", profile)
    if "c" in args.parts:
        parked = await measure_parked(
            args.parked_backend,
            urls[args.parked_backend]("parked"),
            runs=args.parked,
            rounds=args.parked_rounds,
            workers=args.workers,
            savers=8,
            durability=args.durability,
        )
        print(f"\n## (c) parked runs\n\n{parked_table(parked)}\n")
        print("\n".join(parked_verdicts(parked)))
        if args.write_docs:
            write_docs("c", block_c(parked, args))
    if args.write_docs:
        print(f"\nWritten to {DOCS}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    needed: set[str] = set()
    if "a" in args.parts:
        needed |= set(args.backends)
    if "b" in args.parts:
        needed.add("postgres")
    if "c" in args.parts:
        needed.add(args.parked_backend)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # uvicorn then runs on asyncio's own loop too
        loop_factory = None
    with (
        storage([b for b in BACKENDS if b in needed]) as urls,
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(run(args, urls))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
