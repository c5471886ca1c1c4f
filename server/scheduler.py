"""Cron firing: due schedules become runs, exactly once across server processes.

Each tick claims due crons with `FOR UPDATE SKIP LOCKED` and, in the same transaction,
creates each one's run and moves its next fire time past *now*, so missed ticks coalesce into
one run and a process that dies after claiming either committed the run or left the cron
due. A cron whose device is offline stays due and is marked overdue; it fires when the device
says `device_hello`. Device presence lives in the database (`devices.online_until`, renewed
every tick by the process holding the socket), so every process sees every device.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from checkpoints import Database
from checkpoints.clock import iso, utcnow
from checkpoints.clock import now as now_text
from server.crontab import next_fire, parse_schedule
from server.hub import DeviceHub
from server.runs import RunManager

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

SELECT_DUE = (
    "SELECT cron_id, user_id, assistant_id, thread_id, schedule, timezone, end_time, payload, "
    "on_run_completed FROM crons WHERE enabled = 1 AND next_run_at IS NOT NULL "
    "AND next_run_at <= ? ORDER BY next_run_at LIMIT ? FOR UPDATE SKIP LOCKED"
)
SELECT_ASSISTANT = "SELECT graph_id, context FROM assistants WHERE assistant_id = ? AND user_id = ?"
ONLINE_DEVICES = (
    "SELECT device_id FROM devices WHERE user_id = ? AND online_until IS NOT NULL "
    "AND online_until > ? ORDER BY device_id"
)
ACTIVE_ON_THREAD = (
    "SELECT 1 FROM runs WHERE thread_id = ? AND status IN ('pending', 'running', 'interrupted')"
)
INSERT_THREAD = (
    "INSERT INTO threads (thread_id, user_id, status, metadata, created_at, updated_at) "
    "VALUES (?, ?, 'busy', ?, ?, ?)"
)
SET_THREAD_BUSY = "UPDATE threads SET status = 'busy', updated_at = ? WHERE thread_id = ?"
INSERT_RUN = (
    "INSERT INTO runs (run_id, thread_id, assistant_id, user_id, status, kwargs, metadata, "
    "device_id, created_at, updated_at, cron_id) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)"
)
ADVANCE = (
    "UPDATE crons SET next_run_at = ?, last_run_at = ?, overdue = 0, updated_at = ? "
    "WHERE cron_id = ?"
)
MARK_OVERDUE = "UPDATE crons SET overdue = 1 WHERE cron_id = ?"
DISABLE = "UPDATE crons SET enabled = 0, next_run_at = NULL, updated_at = ? WHERE cron_id = ?"
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
        await self.runs.repo.set_online(user_id=user_id, device_id=device_id, until=until)
        await self.tick()

    async def device_disconnected(self, user_id: str, device_id: str) -> None:
        if self.hub.get(user_id, device_id) is None:
            await self.runs.repo.set_online(user_id=user_id, device_id=device_id, until=None)

    async def tick(self) -> list[str]:
        """Renew presence, fire due crons, and queue runs another process left pending (or
        answered yet not resumed)."""
        async with self._tick_lock:
            now = self.clock()
            until = iso(now + timedelta(seconds=self.presence_ttl))
            for user_id, device_id in self.hub.connected():
                await self.runs.repo.set_online(user_id=user_id, device_id=device_id, until=until)
                unpushed = await self.runs.repo.unpushed_for_device(
                    user_id=user_id, device_id=device_id
                )
                await self.runs.push(user_id, unpushed)
            fired = await self._fire_due(now)
            for run_id in fired:
                self.runs.enqueue(run_id)
            stale = iso(now - timedelta(seconds=self.stale_after))
            for run_id in [
                *await self.runs.repo.stale_pending_runs(before=stale),
                *await self.runs.repo.stale_answered_runs(before=stale),
            ]:
                if run_id not in fired and run_id not in self.runs.executing:
                    self.runs.enqueue(run_id)
            return fired

    async def _fire_due(self, now: datetime) -> list[str]:
        fired: list[str] = []
        stamp = iso(now)
        async with self.db.transaction() as tx:
            for cron in await tx.fetch(SELECT_DUE, stamp, CLAIM_BATCH):
                assistant = await tx.fetch(SELECT_ASSISTANT, cron["assistant_id"], cron["user_id"])
                schedule = parse_schedule(
                    cron["schedule"],
                    cron["timezone"],
                    datetime.fromisoformat(cron["end_time"]) if cron["end_time"] else None,
                )
                following = next_fire(schedule, now)
                if not assistant:
                    await tx.run(DISABLE, stamp, cron["cron_id"])
                    continue
                context = json.loads(assistant[0]["context"] or "{}")
                online = [
                    r["device_id"] for r in await tx.fetch(ONLINE_DEVICES, cron["user_id"], stamp)
                ]
                device_id = self._device_for(cron["user_id"], context, online)
                if device_id is None:
                    if not self._online_elsewhere(context, online):
                        await tx.run(MARK_OVERDUE, cron["cron_id"])
                    continue  # left due: the process holding the device's socket fires it
                run_id = await self._create_run(tx, cron, assistant[0], device_id, stamp)
                await tx.run(
                    ADVANCE,
                    iso(following) if following else None,
                    stamp,
                    stamp,
                    cron["cron_id"],
                )
                if run_id is not None:
                    fired.append(run_id)
        return fired

    def _device_for(self, user_id: str, context: dict[str, Any], online: list[str]) -> str | None:
        """The device a scheduled run goes to: the bound one, else any of the user's; only
        a device connected to this process, so its calls can be pushed right away."""
        here = set(self.hub.connected_devices(user_id))
        bound = context.get("device_id")
        if bound:
            return str(bound) if bound in online and bound in here else None
        candidates = [d for d in online if d in here]
        return str(candidates[0]) if candidates else None

    @staticmethod
    def _online_elsewhere(context: dict[str, Any], online: list[str]) -> bool:
        bound = context.get("device_id")
        return bound in online if bound else bool(online)

    async def _create_run(
        self, tx: Any, cron: dict[str, Any], assistant: dict[str, Any], device_id: str, stamp: str
    ) -> str | None:
        """The tick's run; None when the cron's thread is still busy with its last one (the
        tick coalesces into that run)."""
        thread_id = cron["thread_id"]
        metadata = {
            "graph_id": assistant["graph_id"],
            "assistant_id": cron["assistant_id"],
            "cron_id": cron["cron_id"],
        }
        if thread_id is None:
            thread_id = str(uuid.uuid4())
            await tx.run(
                INSERT_THREAD, thread_id, cron["user_id"], json.dumps(metadata), stamp, stamp
            )
        elif await tx.fetch(ACTIVE_ON_THREAD, thread_id):
            return None
        else:
            await tx.run(SET_THREAD_BUSY, stamp, thread_id)
        payload = json.loads(cron["payload"])
        kwargs = {k: payload[k] for k in ("input", "context", "config") if payload.get(k)}
        run_id = str(uuid.uuid4())
        created = now_text()
        await tx.run(
            INSERT_RUN,
            run_id,
            thread_id,
            cron["assistant_id"],
            cron["user_id"],
            json.dumps(kwargs),
            json.dumps(payload.get("metadata") or {}),
            device_id,
            created,
            created,
            cron["cron_id"],
        )
        return run_id
