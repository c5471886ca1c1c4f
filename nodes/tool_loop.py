"""The tool loop the device agents share: a model turn, then its tool calls on the device.

    call_model -(device calls within the budget)-> execute_tools -> call_model -> ...

State keys it uses: `run_key` and `scope` (the prefix of its device call ids), `messages`,
`turns`. The budget counts model turns; past it the model is asked for a final answer with
no tools bound. Every request fits the context's `max_prompt_tokens`: a conversation that
would outgrow it is sent with its older tool results, then its older turns, left out and
said so (`fit_request`); one that cannot be made to fit is the loop's `failure`.
"""

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel
from typing_extensions import TypedDict

from llm.errors import describe
from llm.tokens import REPLY_PRIMING, count_message, count_request, count_tokens, count_tools
from nodes import prompts
from nodes.bridge import PreparedCalls, ask_device, local_ids, prepare_calls, tool_messages
from nodes.context import AgentContext, AgentNode
from tools.catalog import tools_for_data_types

INVALID_JSON = "The arguments of {name} are not valid JSON: {error}"
NOTE_OVERHEAD = 120  # the note's own words around its list of calls
OVER_BUDGET = (
    "The conversation no longer fits the prompt budget of {budget} tokens "
    "({tokens} after leaving out what could be); its files are retried on the next run."
)

Budget = Callable[[AgentContext], int]


class ToolLoopState(TypedDict, total=False):
    """The keys the tool loop reads and writes."""

    run_key: str
    scope: str
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int
    model_calls: Annotated[int, operator.add]
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
    bound: dict[tuple[str, ...], tuple[Runnable[LanguageModelInput, BaseMessage], int]] = {}

    def with_tools(
        data_types: Sequence[str],
    ) -> tuple[Runnable[LanguageModelInput, BaseMessage], int]:
        """The model bound to the data types' tools, and the tokens of their specs."""
        key = tuple(data_types)
        if key not in bound:
            specs: list[Any] = [t.openai_spec for t in tools_for_data_types(key)]
            specs += [convert_to_openai_tool(t) for t in finish_tools]
            bound[key] = (model.bind_tools(specs), count_tools(specs))
        return bound[key]

    async def call_model(state: ToolLoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        """One model turn: tool calls for the device, or the final answer."""
        turns = state.get("turns", 0)
        messages: list[BaseMessage] = list(state.get("messages", []))
        budget_tokens = runtime.context.max_prompt_tokens
        runnable: Runnable[LanguageModelInput, BaseMessage]
        if turns >= budget(runtime.context):
            runnable, tool_tokens = model, 0
            messages.append(HumanMessage(prompts.FINAL_ANSWER))
        else:
            runnable, tool_tokens = with_tools(runtime.context.data_types)
        request = fit_request(messages, tool_tokens, budget_tokens)
        if request is None:
            tokens = count_request(messages, tool_tokens)
            failure = OVER_BUDGET.format(budget=budget_tokens, tokens=tokens)
            return {"failure": failure, "turns": turns + 1}
        try:
            response = await runnable.ainvoke(request)
        except recoverable as exc:
            return {"failure": describe(exc), "turns": turns + 1, **_calls(1)}
        return {"messages": [response], "turns": turns + 1, **_calls(1)}

    return call_model


def _calls(count: int) -> dict[str, int]:
    """The model-call counter, for the states that keep one."""
    return {"model_calls": count}


def fit_request(
    messages: list[BaseMessage], tool_tokens: int, budget: int
) -> list[BaseMessage] | None:
    """`messages` as a request within `budget` tokens, or None when they cannot fit.

    First tool results are left out, oldest first (each replaced by a line that says so),
    then whole earlier turns (replaced by a list of the calls they made); the opening
    messages and the last turn's calls are always sent. `tool_tokens`: the bound tools'
    specs (`count_tools`)."""
    fixed = tool_tokens + REPLY_PRIMING
    sizes = [count_message(m) for m in messages]
    if fixed + sum(sizes) <= budget:
        return messages
    request = list(messages)
    turn_starts = [i for i, m in enumerate(request) if isinstance(m, AIMessage)]
    if not turn_starts:
        return None
    for index in range(turn_starts[0], len(request)):
        message = request[index]
        if isinstance(message, ToolMessage) and fixed + sum(sizes) > budget:
            stub = message.model_copy(
                update={"content": prompts.RESULT_LEFT_OUT.format(chars=len(message.text))}
            )
            request[index] = stub
            sizes[index] = count_message(stub)
    if fixed + sum(sizes) <= budget:
        return request
    opening = request[: turn_starts[0]]
    for keep_from in (turn_starts[-1], len(request)):  # earlier turns, then every turn
        dropped = request[turn_starts[0] : keep_from]
        if not dropped:
            continue
        kept = request[keep_from:]
        room = budget - count_request([*opening, *kept], tool_tokens) - NOTE_OVERHEAD
        note = HumanMessage(prompts.TURNS_LEFT_OUT.format(calls=_digest(dropped, room)))
        if count_request([*opening, note, *kept], tool_tokens) <= budget:
            return [*opening, note, *kept]
    return None


def _digest(turns: Sequence[BaseMessage], room: int) -> str:
    """The calls `turns` made, one line each (tool and title), as many as fit `room` tokens."""
    lines: list[str] = []
    used = 0
    calls = [c for m in turns if isinstance(m, AIMessage) for c in m.tool_calls]
    for number, call in enumerate(calls):
        args = call["args"]
        what = args.get("title") or args.get("name") or args.get("taskId") or ""
        line = f"- {call['name']} {what}".rstrip()
        tokens = count_tokens(line) + 1
        if used + tokens > room:
            lines.append(prompts.MORE_CALLS.format(count=len(calls) - number))
            break
        lines.append(line)
        used += tokens
    return "\n".join(lines) or "none"


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
    calls = [*last.tool_calls, *_refuse_malformed(last, prepared)]

    results = ask_device(prepared.device_calls)

    return {"messages": tool_messages(calls, prepared, results)}


def _refuse_malformed(last: AIMessage, prepared: PreparedCalls) -> list[ToolCall]:
    """Calls whose arguments were not JSON, as calls after the turn's others: refused, but
    answered, as the API requires."""
    malformed = [
        ToolCall(name=bad.get("name") or "unknown", args={}, id=bad.get("id") or f"invalid{i}")
        for i, bad in enumerate(last.invalid_tool_calls)
    ]
    ids = local_ids([*last.tool_calls, *malformed])[len(last.tool_calls) :]
    for bad, call, local_id in zip(last.invalid_tool_calls, malformed, ids, strict=True):
        error = INVALID_JSON.format(name=call["name"], error=bad.get("error") or "")
        prepared.refused[local_id] = error
    return malformed
