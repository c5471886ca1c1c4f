"""The local agent's working data, kept in LangGraph's store rather than in its state: the
waves of chunks still to run and each chunk's outcome.

Every device round trip writes a checkpoint, and the SQLite saver writes the whole state
each time, so a plan or a list of outcomes held in the state is written once per round trip:
a cost that grows with the square of the folder. In the store each is written once.

Items live under `("threads", <thread id>, "local_agent", <run key>)`. Writes are
idempotent (a step replayed after a crash writes the same keys again); a run deletes what
its thread's earlier runs left as it begins (`forget_earlier_runs`); the server deletes a
thread's namespace with the thread (`server.graphs.GraphRegistry.forget_thread`), and
`relaygraph run` once the run is recorded.
"""

from collections.abc import Sequence
from typing import cast

from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore, GetOp, PutOp

from nodes.context import AgentContext
from nodes.state import Chunk, ChunkOutcome

NO_STORE = (
    "The local agent keeps its chunk plan in LangGraph's store, and this graph was compiled "
    "without one: compile it with a store (graph.copy(update={'store': ...}))."
)
#: Items read or deleted per store call.
PAGE = 100


def thread_namespace(thread_id: str) -> tuple[str, ...]:
    """Where graphs keep a thread's working data; deleted with the thread."""
    return ("threads", thread_id)


def run_namespace(run_key: str) -> tuple[str, ...]:
    """The namespace of this run of the local agent on the current thread."""
    return (*_agent_namespace(), run_key)


def store_of(runtime: Runtime[AgentContext]) -> BaseStore:
    if runtime.store is None:
        raise RuntimeError(NO_STORE)
    return runtime.store


async def forget_earlier_runs(store: BaseStore) -> None:
    """Delete what earlier runs of the local agent left on this thread (before this run
    writes anything)."""
    await delete_under(store, _agent_namespace())


async def delete_under(store: BaseStore, prefix: tuple[str, ...]) -> None:
    """Delete every item whose namespace starts with `prefix`."""
    while items := await store.asearch(prefix, limit=PAGE):
        await store.abatch([PutOp(tuple(item.namespace), item.key, None) for item in items])


async def put_waves(store: BaseStore, run_key: str, waves: Sequence[Sequence[Chunk]]) -> None:
    namespace = run_namespace(run_key)
    ops = [
        PutOp(namespace, _wave_key(number), {"chunks": list(wave)}, index=False)
        for number, wave in enumerate(waves)
    ]
    for start in range(0, len(ops), PAGE):
        await store.abatch(ops[start : start + PAGE])


async def get_wave(store: BaseStore, run_key: str, number: int) -> list[Chunk]:
    """The chunks of wave `number` (none past the last)."""
    item = await store.aget(run_namespace(run_key), _wave_key(number))
    return cast(list[Chunk], item.value["chunks"]) if item is not None else []


async def put_outcome(store: BaseStore, run_key: str, outcome: ChunkOutcome) -> None:
    key = _outcome_key(outcome["index"])
    await store.aput(run_namespace(run_key), key, dict(outcome), index=False)


async def get_outcomes(store: BaseStore, run_key: str, chunks: int) -> list[ChunkOutcome]:
    """The outcomes of chunks 0 to `chunks - 1` that were recorded, in chunk order."""
    namespace = run_namespace(run_key)
    outcomes: list[ChunkOutcome] = []
    for start in range(0, chunks, PAGE):
        ops = [GetOp(namespace, _outcome_key(i)) for i in range(start, min(start + PAGE, chunks))]
        for item in await store.abatch(ops):
            if item is not None:
                outcomes.append(cast(ChunkOutcome, item.value))  # type: ignore[union-attr]
    return outcomes


def _agent_namespace() -> tuple[str, ...]:
    thread_id = str(get_config()["configurable"].get("thread_id", "none"))
    return (*thread_namespace(thread_id), "local_agent")


def _wave_key(number: int) -> str:
    return f"wave-{number:06d}"


def _outcome_key(index: int) -> str:
    return f"outcome-{index:06d}"
