"""Records the server's tests start from, made through `server.storage`."""

from typing import Any

from checkpoints import Database
from server.records import Run
from server.storage import assistants, bridge, runs, threads


async def agentic_run(
    db: Database,
    *,
    user_id: str,
    device_id: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Run:
    """A pending run of a new `agentic_loop` assistant (bound to `device_id`, if given) on a
    new thread of `user_id`."""
    context = {"device_id": device_id} if device_id else None
    assistant, _ = await assistants.create(
        db, user_id=user_id, graph_id="agentic_loop", context=context
    )
    thread, _ = await threads.create(db, user_id=user_id)
    assert thread is not None
    return await runs.create(
        db,
        user_id=user_id,
        thread_id=thread.thread_id,
        assistant_id=assistant.assistant_id,
        kwargs=kwargs or {},
        metadata=None,
        device_id=device_id,
    )


async def parked(db: Database, **park: Any) -> bool:
    """`bridge.park(**park)` run on its own, as a step runs it when it lets its lock go;
    whether the run was parked."""
    query = bridge.park(db.kind, **park)
    return query.read(await db.results(*query.statements))
