"""Run execution: a queue and workers in the server process, and the server side of the
device bridge.

A run executes under its thread's lock until the graph returns. If it returned with device
calls pending, the calls are stored in the outbox, the run is parked (`interrupted`), and
only then pushed to the device (invariant 3). A parked run is a row and a checkpoint: no
worker, task or socket waits for it (invariant 7). Each answer is stored in the inbox first
(invariant 5); the statement that stores the last missing one queues the run again, and the
worker resumes it with `{interrupt_id: {call_id: result}}` read from the outbox and inbox
under the lock: a parked run's open calls are exactly its pending interrupts, because its
checkpoint moves only in a step under that lock, and a step ends by parking (which closes the
calls it answered and opens the new ones, in one transaction) or by finishing. Where the step
stopped comes from its own stream (the `__interrupt__` updates and the last values), so a
round trip loads the checkpoint once, in the graph itself.

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
from collections.abc import AsyncGenerator, Awaitable, Coroutine, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command, Durability, Interrupt, StreamMode
from pydantic import TypeAdapter, ValidationError

from checkpoints.deferred import deferred_writes
from checkpoints.kept import vouched
from checkpoints.sql import Statement
from device.protocol import RunComplete, RunContext, RunProgress, ToolCallFrame, ToolResult
from graphs import RECURSION_LIMIT
from nodes.bridge import is_device_request
from nodes.context import AgentContext
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import DeviceHub
from server.locks import Lease, ThreadLocks
from server.repository import (
    FINAL_STATUSES,
    Answer,
    Execution,
    OpenCall,
    PendingCall,
    Repository,
)

log = logging.getLogger(__name__)

RUN_ID_KEY = "relaygraph_run_id"
CONTEXT = TypeAdapter(AgentContext)
RUN_FAILED = "{kind}: {message}"
STEP_NOT_STORED = "The step's checkpoint and its end could not be stored: {error}"
#: What a refused write raises: the run ends as an error, its worker goes on.
DATABASE_ERRORS = (psycopg.Error, sqlite3.Error)
T = TypeVar("T")
#: The graph whose "modified since" watermark is kept per assistant.
WATERMARKED_GRAPH = "local_agent"


class RunManager:
    """Queue, workers, and the steps of a run's life."""

    def __init__(
        self,
        *,
        repo: Repository,
        graphs: GraphRegistry,
        hub: DeviceHub,
        events: RunEvents,
        locks: ThreadLocks,
        workers: int,
        durability: Durability = "exit",
    ) -> None:
        self.repo, self.graphs, self.hub, self.events, self.locks = repo, graphs, hub, events, locks
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        #: One per run executing at once, queued or resumed straight from its last answer.
        self.slots = asyncio.Semaphore(workers)
        self.durability: Durability = durability
        self.dispatcher: asyncio.Task[None] | None = None
        self.executing: dict[str, asyncio.Task[None]] = {}
        self.cancelling: set[str] = set()
        self.queued: set[str] = set()
        self.thread_of: dict[str, str] = {}

    # ── lifecycle ────────────────────────────────────────────────────────────

    async def start(self) -> None:
        """Start taking runs from the queue, and queue the runs a previous process left
        unfinished."""
        self.dispatcher = asyncio.create_task(self._dispatch(), name="run-dispatcher")
        for run_id in await self.repo.runs_to_recover():
            self.enqueue(run_id)

    async def stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.cancel()
            await asyncio.gather(self.dispatcher, return_exceptions=True)

    def enqueue(self, run_id: str, thread_id: str | None = None) -> None:
        """Queue a run once: a run already waiting in the queue is not queued again.
        `thread_id`, when the caller knows it, saves a read before taking the thread's lock."""
        if thread_id is not None:
            self.thread_of[run_id] = thread_id
        if run_id in self.queued:
            return
        self.queued.add(run_id)
        self.queue.put_nowait(run_id)

    async def _dispatch(self) -> None:
        """Start each queued run as soon as a slot is free."""
        while True:
            run_id = await self.queue.get()
            self.queued.discard(run_id)
            await self.slots.acquire()
            self._spawn(run_id, self.execute(run_id))

    def _spawn(self, run_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (holding a slot, given back when it ends) as the run's task."""
        task = asyncio.create_task(work, name=f"run-{run_id}")
        self.executing[run_id] = task
        task.add_done_callback(lambda done: self._ended(run_id, done))

    def _ended(self, run_id: str, task: "asyncio.Task[None]") -> None:
        if self.executing.get(run_id) is task:
            del self.executing[run_id]
        self.slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("run %s: its task failed: %r", run_id, exc, exc_info=exc)

    # ── executing ─────────────────────────────────────────────────────────────

    async def execute(self, run_id: str) -> None:
        """Run (or resume) one run until it finishes or parks on its device."""
        thread_id = self.thread_of.pop(run_id, None)
        if thread_id is None:
            found = await self.repo.get_run(run_id)
            if found is None or found["status"] in FINAL_STATUSES:
                return
            thread_id = found["thread_id"]
        async with self.locks.hold(thread_id, *self.repo.execution_reads(run_id)) as lease:
            execution = self.repo.execution_of(lease.results)  # strict: read under the lock
            if execution is None or execution.run["status"] in FINAL_STATUSES:
                return
            await self._step(execution, lease)

    async def answer(self, user_id: str, device_id: str, frame: ToolResult) -> Answer:
        """Store a device's answer (invariant 5) and, if it was the last one its run waited
        for, resume the run.

        On Postgres with a slot free, storing the answer, taking its thread's lock (if free),
        claiming the run and reading it are one network round trip, and the step starts
        from here, not from the queue. Otherwise the run is queued."""
        payload = frame.result if frame.ok else (frame.error or "The device reported an error.")
        if not self.locks.pipelined or self.slots.locked():
            answer = await self.repo.record_answer(
                user_id=user_id, device_id=device_id, call_id=frame.id, ok=frame.ok, payload=payload
            )
            if answer.completes and answer.run_id is not None:
                self.enqueue(answer.run_id, answer.thread_id)
            return answer
        reads = self.repo.answer_reads(
            user_id=user_id, device_id=device_id, call_id=frame.id, ok=frame.ok, payload=payload
        )
        await self.slots.acquire()  # free: it was not locked, and nothing awaited since
        try:
            lease, (stored, *step) = await self.locks.try_take(*reads)
        except BaseException:
            self.slots.release()
            raise
        execution = self.repo.execution_of(step)
        if execution is not None and execution.claimed and lease is not None:
            self._spawn(execution.run["run_id"], self._resume(execution, lease))
            return await self.repo.answer_of(
                stored, user_id=user_id, device_id=device_id, call_id=frame.id
            )
        self.slots.release()
        if lease is not None:
            await lease.release()
        answer = await self.repo.answer_of(
            stored, user_id=user_id, device_id=device_id, call_id=frame.id
        )
        if execution is not None and execution.claimed:  # claimed while its thread was busy
            self.enqueue(execution.run["run_id"], execution.run["thread_id"])
        elif answer.completes and answer.run_id is not None:
            self.enqueue(answer.run_id, answer.thread_id)
        return answer

    async def _resume(self, execution: Execution, lease: Lease) -> None:
        """A claimed run's step, under the lock its answer took."""
        try:
            await self._step(execution, lease)
        finally:
            if not lease.released:
                await lease.release()

    async def _step(self, execution: Execution, lease: Lease) -> None:
        run, assistant = execution.run, execution.assistant
        if assistant is None or assistant["graph_id"] not in self.graphs:
            await self._finish(run, "error", {}, "The run's assistant no longer exists.")
            return
        graph = self.graphs.for_thread(assistant["graph_id"], run["thread_id"])
        try:
            config = run_config(run, assistant)
            context = run_context(assistant, run["kwargs"])
        except (ValidationError, TypeError, ValueError) as exc:
            await self._finish(run, "error", {}, f"Invalid configuration: {exc}")
            return
        if await self._waits_for_its_device(run):
            return
        step = await self._next_step(execution, assistant, graph, config)
        if isinstance(step, Wait):
            if step.interrupts:
                await self._park(run, step.interrupts, lease, fresh=False)
            return
        if not execution.claimed and not await self.repo.start_step(run):
            return  # cancelled meanwhile
        self.events.status_changed(run["run_id"])
        deferring = self.durability == "exit"  # written once, at the step's end
        try:
            with (
                vouched(execution.checkpoint),
                deferred_writes(run["thread_id"], deferring) as writes,
            ):
                end = await self._stream(run, graph, step.payload, config, context)
        except asyncio.CancelledError:
            self.graphs.forget_checkpoint(run["thread_id"])
            raise
        except Exception as exc:  # the run's boundary: record the failure, keep the worker
            self.graphs.forget_checkpoint(run["thread_id"])
            log.exception("run %s failed", run["run_id"])
            await self._store_stopped(run, lease, writes)
            await self._finish(
                run, "error", {}, RUN_FAILED.format(kind=type(exc).__name__, message=exc)
            )
            return
        if end is None:  # cancelled, and stopped at a step boundary: nothing more
            self.graphs.forget_checkpoint(run["thread_id"])
            await self._store_stopped(run, lease, writes)
            self.cancelling.discard(run["run_id"])
            return
        await self._after(run, assistant, graph, config, end, lease, writes, resumed=step.resumes)

    async def _store_stopped(
        self, run: dict[str, Any], lease: Lease, writes: Sequence[Statement]
    ) -> None:
        """Store the checkpoint LangGraph wrote as a step failed or was cancelled; the run's
        end is recorded whether or not the database takes it."""
        try:
            await lease.run(*writes)
        except DATABASE_ERRORS:
            log.exception("run %s: the stopped step's checkpoint was not stored", run["run_id"])

    async def _stored(self, run: dict[str, Any], work: Awaitable[T]) -> T | None:
        """`work`, a step's last writes (its checkpoint, its park); if the database refuses
        them, nothing of the step is stored and the run ends as an error (None)."""
        try:
            return await work
        except DATABASE_ERRORS as exc:
            self.graphs.forget_checkpoint(run["thread_id"])
            log.exception("run %s: its step could not be stored", run["run_id"])
            await self._finish(run, "error", {}, STEP_NOT_STORED.format(error=exc))
            return None

    async def _waits_for_its_device(self, run: dict[str, Any]) -> bool:
        """Scheduled runs of one device start one after another: a run that has not started
        waits (pending) while an earlier one of its device is active."""
        if not run["cron_id"] or not run["device_id"] or run["started_at"]:
            return False
        return await self.repo.earlier_device_run(run) is not None

    async def _next_step(
        self,
        execution: Execution,
        assistant: dict[str, Any],
        graph: Pregel[Any, Any, Any, Any],
        config: RunnableConfig,
    ) -> "Go | Wait":
        """What to stream next, or what the run waits for.

        A parked run resumes from the outbox (claimed, when every answer is in): its open
        calls are exactly the pending device interrupts, because the checkpoint moves only in
        a step, under this lock, and every step ends by parking (which replaces the open
        calls) or finishing. Other runs (new, or caught mid-step by a crash) read their
        checkpoint."""
        run = execution.run
        if execution.claimed or (run["status"] == "interrupted" and execution.open_calls):
            return _resume(execution.open_calls)
        snapshot = await graph.aget_state(config)
        started = (
            snapshot.metadata is not None and snapshot.metadata.get(RUN_ID_KEY) == run["run_id"]
        )
        if not started:
            kwargs = run["kwargs"]
            if kwargs.get("command") is not None:
                return Go(Command(**command_fields(kwargs["command"])))
            graph_input = dict(kwargs.get("input") or {})
            if assistant["graph_id"] == WATERMARKED_GRAPH and "modified_since" not in graph_input:
                assistant_id = assistant["assistant_id"]
                graph_input["modified_since"] = await self.repo.assistant_watermark(assistant_id)
                graph_input["retry_files"] = await self.repo.assistant_retries(assistant_id)
            return Go(graph_input)
        device = [i for i in snapshot.interrupts if is_device_request(i.value)]
        if not device:
            return Go(None)  # killed mid-step: continue from the last checkpoint
        answers = {c.call_id: c.answer for c in execution.open_calls}
        calls = [
            OpenCall(i.id, call["id"], answers.get(call["id"]))
            for i in device
            for call in i.value["calls"]
        ]
        step = _resume(calls)
        return Wait(device) if isinstance(step, Wait) else step

    async def _stream(
        self,
        run: dict[str, Any],
        graph: Pregel[Any, Any, Any, Any],
        payload: Any,
        config: RunnableConfig,
        context: AgentContext,
    ) -> "StepEnd | None":
        """Stream the step to the run's subscribers and device; where the graph stopped (None
        when the run was cancelled). The state's values are streamed only while someone
        watches the run (each costs a chunk per graph step); a finished run reads its final
        values once, in `_after`."""
        run_id = run["run_id"]
        end = StepEnd()
        modes: list[StreamMode] = ["updates", "custom"]
        if self.events.watched(run_id):
            modes.append("values")
        stream = cast(  # typed as an iterator; it is an async generator, which can be closed
            AsyncGenerator[Any, None],
            graph.astream(
                payload, config, context=context, durability=self.durability, stream_mode=modes
            ),
        )
        async with aclosing(stream):  # stopped here, so its last checkpoint is written here
            async for mode, data in stream:
                self.events.publish(run_id, str(mode), data)
                if mode == "custom" and isinstance(data, Mapping):
                    await self._progress_to_device(run, data)
                elif mode == "updates" and isinstance(data, Mapping) and INTERRUPT in data:
                    end.interrupts.extend(data[INTERRUPT])
                elif mode == "values" and isinstance(data, Mapping):
                    end.values = {k: v for k, v in data.items() if k != INTERRUPT}
                if run_id in self.cancelling:
                    return None
        return end

    async def _after(
        self,
        run: dict[str, Any],
        assistant: dict[str, Any],
        graph: Pregel[Any, Any, Any, Any],
        config: RunnableConfig,
        end: "StepEnd",
        lease: Lease,
        writes: Sequence[Statement],
        *,
        resumed: bool,
    ) -> None:
        """Park the run on its device calls, with the step's checkpoint `writes` in the same
        transaction; or store the checkpoint and end the run."""
        device = [i for i in end.interrupts if is_device_request(i.value)]
        if device:
            await self._park(run, device, lease, resumed=resumed, writes=writes)
            return
        if await self._stored(run, lease.run(*writes)) is None:
            return
        if not end.interrupts and not end.values:  # finished, unwatched: read its values
            end.values = dict((await graph.aget_state(config)).values)
        if end.interrupts:  # a human's turn: the run ends, as in the LangGraph server
            await self._finish(run, "success", {}, None, thread_status="interrupted")
            return
        status, counts, error = outcome_of(end.values)
        if assistant["graph_id"] == WATERMARKED_GRAPH and end.values.get("report"):
            await self.repo.record_assistant_outcome(
                assistant_id=assistant["assistant_id"],
                report=end.values["report"],
            )
        await self._finish(run, status, counts, error)

    async def _park(
        self,
        run: dict[str, Any],
        interrupts: Sequence[Interrupt],
        lease: Lease,
        *,
        resumed: bool = False,
        fresh: bool = True,
        writes: Sequence[Statement] = (),
    ) -> None:
        """Store the pending calls and mark the run interrupted as the thread's lock is let
        go (one network round trip on Postgres), then push them: nothing can resume the run
        before its device has them. `fresh`: the interrupts were raised by the step just run,
        so no call of theirs can have been answered; otherwise (a run caught mid-step by a
        crash) some may have been."""
        device_id = run["device_id"] or self._any_device(run["user_id"])
        calls = [
            (pending.id, call["id"], call["name"], call["args"])
            for pending in interrupts
            for call in pending.value["calls"]
        ]
        here = device_id is not None and self.hub.get(run["user_id"], device_id) is not None
        statements = self.repo.park_statements(
            run=run, calls=calls, device_id=device_id, pushed=here, resumed=resumed
        )
        results = await self._stored(run, lease.release(*writes, *statements))
        if results is None:
            return
        parked = self.repo.parked(results[len(writes) :])
        self.events.status_changed(run["run_id"])
        if not parked:  # it ended while the step ran (cancelled elsewhere): nothing to send
            return
        if fresh:
            if here:  # marked pushed in the park transaction: send them as they are
                for _, call_id, name, args in calls:
                    frame = ToolCallFrame(
                        id=call_id, name=name, args=args, run_context=_run_context(run)
                    )
                    await self.hub.send(run["user_id"], device_id, frame)
            return
        unanswered = await self.repo.pending_for_run(run["run_id"])
        if not unanswered:  # every answer was already in
            self.enqueue(run["run_id"], run["thread_id"])
        await self.push(run["user_id"], unanswered)

    def _any_device(self, user_id: str) -> str | None:
        connected = self.hub.connected_devices(user_id)
        return connected[0] if connected else None

    async def push(self, user_id: str, calls: Sequence[PendingCall]) -> None:
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
            await self.repo.mark_pushed(sent)

    async def _progress_to_device(self, run: dict[str, Any], data: Mapping[str, Any]) -> None:
        device_id = run["device_id"] or self._any_device(run["user_id"])
        if device_id is None or "event" not in data:
            return
        frame = RunProgress(
            run_context=_run_context(run),
            event=str(data["event"]),
            data=dict(data.get("data") or {}),
        )
        await self.hub.send(run["user_id"], device_id, frame)

    async def _finish(
        self,
        run: dict[str, Any],
        status: str,
        counts: dict[str, Any],
        error: str | None,
        *,
        thread_status: str | None = None,
    ) -> None:
        devices = set(await self.repo.run_devices(run["run_id"]))
        if run["device_id"]:
            devices.add(run["device_id"])
        await self.repo.finish_run(
            run=run,
            status=status,
            error=error,
            counts=counts,
            thread_status=thread_status or ("error" if status == "error" else "idle"),
        )
        if error:
            self.events.publish(run["run_id"], "error", {"error": status, "message": error})
        self.events.finish(run["run_id"])
        frame = RunComplete(run_context=_run_context(run), status=status, counts=counts)
        for device_id in devices:
            await self.hub.send(run["user_id"], device_id, frame)
        await self._after_finish(run)

    async def _after_finish(self, run: dict[str, Any]) -> None:
        """A scheduled run's thread goes if its cron says `delete`; its device's next
        scheduled run starts."""
        if run["cron_id"]:
            cron = await self.repo.cron_by_id(run["cron_id"])
            if cron and cron["thread_id"] is None and cron["on_run_completed"] == "delete":
                await self.repo.delete_thread(user_id=run["user_id"], thread_id=run["thread_id"])
                await self.graphs.forget_thread(run["thread_id"])
        if run["device_id"]:
            following = await self.repo.next_device_run(
                user_id=run["user_id"], device_id=run["device_id"]
            )
            if following is not None:
                self.enqueue(following)

    # ── answers and cancellation ─────────────────────────────────────────────

    async def cancel(self, run: dict[str, Any]) -> bool:
        """Stop the run wherever it is and tell its device."""
        devices = set(await self.repo.run_devices(run["run_id"]))
        if not await self.repo.cancel_run(run=run):
            return False
        if run["run_id"] in self.executing:
            # Cooperative: the run stops at its next step boundary. Cancelling the task could
            # interrupt a checkpoint write between its statement and its commit.
            self.cancelling.add(run["run_id"])
        self.events.finish(run["run_id"])
        await self._after_finish(run)
        frame = RunComplete(run_context=_run_context(run), status="cancelled", counts={})
        for device_id in devices | ({run["device_id"]} if run["device_id"] else set()):
            await self.hub.send(run["user_id"], device_id, frame)
        return True


INTERRUPT = "__interrupt__"


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


def _resume(calls: Sequence[OpenCall]) -> Go | Wait:
    """The resume answering every open call, by interrupt then call id; Wait if one is not
    answered yet."""
    resume: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call.answer is None:
            return Wait()
        resume.setdefault(call.interrupt_id, {})[call.call_id] = call.answer
    return Go(Command(resume=resume), resumes=True)


def _run_context(run: Mapping[str, Any]) -> RunContext:
    return RunContext(
        run_id=run["run_id"], thread_id=run["thread_id"], assistant_id=run["assistant_id"]
    )


def run_config(run: Mapping[str, Any], assistant: Mapping[str, Any]) -> RunnableConfig:
    """The graph config of a run: its thread, its id in checkpoint metadata, the assistant's
    configurable values."""
    configurable = {
        **(assistant.get("config") or {}).get("configurable", {}),
        **(run["kwargs"].get("config") or {}).get("configurable", {}),
        "thread_id": run["thread_id"],
    }
    return {
        "configurable": configurable,
        "metadata": {RUN_ID_KEY: run["run_id"], "assistant_id": run["assistant_id"]},
        "recursion_limit": RECURSION_LIMIT,
    }


def run_context(assistant: Mapping[str, Any], kwargs: Mapping[str, Any]) -> AgentContext:
    """The assistant's context, overridden by the run's; raises `ValidationError`."""
    merged = {**(assistant.get("context") or {}), **(kwargs.get("context") or {})}
    return CONTEXT.validate_python(merged)


def command_fields(command: Mapping[str, Any]) -> dict[str, Any]:
    return {k: command[k] for k in ("resume", "update", "goto") if command.get(k) is not None}


def outcome_of(values: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """(run status, counts, error) from a finished graph's values."""
    report = values.get("report")
    if isinstance(report, Mapping):
        counts = {
            "created": report.get("created", {}),
            "updated": report.get("updated", {}),
            "files_processed": report.get("files_processed", 0),
        }
        errors = report.get("errors") or []
        return str(report.get("status", "success")), counts, "; ".join(errors) or None
    outcome = values.get("outcome")
    if isinstance(outcome, Mapping):
        status = {"completed": "success", "partial": "partial"}.get(
            str(outcome.get("status")), "error"
        )
        counts = {k: outcome.get(k) for k in ("total", "completed", "adapted", "failed")}
        return status, counts, outcome.get("error")
    return "success", {}, None
