"""Records the server's tests start from, made through the repository."""

from typing import Any

from server.repository import Repository


async def agentic_run(
    repo: Repository,
    *,
    user_id: str,
    device_id: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pending run of a new `agentic_loop` assistant (bound to `device_id`, if given) on a
    new thread of `user_id`."""
    context = {"device_id": device_id} if device_id else None
    assistant, _ = await repo.create_assistant(
        user_id=user_id, graph_id="agentic_loop", context=context
    )
    thread, _ = await repo.create_thread(user_id=user_id)
    assert thread is not None
    return await repo.create_run(
        user_id=user_id,
        thread_id=thread["thread_id"],
        assistant_id=assistant["assistant_id"],
        kwargs=kwargs or {},
        metadata=None,
        device_id=device_id,
    )


async def parked(repo: Repository, **park: Any) -> bool:
    """`Repository.park_statements(**park)` run on their own, as a step runs them when it
    lets its lock go; whether the run was parked."""
    return repo.parked(await repo.db.results(*repo.park_statements(**park)))
