"""Threads: create, get, state, history, search, delete."""

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from graphs import RECURSION_LIMIT
from server.api.deps import (
    ID_PATTERN,
    CurrentUser,
    JSONBodyRoute,
    Metadata,
    PathId,
    ServicesDep,
    not_found,
)
from server.api.serialize import empty_state, thread_state
from server.records import Json, Thread
from server.services import Services
from server.storage import runs, threads

router = APIRouter(prefix="/threads", tags=["threads"], route_class=JSONBodyRoute)

THREAD_EXISTS = "Thread {thread_id} already exists."
THREAD_BUSY = "Thread {thread_id} has an active run; cancel it first."


class ThreadCreate(BaseModel):
    """POST /threads."""

    model_config = ConfigDict(extra="ignore")

    thread_id: str | None = Field(default=None, pattern=ID_PATTERN)
    metadata: Metadata = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadSearch(BaseModel):
    """POST /threads/search."""

    model_config = ConfigDict(extra="ignore")

    metadata: Metadata | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class HistoryQuery(BaseModel):
    """POST /threads/{id}/history."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=10, ge=1, le=1000)


async def user_thread(svc: Services, user: str, thread_id: str) -> Thread:
    thread = await threads.get(svc.db, user_id=user, thread_id=thread_id)
    if thread is None:
        raise not_found("Thread", thread_id)
    return thread


def thread_graph(svc: Services, thread: Thread) -> Any:
    return svc.graphs.get_for_thread(thread.graph_id, thread.thread_id)


@router.post("")
async def create_thread(body: ThreadCreate, user: CurrentUser, svc: ServicesDep) -> Json:
    thread, created = await threads.create(
        svc.db, user_id=user, thread_id=body.thread_id, metadata=body.metadata
    )
    if thread is None or (not created and body.if_exists == "raise"):
        raise HTTPException(
            status.HTTP_409_CONFLICT, THREAD_EXISTS.format(thread_id=body.thread_id)
        )
    return thread.api()


@router.post("/search")
async def search_threads(body: ThreadSearch, user: CurrentUser, svc: ServicesDep) -> list[Json]:
    found = await threads.search(
        svc.db,
        user_id=user,
        status=body.status,
        metadata=body.metadata,
        limit=body.limit,
        offset=body.offset,
    )
    return [t.api() for t in found]


@router.get("/{thread_id}")
async def get_thread(thread_id: PathId, user: CurrentUser, svc: ServicesDep) -> Json:
    thread = await user_thread(svc, user, thread_id)
    graph = thread_graph(svc, thread)
    if graph is None:
        return thread.api()
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    state = thread_state(snapshot, thread_id)
    interrupts = {i["id"]: [i] for i in state["interrupts"]}
    return thread.api(values=state["values"], interrupts=interrupts)


@router.delete("/{thread_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_thread(thread_id: PathId, user: CurrentUser, svc: ServicesDep) -> Response:
    await user_thread(svc, user, thread_id)
    if await runs.active(svc.db, thread_id) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, THREAD_BUSY.format(thread_id=thread_id))
    await threads.delete(svc.db, user_id=user, thread_id=thread_id)
    await svc.graphs.forget_thread(thread_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{thread_id}/state")
async def get_state(thread_id: PathId, user: CurrentUser, svc: ServicesDep) -> dict[str, Any]:
    """The thread's latest checkpoint: values, next nodes, pending interrupts."""
    thread = await user_thread(svc, user, thread_id)
    graph = thread_graph(svc, thread)
    if graph is None:
        return empty_state(thread_id)
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    return thread_state(snapshot, thread_id)


@router.post("/{thread_id}/history")
async def get_history(
    thread_id: PathId, body: HistoryQuery, user: CurrentUser, svc: ServicesDep
) -> list[dict[str, Any]]:
    """Past checkpoints, newest first."""
    thread = await user_thread(svc, user, thread_id)
    graph = thread_graph(svc, thread)
    if graph is None:
        return []
    config = {"configurable": {"thread_id": thread_id}, "recursion_limit": RECURSION_LIMIT}
    return [
        thread_state(snapshot, thread_id)
        async for snapshot in graph.aget_state_history(config, limit=body.limit)
    ]
