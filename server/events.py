"""In-process pub/sub of run events, for SSE streams and `join`/`wait`."""

import asyncio
from collections import defaultdict
from typing import Any

END = ("end", None)


class RunEvents:
    """Subscribers per run; each gets every event published after it subscribed."""

    def __init__(self) -> None:
        self._queues: dict[str, list[asyncio.Queue[tuple[str, Any]]]] = defaultdict(list)
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def subscribe(self, run_id: str) -> asyncio.Queue[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queues[run_id].append(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        queues = self._queues.get(run_id, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self._queues.pop(run_id, None)

    def watched(self, run_id: str) -> bool:
        """Whether anyone streams this run now."""
        return bool(self._queues.get(run_id))

    def publish(self, run_id: str, event: str, data: Any) -> None:
        for queue in self._queues.get(run_id, []):
            queue.put_nowait((event, data))

    def status_changed(self, run_id: str) -> None:
        """Wake whoever waits on this run's status (join, wait, streams)."""
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    def finish(self, run_id: str) -> None:
        self.publish(run_id, *END)
        self.status_changed(run_id)

    async def wait_for_change(self, run_id: str, timeout: float) -> None:
        """Return when the run's status may have changed, or after `timeout` seconds (another
        server process may have changed it: the caller re-reads the database)."""
        event = self._changed[run_id]
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return
