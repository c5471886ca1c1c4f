"""Crons in the LangGraph server's shape: a schedule that starts runs of an assistant."""

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from checkpoints.clock import iso, utcnow
from server.api.assistants import resolve_assistant
from server.api.deps import CurrentUser, JSONBodyRoute, Metadata, PathId, ServicesDep, not_found
from server.api.threads import user_thread
from server.crontab import Schedule, ScheduleError, next_fire, parse_schedule
from server.records import Cron, Json
from server.storage import crons

router = APIRouter(tags=["crons"], route_class=JSONBodyRoute)


class CronCreate(BaseModel):
    """POST /runs/crons and /threads/{thread_id}/runs/crons."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str = Field(min_length=1)
    schedule: str = Field(description="5 fields: minute hour day-of-month month day-of-week.")
    timezone: str | None = Field(default=None, description="IANA name; default UTC.")
    end_time: datetime | None = None
    enabled: bool = True
    input: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    metadata: Metadata = Field(default_factory=dict)
    on_run_completed: Literal["keep", "delete"] = "delete"


class CronPatch(BaseModel):
    """PATCH /runs/crons/{cron_id}: omitted fields stay as they are."""

    model_config = ConfigDict(extra="ignore")

    schedule: str | None = None
    timezone: str | None = None
    end_time: datetime | None = None
    enabled: bool | None = None
    input: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    metadata: Metadata | None = None
    on_run_completed: Literal["keep", "delete"] | None = None


class CronSearch(BaseModel):
    """POST /runs/crons/search and /runs/crons/count."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


def checked_schedule(expr: str, timezone: str | None, end_time: datetime | None) -> Schedule:
    """422 naming the problem (syntax, an impossible date, an unknown timezone)."""
    try:
        return parse_schedule(expr, timezone or "UTC", end_time)
    except ScheduleError as exc:
        raise RequestValidationError(
            [{"loc": ("body", exc.field), "msg": str(exc), "type": "value_error"}]
        ) from exc


def next_run(schedule: Schedule, enabled: bool) -> str | None:
    following = next_fire(schedule, utcnow()) if enabled else None
    return iso(following) if following else None


async def _create(svc: ServicesDep, user: str, body: CronCreate, thread_id: str | None) -> Json:
    assistant = await resolve_assistant(svc, user, body.assistant_id)
    schedule = checked_schedule(body.schedule, body.timezone, body.end_time)
    payload = {
        k: v
        for k, v in body.model_dump(include={"input", "context", "config"}).items()
        if v is not None
    }
    stamp = iso(utcnow())  # the store sets its own times
    cron = Cron(
        cron_id=str(uuid.uuid4()),
        user_id=user,
        assistant_id=assistant.assistant_id,
        thread_id=thread_id,
        schedule=schedule.expr,
        timezone=schedule.timezone,
        end_time=iso(schedule.end_time) if schedule.end_time else None,
        enabled=body.enabled,
        payload=payload,
        metadata=body.metadata,
        on_run_completed="keep" if thread_id else body.on_run_completed,
        next_run_at=next_run(schedule, body.enabled),
        overdue=False,
        last_run_at=None,
        created_at=stamp,
        updated_at=stamp,
    )
    return (await crons.create(svc.db, cron)).api()


@router.post("/runs/crons")
async def create_cron(body: CronCreate, user: CurrentUser, svc: ServicesDep) -> Json:
    """A schedule that starts each run on a new thread (kept or deleted after the run)."""
    return await _create(svc, user, body, None)


@router.post("/threads/{thread_id}/runs/crons")
async def create_thread_cron(
    thread_id: PathId, body: CronCreate, user: CurrentUser, svc: ServicesDep
) -> Json:
    """A schedule that starts each run on this thread."""
    await user_thread(svc, user, thread_id)
    return await _create(svc, user, body, thread_id)


@router.patch("/runs/crons/{cron_id}")
async def update_cron(
    cron_id: PathId, body: CronPatch, user: CurrentUser, svc: ServicesDep
) -> Json:
    """Change a schedule, or enable / disable it; the next run is computed again."""
    cron = await crons.get(svc.db, user_id=user, cron_id=cron_id)
    if cron is None:
        raise not_found("Cron", cron_id)
    changes = body.model_dump(exclude_unset=True)
    end_time = changes.get("end_time", cron.end_time)
    if isinstance(end_time, str):
        end_time = datetime.fromisoformat(end_time)
    schedule = checked_schedule(
        changes.get("schedule") or cron.schedule,
        changes.get("timezone") or cron.timezone,
        end_time,
    )
    enabled = changes["enabled"] if changes.get("enabled") is not None else cron.enabled
    payload = {
        **cron.payload,
        **{k: changes[k] for k in ("input", "context", "config") if changes.get(k) is not None},
    }
    updated = replace(
        cron,
        schedule=schedule.expr,
        timezone=schedule.timezone,
        end_time=iso(schedule.end_time) if schedule.end_time else None,
        enabled=enabled,
        payload=payload,
        metadata={**cron.metadata, **(changes.get("metadata") or {})},
        on_run_completed=changes.get("on_run_completed") or cron.on_run_completed,
        next_run_at=next_run(schedule, enabled),
    )
    found = await crons.update(svc.db, updated)
    if found is None:  # deleted meanwhile
        raise not_found("Cron", cron_id)
    return found.api()


@router.delete("/runs/crons/{cron_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_cron(cron_id: PathId, user: CurrentUser, svc: ServicesDep) -> Response:
    if not await crons.delete(svc.db, user_id=user, cron_id=cron_id):
        raise not_found("Cron", cron_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/runs/crons/search")
async def search_crons(body: CronSearch, user: CurrentUser, svc: ServicesDep) -> list[Json]:
    found = await crons.search(
        svc.db,
        user_id=user,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        enabled=body.enabled,
    )
    return [c.api() for c in found[body.offset : body.offset + body.limit]]


@router.post("/runs/crons/count")
async def count_crons(body: CronSearch, user: CurrentUser, svc: ServicesDep) -> int:
    found = await crons.search(
        svc.db,
        user_id=user,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        enabled=body.enabled,
    )
    return len(found)
