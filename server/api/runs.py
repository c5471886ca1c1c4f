"""Runs of a thread: create in the background, wait, stream (SSE), get, list, join, cancel.

A run that waits on its device stays one run (status `interrupted`) until the job is done:
`wait` and `join` return its final result however many device round trips it took.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from nodes.bridge import is_device_request
from server.api.assistants import resolve_assistant
from server.api.deps import (
    CurrentUser,
    JSONBodyRoute,
    Metadata,
    PathId,
    ServicesDep,
    checked_config,
    not_found,
)
from server.api.serialize import jsonable
from server.api.threads import user_thread
from server.records import FINAL_STATUSES, Json, Run, Thread
from server.run_config import stored_context
from server.services import Services
from server.storage import runs, threads
from server.storage.runs import ThreadBusy

router = APIRouter(prefix="/threads/{thread_id}/runs", tags=["runs"], route_class=JSONBodyRoute)

NOTHING_TO_RESUME = "Thread {thread_id} has nothing pending to resume."
DEVICE_RESUME = (
    "Thread {thread_id} is waiting for its device; device answers arrive over the device "
    "socket, not as a resume."
)
THREAD_BUSY = "Thread {thread_id} already has an active run ({run_id}); wait for it or cancel it."
POLL_SECONDS = 1.0
StreamMode = Literal[
    "values",
    "updates",
    "custom",
    "messages",
    "events",
    "debug",
    "tasks",
    "checkpoints",
    "messages-tuple",
]


class Command(BaseModel):
    """What to resume a paused thread with."""

    model_config = ConfigDict(extra="ignore")

    resume: Any = None
    update: Any = None
    goto: Any = None


class RunCreate(BaseModel):
    """The body of run creation, wait and stream."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str = Field(min_length=1)
    input: dict[str, Any] | None = None
    command: Command | None = None
    config: Annotated[dict[str, Any], AfterValidator(checked_config)] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    stream_mode: StreamMode | list[StreamMode] = "values"
    if_not_exists: Literal["create", "reject"] = "reject"


async def create_run(svc: Services, user: str, thread_id: str, body: RunCreate) -> Run:
    """Validate and store a run (404 unknown ids, 409 conflicts, 422 bad fields)."""
    thread = await threads.get(svc.db, user_id=user, thread_id=thread_id)
    if thread is None and body.if_not_exists == "create":
        thread, _ = await threads.create(svc.db, user_id=user, thread_id=thread_id)
    if thread is None:
        raise not_found("Thread", thread_id)
    assistant = await resolve_assistant(svc, user, body.assistant_id)
    try:
        context = stored_context(body.context, under=assistant.context)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", "context", *e["loc"])} for e in exc.errors()]
        ) from exc
    active = await runs.active(svc.db, thread_id)
    if active is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            THREAD_BUSY.format(thread_id=thread_id, run_id=active.run_id),
        )
    if body.command is not None and body.command.resume is not None:
        await _check_resumable(svc, thread, thread_id)
    metadata = {
        **thread.metadata,
        "graph_id": assistant.graph_id,
        "assistant_id": assistant.assistant_id,
    }
    await threads.set_metadata(svc.db, thread_id=thread_id, metadata=metadata)
    kwargs = body.model_dump(
        include={"input", "command", "config", "stream_mode"}, exclude_none=True
    )
    kwargs["context"] = context
    try:
        return await runs.create(
            svc.db,
            user_id=user,
            thread_id=thread_id,
            assistant_id=assistant.assistant_id,
            kwargs=kwargs,
            metadata=body.metadata,
            device_id=(assistant.context or {}).get("device_id") or None,
        )
    except ThreadBusy:
        raise HTTPException(
            status.HTTP_409_CONFLICT, THREAD_BUSY.format(thread_id=thread_id, run_id="another run")
        ) from None


async def _check_resumable(svc: Services, thread: Thread, thread_id: str) -> None:
    graph_id = thread.graph_id
    if graph_id is None or graph_id not in svc.graphs:
        raise HTTPException(status.HTTP_409_CONFLICT, NOTHING_TO_RESUME.format(thread_id=thread_id))
    snapshot = await svc.graphs.for_thread(graph_id, thread_id).aget_state(
        {"configurable": {"thread_id": thread_id}}
    )
    if not snapshot.interrupts:
        raise HTTPException(status.HTTP_409_CONFLICT, NOTHING_TO_RESUME.format(thread_id=thread_id))
    if all(is_device_request(i.value) for i in snapshot.interrupts):
        raise HTTPException(status.HTTP_409_CONFLICT, DEVICE_RESUME.format(thread_id=thread_id))


def _location(run: Run) -> dict[str, str]:
    thread = quote(run.thread_id, safe="")
    return {"Content-Location": f"/threads/{thread}/runs/{run.run_id}"}


async def final_run(svc: Services, run_id: str) -> Run | None:
    """Wait until the run ends (device round trips and restarts included); None if it was
    deleted meanwhile."""
    while True:
        run = await runs.get(svc.db, run_id)
        if run is None or run.status in FINAL_STATUSES:
            return run
        await svc.events.wait_for_change(run_id, POLL_SECONDS)


async def final_values(svc: Services, run: Run) -> Any:
    """The thread's values once the run ended; an error as the LangGraph server shapes it."""
    done = await final_run(svc, run.run_id)
    if done is not None and done.status == "error":
        return {"__error__": {"error": "RunError", "message": done.error or "failed"}}
    thread = await threads.get(svc.db, user_id=run.user_id, thread_id=run.thread_id)
    graph_id = thread.graph_id if thread else None
    if graph_id is None or graph_id not in svc.graphs:
        return {}
    snapshot = await svc.graphs.for_thread(graph_id, run.thread_id).aget_state(
        {"configurable": {"thread_id": run.thread_id}}
    )
    return jsonable(snapshot.values)


@router.post("")
async def create(
    thread_id: PathId, body: RunCreate, user: CurrentUser, svc: ServicesDep
) -> Response:
    """Create a run in the background."""
    run = await create_run(svc, user, thread_id, body)
    svc.runs.enqueue(run.run_id)
    return Response(json.dumps(run.api()), media_type="application/json", headers=_location(run))


@router.post("/wait")
async def wait(thread_id: PathId, body: RunCreate, user: CurrentUser, svc: ServicesDep) -> Response:
    """Create a run and answer with the thread's values when it has ended."""
    run = await create_run(svc, user, thread_id, body)
    svc.runs.enqueue(run.run_id)
    values = await final_values(svc, run)
    return Response(json.dumps(values), media_type="application/json", headers=_location(run))


@router.post("/stream")
async def stream(
    thread_id: PathId, body: RunCreate, user: CurrentUser, svc: ServicesDep
) -> StreamingResponse:
    """Create a run and stream its events over SSE until it ends."""
    run = await create_run(svc, user, thread_id, body)
    modes = body.stream_mode if isinstance(body.stream_mode, list) else [body.stream_mode]
    queue = svc.events.subscribe(run.run_id)
    svc.runs.enqueue(run.run_id)
    return StreamingResponse(
        _sse(svc, run, set(modes), queue), media_type="text/event-stream", headers=_location(run)
    )


async def _sse(svc: Services, run: Run, modes: set[str], queue: Any) -> AsyncIterator[str]:
    run_id = run.run_id
    try:
        yield _event("metadata", {"run_id": run_id, "attempt": 1})
        while True:
            try:
                event, data = await _next(queue)
            except TimeoutError:
                current = await runs.get(svc.db, run_id)
                if current is None or current.status in FINAL_STATUSES:
                    return
                continue
            if event == "end":
                return
            if event in modes or event == "error":
                yield _event(event, jsonable(data))
    finally:
        svc.events.unsubscribe(run_id, queue)


async def _next(queue: Any) -> tuple[str, Any]:
    result: tuple[str, Any] = await asyncio.wait_for(queue.get(), POLL_SECONDS * 5)
    return result


def _event(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("")
async def list_runs(
    thread_id: PathId,
    user: CurrentUser,
    svc: ServicesDep,
    limit: int = Query(default=10, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
    status_filter: str | None = Query(default=None, alias="status"),
) -> list[Json]:
    await user_thread(svc, user, thread_id)
    found = await runs.of_thread(
        svc.db, user_id=user, thread_id=thread_id, limit=limit, offset=offset, status=status_filter
    )
    return [r.api() for r in found]


async def user_run(svc: Services, user: str, thread_id: str, run_id: str) -> Run:
    run = await runs.get_of_user(svc.db, user_id=user, thread_id=thread_id, run_id=run_id)
    if run is None:
        raise not_found("Run", run_id)
    return run


@router.get("/{run_id}")
async def get_run(thread_id: PathId, run_id: PathId, user: CurrentUser, svc: ServicesDep) -> Json:
    return (await user_run(svc, user, thread_id, run_id)).api()


@router.get("/{run_id}/join")
async def join(thread_id: PathId, run_id: PathId, user: CurrentUser, svc: ServicesDep) -> Any:
    """Wait for the run to end; the thread's values."""
    run = await user_run(svc, user, thread_id, run_id)
    return await final_values(svc, run)


@router.post("/{run_id}/cancel")
async def cancel(
    thread_id: PathId,
    run_id: PathId,
    user: CurrentUser,
    svc: ServicesDep,
    wait: int = Query(default=0),
    action: str = Query(default="interrupt"),
) -> Response:
    """Stop the run and tell its device; cancelling a finished run is a no-op."""
    run = await user_run(svc, user, thread_id, run_id)
    await svc.runs.cancel(run)
    if wait:
        done = await final_run(svc, run_id)
        return Response(json.dumps(done.api() if done else {}), media_type="application/json")
    return Response(status_code=status.HTTP_202_ACCEPTED)
