"""`relaygraph run`: the local agent over one folder, on the embedded defaults.

A run is recorded before it starts; if the process dies, the next `run` of the same agent
resumes that thread from its checkpoint instead of starting over. The watermark moves only
when a run ends success or partial.
"""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langgraph.types import Durability

from checkpoints import open_checkpointer, open_graph_store, open_store
from graphs import local_agent
from nodes.context import AgentContext
from nodes.run_data import delete_under, thread_namespace
from nodes.state import RunReport
from relaygraph import runner
from tools.catalog import DataType

#: A checkpoint as the graph returns (each device round trip, and the end), as the server's
#: default: a checkpoint after every step stored each chunk's texts a dozen times over.
DURABILITY: Durability = "exit"


@dataclass(frozen=True)
class LocalRun:
    """One finished run and whether it continued an interrupted one."""

    thread_id: str
    resumed: bool
    report: RunReport


def agent_key(context: AgentContext) -> str:
    """Runs of the same folders, data types and extensions share a watermark."""
    spec = "|".join(
        [
            ",".join(sorted(context.directory_paths)),
            ",".join(sorted(context.data_types)),
            ",".join(sorted(context.file_extensions)),
        ]
    )
    return "local:" + hashlib.sha256(spec.encode()).hexdigest()[:16]


async def run_local_agent(
    *,
    context: AgentContext,
    state_url: str,
    model: BaseChatModel,
    device: runner.Device,
    on_update: runner.Update | None = None,
    on_progress: runner.Progress | None = None,
) -> LocalRun:
    """Run (or resume) the local agent for `context` and record its outcome."""
    key = agent_key(context)
    async with (
        open_checkpointer(state_url) as saver,
        open_graph_store(state_url) as graph_store,
        open_store(state_url) as store,
    ):
        graph = local_agent.build(model).copy(update={"checkpointer": saver, "store": graph_store})
        thread_id = await store.unfinished_run(key)
        if thread_id is not None:
            values = await runner.resume(
                graph,
                thread_id=thread_id,
                context=context,
                device=device,
                on_update=on_update,
                on_progress=on_progress,
                durability=DURABILITY,
            )
            resumed = True
        else:
            thread_id = str(uuid.uuid4())
            since = await store.watermark(key)
            retry = await store.retry_files(key)
            await store.start_run(thread_id, key)
            values = await runner.start(
                graph,
                thread_id=thread_id,
                graph_input={"modified_since": since, "retry_files": retry},
                context=context,
                device=device,
                on_update=on_update,
                on_progress=on_progress,
                durability=DURABILITY,
            )
            resumed = False
        report = cast(RunReport, values["report"])
        await store.finish_run(thread_id, key, cast(dict[str, Any], report))
        # the thread is never resumed again: what the run kept in the store can go
        await delete_under(graph_store, thread_namespace(thread_id))
    return LocalRun(thread_id=thread_id, resumed=resumed, report=report)


def default_context(
    directory: Path, data_types: Sequence[DataType], extensions: Sequence[str]
) -> AgentContext:
    return AgentContext(
        directory_paths=[str(directory.resolve())],
        data_types=list(data_types),
        file_extensions=list(extensions),
    )
