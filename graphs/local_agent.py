r"""The local directory agent: triage the folders, cut the groups into chunks that fit one
model request each, process the chunks in waves of `parallel_chunks` side by side, report.

START -> begin -> triage -> plan -(a wave?)-> processing (one Send per chunk) -> next_wave
                             |                    ^                                  |
                             |                    \--------------(a wave?)-----------/
                             \-(nothing left)-> finalize -> END <-(nothing left)-----/
"""

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs import processing, triage
from llm import load_chat_model
from nodes.context import AgentContext
from nodes.local_agent import begin, finalize, next_wave, plan, route_chunks
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
    builder.add_node(plan)
    builder.add_node("processing", processing.build(model))
    builder.add_node(next_wave)
    builder.add_node(finalize)
    builder.add_edge(START, "begin")
    builder.add_edge("begin", "triage")
    builder.add_edge("triage", "plan")
    builder.add_conditional_edges("plan", route_chunks, ["processing", "finalize"])
    builder.add_edge("processing", "next_wave")
    builder.add_conditional_edges("next_wave", route_chunks, ["processing", "finalize"])
    builder.add_edge("finalize", END)
    return builder.compile(name="Local agent")


graph = build()
