"""Processing nodes: read a group's files and the existing records, then the tool loop.

gather (one bridge call) -> call_model <-> execute_tools (one bridge call per model turn)
-> record_outcome. The loop is a graph cycle with a budget of model turns.
"""

import posixpath
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime

from nodes import prompts
from nodes.bridge import (
    DeviceCall,
    PreparedCalls,
    ask_device,
    call_id,
    prepare_calls,
    tool_messages,
)
from nodes.context import AgentContext, AgentNode
from nodes.payloads import GROUP_KIND, payload_message
from nodes.state import STANDALONE, GroupOutcome, ProcessingState
from tools.catalog import DEVICE_TOOLS, LIST_TOOL_BY_DATA_TYPE, tools_for_data_types

UNREADABLE = "{path}: could not be read ({error})"
LIST_FAILED = "Could not list the existing {data_type}: {error}"
INVALID_JSON = "The arguments of {name} are not valid JSON: {error}"
BUDGET_USED = "Group {key}: the budget of {steps} model turns was used up before it finished."


def gather(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Read the group's files and fetch the existing records, in one device round trip."""
    context = runtime.context
    group = state["group"]
    scope = f"g{state['group_index']}.gather"
    reads = [
        DeviceCall(
            id=call_id(state["run_key"], scope, f"read{i}"),
            name="read_file_content",
            args={"path": path, "max_chars": 20_000},
        )
        for i, path in enumerate(group["files"])
    ]
    project_filter = {} if group["key"] == STANDALONE else {"projectId": group["key"]}
    lists = {
        data_type: DeviceCall(
            id=call_id(state["run_key"], scope, f"list-{data_type}"),
            name=LIST_TOOL_BY_DATA_TYPE[data_type],  # type: ignore[index]
            args={} if data_type == "projects" else dict(project_filter),
        )
        for data_type in context.data_types
    }

    results = ask_device([*reads, *lists.values()])

    files: list[dict[str, Any]] = []
    errors: list[str] = []
    for read in reads:
        path = read["args"]["path"]
        root = _root_of(path, context.directory_paths)
        result = results[read["id"]]
        if result["ok"]:
            files.append({"path": path, "root": root, "content": _text(result.get("result"))})
        else:
            errors.append(UNREADABLE.format(path=path, error=result.get("error")))
    existing: dict[str, Any] = {}
    for data_type, listing in lists.items():
        result = results[listing["id"]]
        if result["ok"]:
            existing[data_type] = result.get("result") or []
        else:
            errors.append(LIST_FAILED.format(data_type=data_type, error=result.get("error")))

    project_context = (
        prompts.STANDALONE_CONTEXT
        if group["key"] == STANDALONE
        else prompts.PROJECT_CONTEXT.format(project_id=group["key"])
    )
    system = prompts.PROCESSING_SYSTEM.format(
        data_types=", ".join(context.data_types),
        project_context=project_context,
        user_instructions=prompts.user_instructions(context.prompt_template),
    )
    payload = {"kind": GROUP_KIND, "project_id": group["key"], "files": files, "existing": existing}
    return {
        "messages": [SystemMessage(system), payload_message(prompts.PROCESSING_REQUEST, payload)],
        "turns": 0,
        "files_read": len(files),
        "errors": errors,
    }


def _root_of(path: str, roots: list[str]) -> str:
    matches = [r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")]
    return max(matches, key=len) if matches else posixpath.dirname(path)


def _text(result: Any) -> str:
    if isinstance(result, dict):
        return str(result.get("content", ""))
    return str(result or "")


def route_gathered(state: ProcessingState) -> Literal["call_model", "record_outcome"]:
    """A group whose files could not be read costs no model call."""
    return "call_model" if state.get("files_read") else "record_outcome"


def call_model_node(
    model: BaseChatModel,
) -> AgentNode[ProcessingState]:
    """The model node of the tool loop; past the budget it is asked for a final answer."""
    bound: dict[tuple[str, ...], Runnable[LanguageModelInput, BaseMessage]] = {}

    def with_tools(data_types: list[str]) -> Runnable[LanguageModelInput, BaseMessage]:
        key = tuple(data_types)
        if key not in bound:
            bound[key] = model.bind_tools([t.openai_spec for t in tools_for_data_types(key)])
        return bound[key]

    async def call_model(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        """One model turn: tool calls for the device, or the group's summary."""
        context = runtime.context
        turns = state.get("turns", 0)
        response: BaseMessage
        if turns >= context.max_processing_steps:
            response = await model.ainvoke([*state["messages"], HumanMessage(prompts.FINAL_ANSWER)])
        else:
            response = await with_tools(context.data_types).ainvoke(state["messages"])
        return {"messages": [response], "turns": turns + 1}

    return call_model


async def route_model_output(
    state: ProcessingState, runtime: Runtime[AgentContext]
) -> Literal["execute_tools", "record_outcome"]:
    """Tool calls within the budget go to the device; anything else ends the group."""
    last = state["messages"][-1]
    if not isinstance(last, AIMessage):
        raise TypeError(f"route_model_output expects an AIMessage, got {type(last).__name__}")
    wants_tools = bool(last.tool_calls or last.invalid_tool_calls)
    if wants_tools and state.get("turns", 0) <= runtime.context.max_processing_steps:
        return "execute_tools"
    return "record_outcome"


async def execute_tools(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Run the last model turn's tool calls on the device, as one interrupt."""
    context = runtime.context
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    prepared = prepare_calls(
        last.tool_calls,
        allowed=tools_for_data_types(context.data_types),
        policy=context.policy(),
        run_key=state["run_key"],
        scope=f"g{state['group_index']}.t{state.get('turns', 0)}",
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


def record_outcome(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Count what the device created and updated, from the tool results themselves."""
    names: dict[str, str] = {}
    for message in state.get("messages", []):
        if isinstance(message, AIMessage):
            names.update({c["id"] or "": c["name"] for c in message.tool_calls})
    created: dict[str, int] = {}
    updated: dict[str, int] = {}
    refused = 0
    errors = list(state.get("errors", []))
    for message in state.get("messages", []):
        if not isinstance(message, ToolMessage):
            continue
        tool = DEVICE_TOOLS.get(names.get(message.tool_call_id, message.name or ""))
        if message.status == "error":
            if message.artifact is None:
                refused += 1
            else:
                errors.append(f"{message.name}: {message.content}")
        elif tool is not None and tool.data_type and tool.effect != "read":
            counts = created if tool.effect == "create" else updated
            counts[tool.data_type] = counts.get(tool.data_type, 0) + 1
    last = state["messages"][-1] if state.get("messages") else None
    budget = runtime.context.max_processing_steps
    if isinstance(last, AIMessage) and (last.tool_calls or last.invalid_tool_calls):
        errors.append(BUDGET_USED.format(key=state["group"]["key"], steps=budget))
    summary = last.text if isinstance(last, AIMessage) else ""
    outcome = GroupOutcome(
        key=state["group"]["key"],
        files_read=state.get("files_read", 0),
        created=created,
        updated=updated,
        refused_calls=refused,
        errors=errors,
        summary=summary,
    )
    return {"outcomes": [outcome]}
