r"""The local directory agent: triage the folders, process each group in parallel, report.

START -> begin -> triage -(groups?)-> processing (one Send per group) -> finalize -> END
                         \-(nothing to do)------------------------------^
"""

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs import processing, triage
from llm import load_chat_model
from nodes.context import AgentContext
from nodes.local_agent import begin, finalize, route_groups
from nodes.state import LocalAgentInput, LocalAgentOutput, LocalAgentState

LocalAgentGraph = CompiledStateGraph[
    LocalAgentState, AgentContext, LocalAgentInput, LocalAgentOutput
]


def build(
    model: BaseChatModel | None = None,
) -> LocalAgentGraph:
    """The local agent; the subgraphs keep the default checkpointer (invariant 9)."""
    model = model or load_chat_model().model
    builder = StateGraph(
        LocalAgentState,
        context_schema=AgentContext,
        input_schema=LocalAgentInput,
        output_schema=LocalAgentOutput,
    )
    builder.add_node(begin)
    builder.add_node("triage", triage.build(model))
    builder.add_node("processing", processing.build(model))
    builder.add_node(finalize)
    builder.add_edge(START, "begin")
    builder.add_edge("begin", "triage")
    builder.add_conditional_edges("triage", route_groups, ["processing", "finalize"])
    builder.add_edge("processing", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile(name="Local agent")


graph = build()
