"""Runs waiting to execute, and the slots that bound how many execute at once.

A run is queued once however often it is enqueued, and started when a slot is free. The
answer path may take a slot at once (`try_slot`) to start a step without a trip through the
queue; whatever holds a slot gives it back when its task ends."""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Work = Coroutine[Any, Any, None]


class RunQueue:
    """A queue of run ids, a dispatcher, and `workers` slots."""

    def __init__(self, workers: int, execute: Callable[[str], Work]) -> None:
        self._execute = execute
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        #: The runs waiting in the queue.
        self.queued: set[str] = set()
        #: One per run executing at once, queued or started straight from its last answer.
        self.slots = asyncio.Semaphore(workers)
        self._dispatcher: asyncio.Task[None] | None = None
        #: The task of each run executing in this process.
        self.executing: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="run-dispatcher")

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)

    def enqueue(self, run_id: str) -> None:
        """Queue a run once: a run already waiting is not queued again."""
        if run_id in self.queued:
            return
        self.queued.add(run_id)
        self._queue.put_nowait(run_id)

    def qsize(self) -> int:
        return self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()

    async def try_slot(self) -> bool:
        """Take a slot if one is free now, without waiting (an acquire of a free semaphore
        does not suspend); give it back through `spawn` or `release_slot`."""
        if self.slots.locked():
            return False
        await self.slots.acquire()
        return True

    def release_slot(self) -> None:
        self.slots.release()

    def spawn(self, run_id: str, work: Work) -> None:
        """Run `work` as the run's task, holding a slot taken before; the slot goes back
        when the task ends."""
        task = asyncio.create_task(work, name=f"run-{run_id}")
        self.executing[run_id] = task
        task.add_done_callback(lambda done: self._ended(run_id, done))

    async def _dispatch(self) -> None:
        """Start each queued run as soon as a slot is free."""
        while True:
            run_id = await self._queue.get()
            self.queued.discard(run_id)
            await self.slots.acquire()
            self.spawn(run_id, self._execute(run_id))

    def _ended(self, run_id: str, task: "asyncio.Task[None]") -> None:
        if self.executing.get(run_id) is task:
            del self.executing[run_id]
        self.slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("run %s: its task failed: %r", run_id, exc, exc_info=exc)
