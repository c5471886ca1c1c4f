"""A run's life in the server: queued, stepped, parked on its device, resumed by the answer
that completes it, finished or cancelled.

A run executes under its thread's lock until the graph returns. If it returned with device
calls pending, the calls are stored in the outbox, the run is parked (`interrupted`), and
only then pushed to the device (invariant 3). A parked run is a row and a checkpoint: no
worker, task or socket waits for it (invariant 7). Each answer is stored in the inbox first
(invariant 5); the statement that stores the last missing one claims the run, and the step
resumes it with `{interrupt_id: {call_id: result}}` read from the outbox and inbox under the
lock: a parked run's open calls are exactly its pending interrupts, because its checkpoint
moves only in a step under that lock, and a step ends by parking (which closes the calls it
answered and opens the new ones, in one transaction) or by finishing. Where the step stopped
comes from its own stream (the `__interrupt__` updates and the last values), so a round trip
loads the checkpoint once, in the graph itself.

The path of an answer, top to bottom: `answer` (from the device socket) stores it and, on
Postgres with a slot free, takes the thread's lock and claims and reads the run in the same
round trip (`server.storage.bridge`), then `_step` runs from that lease; otherwise the run is
queued and `execute` takes the lock and reads it. `_step` decides what to stream
(`_what_next`), streams it (`_stream`), and ends it (`_end_step`: `_park` or `_finish`).

Checkpoints are written with the server's `durability` (default `exit`: once per step, when
the graph returns). That is safe for device side effects (invariant 10): calls are pushed only
after the step has returned, so after its checkpoint and pending writes are stored, and the
answers a step consumes leave the inbox only in the transaction that parks or finishes the
run. A crash mid-step loses only that step's work: recovery reads the checkpoint, finds the
same device interrupts, resumes them with the same stored answers, and calls the model again
(`tests/test_server_e2e.py::test_server_killed_mid_run_and_restarted`, `mid-model-step`).

One run record spans the whole job: device round trips and server restarts do not end it.
"""

import asyncio
import logging
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command, Durability, Interrupt, StreamMode
from pydantic import ValidationError

from checkpoints import Database
from checkpoints.deferred import deferred_writes
from checkpoints.kept import vouched
from checkpoints.sql import Statement
from device.protocol import RunComplete, RunContext, RunProgress, ToolCallFrame, ToolResult
from graphs.outcomes import PROGRESS_GRAPH, RunOutcome, outcome_of, progress_report
from nodes.bridge import is_device_request
from nodes.context import AgentContext
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import DeviceHub
from server.locks import Lease, ThreadLocks
from server.records import (
    FINAL_STATUSES,
    Assistant,
    Json,
    OutboxCall,
    Run,
    RunStatus,
    ThreadStatus,
)
from server.run_config import RUN_ID_KEY, agent_context, command_fields, run_config
from server.run_queue import RunQueue
from server.storage import bridge, crons, runs, threads
from server.storage.bridge import Answer, DeviceAnswer, Execution, OpenCall

log = logging.getLogger(__name__)

RUN_FAILED = "{kind}: {message}"
STEP_NOT_STORED = "The step's checkpoint and its end could not be stored: {error}"
ASSISTANT_GONE = "The run's assistant no longer exists."
INVALID_CONFIG = "Invalid configuration: {error}"
#: What a refused write raises: the run ends as an error, its worker goes on.
DATABASE_ERRORS = (psycopg.Error, sqlite3.Error)
INTERRUPT = "__interrupt__"
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """One execution of a run under its thread's lock: what it runs and with what."""

    run: Run
    assistant: Assistant
    graph: Pregel[Any, Any, Any, Any]
    config: RunnableConfig
    context: AgentContext
    lease: Lease


@dataclass(frozen=True)
class Go:
    """Stream this: a new run's input or command, a resume, or None to continue."""

    payload: Any
    resumes: bool = False  # it answers the run's open device calls


@dataclass(frozen=True)
class Wait:
    """Answers are still missing; `interrupts` to park first (empty: parked already)."""

    interrupts: Sequence[Interrupt] = ()


@dataclass
class StepEnd:
    """Where a step's stream stopped: the interrupts it raised and the last values."""

    interrupts: list[Interrupt] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # streamed while someone watches


class RunManager:
    """The steps of a run's life, in the order a run meets them."""

    def __init__(
        self,
        *,
        db: Database,
        graphs: GraphRegistry,
        hub: DeviceHub,
        events: RunEvents,
        locks: ThreadLocks,
        workers: int,
        durability: Durability = "exit",
        checkpoint_marks: bool = False,
    ) -> None:
        """`checkpoint_marks`: a step's read of its run also reads its thread's latest
        checkpoint (`Execution.checkpoint`), for savers that keep them (Postgres only: the
        checkpointer's tables must be in the same database)."""
        self.db, self.graphs, self.hub, self.events, self.locks = db, graphs, hub, events, locks
        self.queue = RunQueue(workers, self.execute)
        self.durability: Durability = durability
        self.marks = checkpoint_marks and db.kind == "postgres"
        #: Runs being cancelled: their step stops at its next boundary.
        self.cancelling: set[str] = set()
        #: The thread of a queued run, when its enqueuer knew it (saves a read).
        self._thread_of: dict[str, str] = {}

    @property
    def executing(self) -> dict[str, asyncio.Task[None]]:
        return self.queue.executing

    # ── queued ───────────────────────────────────────────────────────────────

    async def start(self) -> None:
        """Start taking runs from the queue, and queue the runs a previous process left
        unfinished."""
        self.queue.start()
        for run_id in await runs.to_recover(self.db):
            self.enqueue(run_id)

    async def stop(self) -> None:
        await self.queue.stop()

    def enqueue(self, run_id: str, thread_id: str | None = None) -> None:
        """Queue a run once. `thread_id`, when the caller knows it, saves a read before
        taking the thread's lock."""
        if thread_id is not None:
            self._thread_of[run_id] = thread_id
        self.queue.enqueue(run_id)

    async def execute(self, run_id: str) -> None:
        """A queued run's step: take its thread's lock, claim and read it, step it."""
        thread_id = self._thread_of.pop(run_id, None)
        if thread_id is None:
            found = await runs.get(self.db, run_id)
            if found is None or found.status in FINAL_STATUSES:
                return
            thread_id = found.thread_id
        read = bridge.claim_and_read(self.db.kind, run_id, marks=self.marks)
        async with self.locks.hold(thread_id, *read.statements) as lease:
            execution = read.read(lease.results)  # strict: read under the lock
            if execution is None or execution.run.status in FINAL_STATUSES:
                return
            await self._step(execution, lease)

    # ── answered ─────────────────────────────────────────────────────────────

    async def answer(self, user_id: str, device_id: str, frame: ToolResult) -> Answer:
        """Store a device's answer (invariant 5) and, if it was the last one its run waited
        for, resume the run.

        On Postgres with a slot free, storing the answer, taking its thread's lock (if free),
        claiming the run and reading it are one network round trip, and the step starts
        from here, not from the queue. Otherwise the run is queued."""
        payload = frame.result if frame.ok else (frame.error or "The device reported an error.")
        answer = DeviceAnswer(user_id, device_id, frame.id, frame.ok, payload)
        if not self.locks.pipelined or not await self.queue.try_slot():
            stored = await bridge.store_answer(self.db, answer)
            if stored.completes and stored.run_id is not None:
                self.enqueue(stored.run_id, stored.thread_id)
            return stored
        claim = bridge.claim_after_answer(answer, marks=self.marks)
        try:
            lease, (rows, *claimed) = await self.locks.try_take(
                bridge.store_answer_and_try_lock(answer), *claim.statements
            )
        except BaseException:
            self.queue.release_slot()
            raise
        execution = claim.read(claimed)
        if execution is not None and execution.claimed and lease is not None:
            self.queue.spawn(execution.run.run_id, self._step_under(execution, lease))
            return await bridge.outcome(self.db, answer, rows)
        self.queue.release_slot()
        if lease is not None:
            await lease.release()
        stored = await bridge.outcome(self.db, answer, rows)
        if execution is not None and execution.claimed:  # claimed while its thread was busy
            self.enqueue(execution.run.run_id, execution.run.thread_id)
        elif stored.completes and stored.run_id is not None:
            self.enqueue(stored.run_id, stored.thread_id)
        return stored

    async def _step_under(self, execution: Execution, lease: Lease) -> None:
        """A claimed run's step, under the lock its answer took."""
        try:
            await self._step(execution, lease)
        finally:
            if not lease.released:
                await lease.release()

    # ── stepped ──────────────────────────────────────────────────────────────

    async def _step(self, execution: Execution, lease: Lease) -> None:
        run, assistant = execution.run, execution.assistant
        if assistant is None or assistant.graph_id not in self.graphs:
            await self._finish(run, "error", error=ASSISTANT_GONE)
            return
        try:
            config = run_config(run, assistant)
            context = agent_context(assistant.context, run.kwargs.get("context"))
        except (ValidationError, TypeError, ValueError) as exc:
            await self._finish(run, "error", error=INVALID_CONFIG.format(error=exc))
            return
        if await self._waits_for_its_device(run):
            return
        graph = self.graphs.for_thread(assistant.graph_id, run.thread_id)
        step = Step(run, assistant, graph, config, context, lease)
        what = await self._what_next(execution, step)
        if isinstance(what, Wait):
            if what.interrupts:
                await self._park_recovered(step, what.interrupts)
            return
        if not execution.claimed and not await runs.start(self.db, run):
            return  # cancelled meanwhile
        self.events.status_changed(run.run_id)
        try:
            with (
                vouched(execution.checkpoint),
                deferred_writes(run.thread_id, self.durability == "exit") as writes,
            ):
                end = await self._stream(step, what.payload)
        except asyncio.CancelledError:
            self.graphs.forget_checkpoint(run.thread_id)
            raise
        except Exception as exc:  # the run's boundary: record the failure, keep the worker
            self.graphs.forget_checkpoint(run.thread_id)
            log.exception("run %s failed", run.run_id)
            await self._store_stopped(step, writes)
            await self._finish(
                run, "error", error=RUN_FAILED.format(kind=type(exc).__name__, message=exc)
            )
            return
        if end is None:  # cancelled, and stopped at a step boundary: nothing more
            self.graphs.forget_checkpoint(run.thread_id)
            await self._store_stopped(step, writes)
            self.cancelling.discard(run.run_id)
            return
        await self._end_step(step, end, writes, resumed=what.resumes)

    async def _waits_for_its_device(self, run: Run) -> bool:
        """Scheduled runs of one device start one after another: a run that has not started
        waits (pending) while an earlier one of its device is active."""
        if not run.cron_id or not run.device_id or run.started_at:
            return False
        return await runs.earlier_of_device(self.db, run) is not None

    async def _what_next(self, execution: Execution, step: Step) -> Go | Wait:
        """What to stream next, or what the run waits for.

        A parked run resumes from the outbox (claimed, when every answer is in): its open
        calls are exactly the pending device interrupts, because the checkpoint moves only in
        a step, under this lock, and every step ends by parking (which replaces the open
        calls) or finishing. Other runs (new, or caught mid-step by a crash) read their
        checkpoint."""
        run = execution.run
        if execution.claimed or (run.status == "interrupted" and execution.open_calls):
            return resume_command(execution.open_calls)
        snapshot = await step.graph.aget_state(step.config)
        started = snapshot.metadata is not None and snapshot.metadata.get(RUN_ID_KEY) == run.run_id
        if not started:
            return await self._first_input(run, step.assistant)
        device = [i for i in snapshot.interrupts if is_device_request(i.value)]
        if not device:
            return Go(None)  # killed mid-step: continue from the last checkpoint
        answers = {c.call_id: c.answer for c in execution.open_calls}
        calls = [
            OpenCall(i.id, call["id"], answers.get(call["id"]))
            for i in device
            for call in i.value["calls"]
        ]
        what = resume_command(calls)
        return Wait(device) if isinstance(what, Wait) else what

    async def _first_input(self, run: Run, assistant: Assistant) -> Go:
        """A new run's input or command; the local agent's carries the folder's progress."""
        if run.kwargs.get("command") is not None:
            return Go(Command(**command_fields(run.kwargs["command"])))
        graph_input = dict(run.kwargs.get("input") or {})
        if assistant.graph_id == PROGRESS_GRAPH and "modified_since" not in graph_input:
            graph_input["modified_since"] = await runs.watermark(self.db, assistant.assistant_id)
            graph_input["retry_files"] = await runs.retry_files(self.db, assistant.assistant_id)
        return Go(graph_input)

    async def _stream(self, step: Step, payload: Any) -> StepEnd | None:
        """Stream the step to the run's subscribers and device; where the graph stopped (None
        when the run was cancelled). The state's values are streamed only while someone
        watches the run (each costs a chunk per graph step); a finished run reads its final
        values once, in `_end_step`."""
        run_id = step.run.run_id
        end = StepEnd()
        modes: list[StreamMode] = ["updates", "custom"]
        if self.events.watched(run_id):
            modes.append("values")
        stream = cast(  # typed as an iterator; it is an async generator, which can be closed
            AsyncGenerator[Any, None],
            step.graph.astream(
                payload,
                step.config,
                context=step.context,
                durability=self.durability,
                stream_mode=modes,
            ),
        )
        async with aclosing(stream):  # stopped here, so its last checkpoint is written here
            async for mode, data in stream:
                self.events.publish(run_id, str(mode), data)
                if mode == "custom" and isinstance(data, Mapping):
                    await self._progress_to_device(step.run, data)
                elif mode == "updates" and isinstance(data, Mapping) and INTERRUPT in data:
                    end.interrupts.extend(data[INTERRUPT])
                elif mode == "values" and isinstance(data, Mapping):
                    end.values = {k: v for k, v in data.items() if k != INTERRUPT}
                if run_id in self.cancelling:
                    return None
        return end

    async def _progress_to_device(self, run: Run, data: Mapping[str, Any]) -> None:
        device_id = run.device_id or self._any_device(run.user_id)
        if device_id is None or "event" not in data:
            return
        frame = RunProgress(
            run_context=_run_context(run),
            event=str(data["event"]),
            data=dict(data.get("data") or {}),
        )
        await self.hub.send(run.user_id, device_id, frame)

    async def _store_stopped(self, step: Step, writes: Sequence[Statement]) -> None:
        """Store the checkpoint LangGraph wrote as a step failed or was cancelled; the run's
        end is recorded whether or not the database takes it."""
        try:
            await step.lease.run(*writes)
        except DATABASE_ERRORS:
            log.exception("run %s: the stopped step's checkpoint was not stored", step.run.run_id)

    async def _stored(self, run: Run, work: Awaitable[T]) -> T | None:
        """`work`, a step's last writes (its checkpoint, its park); if the database refuses
        them, nothing of the step is stored and the run ends as an error (None)."""
        try:
            return await work
        except DATABASE_ERRORS as exc:
            self.graphs.forget_checkpoint(run.thread_id)
            log.exception("run %s: its step could not be stored", run.run_id)
            await self._finish(run, "error", error=STEP_NOT_STORED.format(error=exc))
            return None

    # ── parked or finished ───────────────────────────────────────────────────

    async def _end_step(
        self, step: Step, end: StepEnd, writes: Sequence[Statement], *, resumed: bool
    ) -> None:
        """Park the run on its device calls, with the step's checkpoint `writes` in the same
        transaction; or store the checkpoint and end the run."""
        run = step.run
        device = [i for i in end.interrupts if is_device_request(i.value)]
        if device:
            await self._park_step(step, device, writes, resumed=resumed)
            return
        if await self._stored(run, step.lease.run(*writes)) is None:
            return
        if not end.interrupts and not end.values:  # finished, unwatched: read its values
            end.values = dict((await step.graph.aget_state(step.config)).values)
        if end.interrupts:  # a human's turn: the run ends, as in the LangGraph server
            await self._finish(run, "success", thread_status="interrupted")
            return
        outcome = outcome_of(end.values)
        if (report := progress_report(step.assistant.graph_id, end.values)) is not None:
            await runs.record_outcome(
                self.db, assistant_id=step.assistant.assistant_id, report=dict(report)
            )
        await self._finish(run, outcome.status, outcome=outcome)

    async def _park_step(
        self,
        step: Step,
        interrupts: Sequence[Interrupt],
        writes: Sequence[Statement],
        *,
        resumed: bool,
    ) -> None:
        """Park on the calls the step just raised, with its checkpoint, as the thread's lock
        is let go (one network round trip on Postgres), then push them: nothing can resume
        the run before its device has them, and none of them can be answered yet.
        `resumed`: the step consumed the run's open calls (closed in the same transaction)."""
        run = step.run
        device_id = run.device_id or self._any_device(run.user_id)
        here = device_id is not None and self.hub.get(run.user_id, device_id) is not None
        calls = _calls_of(interrupts)
        if not await self._store_park(step, calls, device_id, writes, pushed=here, resumed=resumed):
            return
        if here:  # marked pushed in the park transaction: send them as they are
            for _, call_id, name, args in calls:
                frame = ToolCallFrame(
                    id=call_id, name=name, args=args, run_context=_run_context(run)
                )
                await self.hub.send(run.user_id, device_id, frame)

    async def _park_recovered(self, step: Step, interrupts: Sequence[Interrupt]) -> None:
        """Park again on the interrupts a run caught mid-step by a crash had raised: some of
        their calls may have been answered already; the rest are pushed (and if none is
        left, the run is queued to resume)."""
        run = step.run
        device_id = run.device_id or self._any_device(run.user_id)
        calls = _calls_of(interrupts)
        if not await self._store_park(step, calls, device_id, (), pushed=False, resumed=False):
            return
        unanswered = await bridge.for_run(self.db, run.run_id)
        if not unanswered:  # every answer was already in
            self.enqueue(run.run_id, run.thread_id)
        await self.push(run.user_id, unanswered)

    async def _store_park(
        self,
        step: Step,
        calls: Sequence[bridge.ParkCall],
        device_id: str | None,
        writes: Sequence[Statement],
        *,
        pushed: bool,
        resumed: bool,
    ) -> bool:
        """Store the park with the step's writes and let the lock go; whether the run is
        parked (not if it ended meanwhile, cancelled elsewhere, or the store failed)."""
        park = bridge.park(
            self.db.kind,
            run=step.run,
            calls=calls,
            device_id=device_id,
            pushed=pushed,
            resumed=resumed,
        )
        results = await self._stored(step.run, step.lease.release(*writes, *park.statements))
        if results is None:
            return False
        self.events.status_changed(step.run.run_id)
        return park.read(results[len(writes) :])

    def _any_device(self, user_id: str) -> str | None:
        connected = self.hub.connected_devices(user_id)
        return connected[0] if connected else None

    async def push(self, user_id: str, calls: Sequence[OutboxCall]) -> None:
        """Send calls to their devices where connected here, then mark those sent as pushed
        in one statement."""
        sent: list[str] = []
        for call in calls:
            frame = ToolCallFrame(
                id=call.call_id,
                name=call.name,
                args=call.args,
                run_context=RunContext(
                    run_id=call.run_id, thread_id=call.thread_id, assistant_id=call.assistant_id
                ),
            )
            if await self.hub.send(user_id, call.device_id, frame):
                sent.append(call.call_id)
        if sent:
            await bridge.mark_pushed(self.db, sent)

    async def _finish(
        self,
        run: Run,
        status: RunStatus,
        *,
        outcome: RunOutcome | None = None,
        error: str | None = None,
        thread_status: ThreadStatus | None = None,
    ) -> None:
        """Record the run's end, tell its subscribers and its devices, then what follows a
        run's end (`_after_end`)."""
        counts: Json = dict(outcome.counts) if outcome else {}
        error = outcome.error if outcome else error
        devices = set(await bridge.run_devices(self.db, run.run_id))
        if run.device_id:
            devices.add(run.device_id)
        await runs.finish(
            self.db,
            run=run,
            status=status,
            error=error,
            counts=counts,
            thread_status=thread_status or ("error" if status == "error" else "idle"),
        )
        if error:
            self.events.publish(run.run_id, "error", {"error": status, "message": error})
        self.events.finish(run.run_id)
        frame = RunComplete(run_context=_run_context(run), status=status, counts=counts)
        for device_id in devices:
            await self.hub.send(run.user_id, device_id, frame)
        await self._after_end(run)

    async def _after_end(self, run: Run) -> None:
        """A scheduled run's thread goes if its cron says `delete`; its device's next
        scheduled run starts."""
        if run.cron_id:
            cron = await crons.get_any_user(self.db, run.cron_id)
            if cron and cron.thread_id is None and cron.on_run_completed == "delete":
                await threads.delete(self.db, user_id=run.user_id, thread_id=run.thread_id)
                await self.graphs.forget_thread(run.thread_id)
        if run.device_id:
            following = await runs.next_of_device(
                self.db, user_id=run.user_id, device_id=run.device_id
            )
            if following is not None:
                self.enqueue(following)

    # ── cancelled ────────────────────────────────────────────────────────────

    async def cancel(self, run: Run) -> bool:
        """Stop the run wherever it is and tell its device."""
        devices = set(await bridge.run_devices(self.db, run.run_id))
        if not await runs.cancel(self.db, run):
            return False
        if run.run_id in self.executing:
            # Cooperative: the run stops at its next step boundary. Cancelling the task could
            # interrupt a checkpoint write between its statement and its commit.
            self.cancelling.add(run.run_id)
        self.events.finish(run.run_id)
        await self._after_end(run)
        frame = RunComplete(run_context=_run_context(run), status="cancelled", counts={})
        for device_id in devices | ({run.device_id} if run.device_id else set()):
            await self.hub.send(run.user_id, device_id, frame)
        return True


def resume_command(calls: Sequence[OpenCall]) -> Go | Wait:
    """The `Command(resume=...)` answering every open call, by interrupt then call id; Wait
    if one is not answered yet."""
    resume: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call.answer is None:
            return Wait()
        resume.setdefault(call.interrupt_id, {})[call.call_id] = call.answer
    return Go(Command(resume=resume), resumes=True)


def _calls_of(interrupts: Sequence[Interrupt]) -> list[bridge.ParkCall]:
    """The device calls of interrupts, as a park stores them."""
    return [
        (pending.id, call["id"], call["name"], call["args"])
        for pending in interrupts
        for call in pending.value["calls"]
    ]


def _run_context(run: Run) -> RunContext:
    return RunContext(run_id=run.run_id, thread_id=run.thread_id, assistant_id=run.assistant_id)
