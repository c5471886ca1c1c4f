r"""Triage: scan the folders a page at a time, then the model groups the manifest.

START -> scan_device -(files?)-> group_files -> END
           ^   |     \-(none or error)-> END
           `---'(pages left)
"""

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from llm import load_chat_model
from nodes.context import AgentContext
from nodes.state import TriageState
from nodes.triage import group_files_node, route_manifest, scan_device

TriageGraph = CompiledStateGraph[TriageState, AgentContext, TriageState, TriageState]


def build(
    model: BaseChatModel | None = None,
) -> TriageGraph:
    """The triage subgraph; `model` defaults to the one the environment configures."""
    builder = StateGraph(TriageState, context_schema=AgentContext)
    builder.add_node(scan_device)
    builder.add_node("group_files", group_files_node(model or load_chat_model().model))
    builder.add_edge(START, "scan_device")
    builder.add_conditional_edges(
        "scan_device", route_manifest, ["scan_device", "group_files", END]
    )
    builder.add_edge("group_files", END)
    return builder.compile(name="Triage")


graph = build()
