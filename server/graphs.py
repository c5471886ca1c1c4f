"""The graphs the server runs, by graph id, compiled once with the server's checkpointer and
LangGraph store."""

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore

from checkpoints.caching_saver import CachingPostgresSaver
from graphs import agentic_loop, local_agent, processing, triage
from nodes.run_data import delete_under, thread_namespace

Builder = Callable[[BaseChatModel | None], Pregel[Any, Any, Any, Any]]

BUILDERS: Mapping[str, Builder] = {
    "local_agent": local_agent.build,
    "agentic_loop": agentic_loop.build,
    "triage": triage.build,
    "processing": processing.build,
}


class GraphRegistry:
    """Compiled graphs, one copy per checkpointer; a thread always uses the same copy.

    `AsyncPostgresSaver` runs one database operation at a time per instance (langgraph
    issue 7259), so the server spreads threads over several savers sharing one pool.
    """

    def __init__(
        self, model: BaseChatModel, savers: Sequence[BaseCheckpointSaver], store: BaseStore
    ) -> None:
        self._savers = list(savers)
        self.store = store
        built = {graph_id: build(model) for graph_id, build in BUILDERS.items()}
        self._copies = {
            graph_id: [
                graph.copy(update={"checkpointer": saver, "store": store}) for saver in savers
            ]
            for graph_id, graph in built.items()
        }

    def __contains__(self, graph_id: object) -> bool:
        return isinstance(graph_id, str) and graph_id in self._copies

    def __getitem__(self, graph_id: str) -> Pregel[Any, Any, Any, Any]:
        """Any copy: for drawings and schemas, which do not touch a thread."""
        return self._copies[graph_id][0]

    def for_thread(self, graph_id: str, thread_id: str) -> Pregel[Any, Any, Any, Any]:
        """The copy whose checkpointer serves this thread."""
        return self._copies[graph_id][self._index(thread_id)]

    def saver_for(self, thread_id: str) -> BaseCheckpointSaver:
        return self._savers[self._index(thread_id)]

    async def forget_thread(self, thread_id: str) -> None:
        """Delete the thread's checkpoints and what its graphs kept in the store."""
        await self.saver_for(thread_id).adelete_thread(thread_id)
        await delete_under(self.store, thread_namespace(thread_id))

    def forget_checkpoint(self, thread_id: str) -> None:
        """Drop the thread's kept checkpoint, if its saver keeps them (`checkpoints.kept`)."""
        saver = self.saver_for(thread_id)
        if isinstance(saver, CachingPostgresSaver):
            saver.latest.forget(thread_id)

    def _index(self, thread_id: str) -> int:
        return zlib.crc32(thread_id.encode()) % len(self._savers)

    def get_for_thread(self, graph_id: object, thread_id: str) -> Pregel[Any, Any, Any, Any] | None:
        if not isinstance(graph_id, str) or graph_id not in self._copies:
            return None
        return self.for_thread(graph_id, thread_id)

    def ids(self) -> list[str]:
        return list(self._copies)
