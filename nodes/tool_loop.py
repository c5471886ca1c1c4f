"""The tool loop the device agents share: a model turn, then its tool calls on the device.

    call_model -(device calls within the budget)-> execute_tools -> call_model -> ...

State keys it uses: `run_key` and `scope` (the prefix of its device call ids), `messages`,
`turns`. The budget counts model turns; past it the model is asked for a final answer with
no tools bound.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.runnables import Runnable
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel
from typing_extensions import TypedDict

from nodes import prompts
from nodes.bridge import PreparedCalls, ask_device, prepare_calls, tool_messages
from nodes.context import AgentContext, AgentNode
from tools.catalog import tools_for_data_types

INVALID_JSON = "The arguments of {name} are not valid JSON: {error}"

Budget = Callable[[AgentContext], int]


class ToolLoopState(TypedDict, total=False):
    """The keys the tool loop reads and writes."""

    run_key: str
    scope: str
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int
    failure: str | None


def call_model_node(
    model: BaseChatModel,
    *,
    budget: Budget,
    finish_tools: Sequence[type[BaseModel]] = (),
    recoverable: tuple[type[Exception], ...] = (),
) -> AgentNode[Any]:
    """The model node of a tool loop. `finish_tools` are schemas the model calls to end the
    loop with a structured answer; they are never sent to a device. A `recoverable`
    exception from the model is recorded as the loop's `failure` instead of failing the run."""
    bound: dict[tuple[str, ...], Runnable[LanguageModelInput, BaseMessage]] = {}

    def with_tools(data_types: list[str]) -> Runnable[LanguageModelInput, BaseMessage]:
        key = tuple(data_types)
        if key not in bound:
            specs = [t.openai_spec for t in tools_for_data_types(key)]
            bound[key] = model.bind_tools([*specs, *finish_tools])
        return bound[key]

    async def call_model(state: ToolLoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        """One model turn: tool calls for the device, or the final answer."""
        turns = state.get("turns", 0)
        messages = state.get("messages", [])
        response: BaseMessage
        try:
            if turns >= budget(runtime.context):
                response = await model.ainvoke([*messages, HumanMessage(prompts.FINAL_ANSWER)])
            else:
                response = await with_tools(runtime.context.data_types).ainvoke(messages)
        except recoverable as exc:
            return {"failure": f"{type(exc).__name__}: {exc}", "turns": turns + 1}
        return {"messages": [response], "turns": turns + 1}

    return call_model


def last_turn(state: Mapping[str, Any]) -> AIMessage:
    """The model's last answer (a router on anything else is a wiring bug)."""
    last = state["messages"][-1]
    if not isinstance(last, AIMessage):
        raise TypeError(f"expected the model's answer last, got {type(last).__name__}")
    return last


def wants_device(state: Mapping[str, Any], budget: int) -> bool:
    """Whether the last turn asked for tool calls and the budget allows running them."""
    last = last_turn(state)
    return bool(last.tool_calls or last.invalid_tool_calls) and state.get("turns", 0) <= budget


async def execute_tools(state: ToolLoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Run the last model turn's tool calls on the device, as one interrupt."""
    context = runtime.context
    last = last_turn(state)
    prepared = prepare_calls(
        last.tool_calls,
        allowed=tools_for_data_types(context.data_types),
        policy=context.policy(),
        run_key=state["run_key"],
        scope=f"{state['scope']}.t{state.get('turns', 0)}",
        comment_author=context.comment_author,
    )
    malformed = _malformed_calls(last, prepared)

    results = ask_device(prepared.device_calls)

    return {"messages": tool_messages([*last.tool_calls, *malformed], prepared, results)}


def _malformed_calls(last: AIMessage, prepared: PreparedCalls) -> list[ToolCall]:
    """Calls whose arguments were not JSON: refused, but answered, as the API requires."""
    calls = []
    for index, bad in enumerate(last.invalid_tool_calls):
        local_id = bad.get("id") or f"invalid{index}"
        name = bad.get("name") or "unknown"
        prepared.refused[local_id] = INVALID_JSON.format(name=name, error=bad.get("error") or "")
        calls.append(ToolCall(name=name, args={}, id=local_id))
    return calls
