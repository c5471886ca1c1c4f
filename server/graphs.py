"""The graphs the server runs, by graph id, compiled once with the server's checkpointer."""

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from graphs import agentic_loop, local_agent, processing, triage

Builder = Callable[[BaseChatModel | None], Pregel[Any, Any, Any, Any]]

BUILDERS: Mapping[str, Builder] = {
    "local_agent": local_agent.build,
    "agentic_loop": agentic_loop.build,
    "triage": triage.build,
    "processing": processing.build,
}


class GraphRegistry:
    """Compiled graphs sharing one checkpointer; unknown ids raise `KeyError`."""

    def __init__(self, model: BaseChatModel, saver: BaseCheckpointSaver) -> None:
        self._graphs = {
            graph_id: build(model).copy(update={"checkpointer": saver})
            for graph_id, build in BUILDERS.items()
        }

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self._graphs

    def __getitem__(self, graph_id: str) -> Pregel[Any, Any, Any, Any]:
        return self._graphs[graph_id]

    def get(self, graph_id: object) -> Pregel[Any, Any, Any, Any] | None:
        return self._graphs.get(graph_id) if isinstance(graph_id, str) else None

    def ids(self) -> list[str]:
        return list(self._graphs)
