"""Cron firing: due schedules become runs, exactly once across server processes.

Each tick claims due crons with `FOR UPDATE SKIP LOCKED` and, in the same transaction,
creates each one's run and moves its next fire time past *now*, so missed ticks coalesce into
one run and a process that dies after claiming either committed the run or left the cron
due. A cron whose device is offline stays due and is marked overdue; it fires when the device
says `device_hello`. Device presence lives in the database (`devices.online_until`, renewed
every tick by the process holding the socket), so every process sees every device.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from checkpoints import Database
from checkpoints.clock import iso, utcnow
from checkpoints.database import Transaction
from server.crontab import Schedule, next_fire, parse_schedule
from server.hub import DeviceHub
from server.records import Assistant, Cron, Json
from server.runs import RunManager
from server.storage import accounts, assistants, bridge, crons, runs, threads

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

CLAIM_BATCH = 100


class Scheduler:
    """Fires due crons on every tick; `tick()` is also called on `device_hello`."""

    def __init__(
        self,
        *,
        db: Database,
        runs: RunManager,
        hub: DeviceHub,
        clock: Clock = utcnow,
        interval: float = 5.0,
        presence_ttl: float = 30.0,
        stale_after: float = 60.0,
    ) -> None:
        self.db, self.runs, self.hub, self.clock = db, runs, hub, clock
        self.interval, self.presence_ttl, self.stale_after = interval, presence_ttl, stale_after
        self._task: asyncio.Task[None] | None = None
        self._tick_lock = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the service's boundary: any failure, try next tick
                log.warning("scheduler tick failed: %r", exc, exc_info=exc)
            await asyncio.sleep(self.interval)

    async def device_connected(self, user_id: str, device_id: str) -> None:
        """Mark the device present, then fire what became due (overdue crons included)."""
        until = iso(self.clock() + timedelta(seconds=self.presence_ttl))
        await accounts.set_online(self.db, user_id=user_id, device_id=device_id, until=until)
        await self.tick()

    async def device_disconnected(self, user_id: str, device_id: str) -> None:
        if self.hub.get(user_id, device_id) is None:
            await accounts.set_online(self.db, user_id=user_id, device_id=device_id, until=None)

    async def tick(self) -> list[str]:
        """Renew presence, fire due crons, and queue runs another process left pending (or
        answered yet not resumed)."""
        async with self._tick_lock:
            now = self.clock()
            until = iso(now + timedelta(seconds=self.presence_ttl))
            for user_id, device_id in self.hub.connected():
                await accounts.set_online(
                    self.db, user_id=user_id, device_id=device_id, until=until
                )
                unpushed = await bridge.unpushed_for_device(
                    self.db, user_id=user_id, device_id=device_id
                )
                await self.runs.push(user_id, unpushed)
            fired = await self._fire_due(now)
            for run_id in fired:
                self.runs.enqueue(run_id)
            stale = iso(now - timedelta(seconds=self.stale_after))
            for run_id in [
                *await runs.stale_pending(self.db, before=stale),
                *await runs.stale_answered(self.db, before=stale),
            ]:
                if run_id not in fired and run_id not in self.runs.executing:
                    self.runs.enqueue(run_id)
            return fired

    async def _fire_due(self, now: datetime) -> list[str]:
        fired: list[str] = []
        stamp = iso(now)
        async with self.db.transaction() as tx:
            for cron in await crons.claim_due(tx, at=stamp, limit=CLAIM_BATCH):
                assistant = await assistants.get(
                    tx, user_id=cron.user_id, assistant_id=cron.assistant_id
                )
                if assistant is None:
                    await crons.disable(tx, cron, at=stamp)
                    continue
                online = await accounts.online_devices(tx, user_id=cron.user_id, at=stamp)
                device_id = self._device_for(cron.user_id, assistant.context, online)
                if device_id is None:
                    if not self._online_elsewhere(assistant.context, online):
                        await crons.mark_overdue(tx, cron)
                    continue  # left due: the process holding the device's socket fires it
                run_id = await self._create_run(tx, cron, assistant, device_id)
                following = next_fire(_schedule_of(cron), now)
                await crons.advance(
                    tx, cron, fired_at=stamp, following=iso(following) if following else None
                )
                if run_id is not None:
                    fired.append(run_id)
        return fired

    def _device_for(self, user_id: str, context: Json, online: list[str]) -> str | None:
        """The device a scheduled run goes to: the bound one, else any of the user's; only
        a device connected to this process, so its calls can be pushed right away."""
        here = set(self.hub.connected_devices(user_id))
        bound = context.get("device_id")
        if bound:
            return str(bound) if bound in online and bound in here else None
        candidates = [d for d in online if d in here]
        return str(candidates[0]) if candidates else None

    @staticmethod
    def _online_elsewhere(context: Json, online: list[str]) -> bool:
        bound = context.get("device_id")
        return bound in online if bound else bool(online)

    async def _create_run(
        self, tx: Transaction, cron: Cron, assistant: Assistant, device_id: str
    ) -> str | None:
        """The tick's run; None when the cron's thread is still busy with its last one (the
        tick coalesces into that run)."""
        thread_id = cron.thread_id
        if thread_id is None:
            thread_id = str(uuid.uuid4())
            metadata = {
                "graph_id": assistant.graph_id,
                "assistant_id": cron.assistant_id,
                "cron_id": cron.cron_id,
            }
            await threads.insert(tx, user_id=cron.user_id, thread_id=thread_id, metadata=metadata)
        elif await runs.active(tx, thread_id) is not None:
            return None
        payload = cron.payload
        return await runs.insert(
            tx,
            user_id=cron.user_id,
            thread_id=thread_id,
            assistant_id=cron.assistant_id,
            kwargs={k: payload[k] for k in ("input", "context", "config") if payload.get(k)},
            metadata=payload.get("metadata") or {},
            device_id=device_id,
            cron_id=cron.cron_id,
        )


def _schedule_of(cron: Cron) -> Schedule:
    return parse_schedule(
        cron.schedule,
        cron.timezone,
        datetime.fromisoformat(cron.end_time) if cron.end_time else None,
    )
