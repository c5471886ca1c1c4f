r"""The agentic loop: plan a task, carry it out step by step on the device, adapt a failed
step once, summarise.

    START -> plan -(plan?)-> start_step -> call_model <-> execute_tools
                 \                          |
                  \                    finish_step -(next)-> start_step
                   \                        |  \-(failed once)-> adapt -> call_model
                    `------------------> summarize <-(last step)-'       -> END
"""

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from llm import load_chat_model
from nodes.agentic_loop import (
    STEP_EXCEPTIONS,
    adapt,
    finish_step,
    plan_node,
    route_after_step,
    route_plan,
    route_step,
    start_step,
    summarize,
)
from nodes.context import AgentContext
from nodes.state import AgenticInput, AgenticOutput, AgenticState, StepVerdict
from nodes.tool_loop import call_model_node, execute_tools

AgenticGraph = CompiledStateGraph[AgenticState, AgentContext, AgenticInput, AgenticOutput]


def _budget(context: AgentContext) -> int:
    return context.max_step_turns


def build(model: BaseChatModel | None = None) -> AgenticGraph:
    """The agentic loop; `model` defaults to the one the environment configures."""
    model = model or load_chat_model().model
    builder = StateGraph(
        AgenticState,
        context_schema=AgentContext,
        input_schema=AgenticInput,
        output_schema=AgenticOutput,
    )
    builder.add_node("plan", plan_node(model))
    builder.add_node(start_step)
    builder.add_node(
        "call_model",
        call_model_node(
            model, budget=_budget, finish_tools=[StepVerdict], recoverable=STEP_EXCEPTIONS
        ),
    )
    builder.add_node(execute_tools)
    builder.add_node(finish_step)
    builder.add_node(adapt)
    builder.add_node(summarize)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", route_plan, ["start_step", "summarize"])
    builder.add_edge("start_step", "call_model")
    builder.add_conditional_edges("call_model", route_step, ["execute_tools", "finish_step"])
    builder.add_edge("execute_tools", "call_model")
    builder.add_conditional_edges(
        "finish_step", route_after_step, ["adapt", "start_step", "summarize"]
    )
    builder.add_edge("adapt", "call_model")
    builder.add_edge("summarize", END)
    return builder.compile(name="Agentic loop")


graph = build()
