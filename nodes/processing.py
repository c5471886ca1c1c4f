"""Processing nodes: read a group's files and the existing records, then the tool loop.

gather (one bridge call) -> call_model <-> execute_tools (one bridge call per model turn)
-> record_outcome. The loop is a graph cycle with a budget of model turns.
"""

import posixpath
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.runtime import Runtime

from nodes import prompts
from nodes.bridge import (
    DeviceCall,
    ask_device,
    call_id,
)
from nodes.context import AgentContext
from nodes.payloads import GROUP_KIND, payload_message
from nodes.state import STANDALONE, GroupOutcome, ProcessingState
from nodes.tool_loop import wants_device
from tools.catalog import DEVICE_TOOLS, LIST_TOOL_BY_DATA_TYPE

UNREADABLE = "{path}: could not be read ({error})"
LIST_FAILED = "Could not list the existing {data_type}: {error}"
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
        "scope": f"g{state['group_index']}",
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


async def route_model_output(
    state: ProcessingState, runtime: Runtime[AgentContext]
) -> Literal["execute_tools", "record_outcome"]:
    """Tool calls within the budget go to the device; anything else ends the group."""
    if wants_device(state, runtime.context.max_processing_steps):
        return "execute_tools"
    return "record_outcome"


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
