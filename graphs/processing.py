r"""Processing: one chunk's files become creates and updates, a tool loop per pass.

START -> read_parts -(read?)-> find_candidates -(found)-> call_model <-> execute_tools
              |                   ^         \(lookup failed)    |
              |                   |          `------------> record_pass
              |                   `-------(next pass)-----------'   |
              `------------------------------------------> record_outcome -> END
"""

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from llm import load_chat_model
from llm.errors import REFUSED_REQUEST
from nodes.context import AgentContext
from nodes.processing import (
    find_candidates,
    read_parts,
    record_outcome,
    record_pass,
    route_candidates,
    route_model_output,
    route_pass,
    route_read,
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
    model = model or load_chat_model().model
    builder.add_node(read_parts)
    builder.add_node(find_candidates)
    builder.add_node(
        "call_model", call_model_node(model, budget=_budget, recoverable=REFUSED_REQUEST)
    )
    builder.add_node(execute_tools)
    builder.add_node(record_pass)
    builder.add_node(record_outcome)
    builder.add_edge(START, "read_parts")
    builder.add_conditional_edges("read_parts", route_read, ["find_candidates", "record_outcome"])
    builder.add_conditional_edges(
        "find_candidates", route_candidates, ["call_model", "record_pass"]
    )
    builder.add_conditional_edges(
        "call_model", route_model_output, ["execute_tools", "record_pass"]
    )
    builder.add_edge("execute_tools", "call_model")
    builder.add_conditional_edges("record_pass", route_pass, ["find_candidates", "record_outcome"])
    builder.add_edge("record_outcome", END)
    return builder.compile(name="Processing")


graph = build()
