r"""Processing: one group's files become creates and updates, in a tool loop.

START -> gather -(files read?)-> call_model <-> execute_tools
                \                   |
                 `-----------> record_outcome -> END
"""

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from llm import load_chat_model
from nodes.context import AgentContext
from nodes.processing import (
    gather,
    record_outcome,
    route_gathered,
    route_model_output,
)
from nodes.state import ProcessingInput, ProcessingOutput, ProcessingState
from nodes.tool_loop import call_model_node, execute_tools


def _budget(context: AgentContext) -> int:
    return context.max_processing_steps


ProcessingGraph = CompiledStateGraph[
    ProcessingState, AgentContext, ProcessingInput, ProcessingOutput
]


def build(
    model: BaseChatModel | None = None,
) -> ProcessingGraph:
    """The processing subgraph. Compiled without a checkpointer (invariant 9)."""
    builder = StateGraph(
        ProcessingState,
        context_schema=AgentContext,
        input_schema=ProcessingInput,
        output_schema=ProcessingOutput,
    )
    builder.add_node(gather)
    model = model or load_chat_model().model
    builder.add_node("call_model", call_model_node(model, budget=_budget))
    builder.add_node(execute_tools)
    builder.add_node(record_outcome)
    builder.add_edge(START, "gather")
    builder.add_conditional_edges("gather", route_gathered, ["call_model", "record_outcome"])
    builder.add_conditional_edges(
        "call_model", route_model_output, ["execute_tools", "record_outcome"]
    )
    builder.add_edge("execute_tools", "call_model")
    builder.add_edge("record_outcome", END)
    return builder.compile(name="Processing")


graph = build()
