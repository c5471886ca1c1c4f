"""The device bridge: a batch of device calls goes out as ONE `interrupt()`.

The resume value maps call ids to results, `{"ok": true, "result": ...}` or
`{"ok": false, "error": "..."}`. Everything before `interrupt()` here is pure, because a
node re-runs from its first line on every resume (invariant 1). Calls the server refuses
(unknown tool, arguments that fail the schema, paths outside the agent's directories)
never reach the device; they come back as error `ToolMessage`s the model can read.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired

from langchain_core.messages import ToolCall, ToolMessage
from langgraph.types import interrupt
from pydantic import ValidationError
from typing_extensions import TypedDict

from tools.catalog import DEVICE_TOOLS, DeviceTool
from tools.policy import PathPolicy, PolicyViolation

DEVICE_CALLS: Literal["device_calls"] = "device_calls"

UNKNOWN_TOOL = "Unknown tool {name!r}. Available tools: {available}."
INVALID_ARGUMENTS = "Invalid arguments for {name}: {details}"
NO_RESULT = "The device returned no result for this call."
MALFORMED_RESULT = "The device returned a malformed result for this call."


class DeviceCall(TypedDict):
    """One tool call for the device, with the id it keeps across redelivery and restart."""

    id: str
    name: str
    args: dict[str, Any]


class DeviceRequest(TypedDict):
    """The interrupt value of the bridge: every device call of one step."""

    type: Literal["device_calls"]
    calls: list[DeviceCall]


class DeviceResult(TypedDict):
    """A device's answer to one call."""

    ok: bool
    result: NotRequired[Any]
    error: NotRequired[str]


#: A model's tool-call id that is used as it is in a device call id; any other (too long,
#: odd characters, a repeat within the turn) is replaced by its position (`local_ids`).
SAFE_TOOL_CALL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def call_id(run_key: str, scope: str, local_id: str) -> str:
    """A stable id: unique per run, per step scope, per call in that step (invariant 4)."""
    return f"{run_key}/{scope}/{local_id}"


def local_ids(tool_calls: Sequence[ToolCall]) -> list[str]:
    """Each tool call's id within its turn, unique and safe whatever the model sent: the
    model's own id when it is short and plain and its first use in the turn (so the ids of
    runs parked before stay the same), else `#<position>` (no model id has a `#`)."""
    ids: list[str] = []
    seen: set[str] = set()
    for index, tool_call in enumerate(tool_calls):
        given = tool_call.get("id") or ""
        plain = SAFE_TOOL_CALL_ID.match(given) is not None and given not in seen
        ids.append(given if plain else f"#{index}")
        seen.add(given)
    return ids


def _model_id(tool_call: ToolCall, index: int) -> str:
    """The id the model knows the call by, for its `ToolMessage`."""
    return tool_call.get("id") or f"call{index}"


def ask_device(calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
    """Send `calls` to the device as one interrupt and return the results by call id."""
    if not calls:
        return {}
    answer = interrupt(DeviceRequest(type=DEVICE_CALLS, calls=list(calls)))
    return {call["id"]: _checked_result(answer, call["id"]) for call in calls}


def is_device_request(value: object) -> bool:
    """Whether an interrupt value is a batch of device calls (and not, say, an approval)."""
    return isinstance(value, Mapping) and value.get("type") == DEVICE_CALLS


def _checked_result(answer: object, call_id: str) -> DeviceResult:
    if not isinstance(answer, Mapping) or call_id not in answer:
        return DeviceResult(ok=False, error=NO_RESULT)
    raw = answer[call_id]
    if not isinstance(raw, Mapping) or not isinstance(raw.get("ok"), bool):
        return DeviceResult(ok=False, error=MALFORMED_RESULT)
    if raw["ok"]:
        return DeviceResult(ok=True, result=raw.get("result"))
    return DeviceResult(ok=False, error=str(raw.get("error") or "The device reported an error."))


@dataclass
class PreparedCalls:
    """Model tool calls split into what goes to the device and what the server refused."""

    device_calls: list[DeviceCall] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # local id -> error text
    call_ids: dict[str, str] = field(default_factory=dict)  # local id -> device call id


def prepare_calls(
    tool_calls: Sequence[ToolCall],
    *,
    allowed: Sequence[DeviceTool],
    policy: PathPolicy,
    run_key: str,
    scope: str,
    comment_author: str,
) -> PreparedCalls:
    """Check each call (tool known and allowed, schema, path policy) and give it a stable id."""
    by_name = {tool.name: tool for tool in allowed}
    prepared = PreparedCalls()
    for tool_call, local_id in zip(tool_calls, local_ids(tool_calls), strict=True):
        tool = by_name.get(tool_call["name"])
        if tool is None:
            prepared.refused[local_id] = UNKNOWN_TOOL.format(
                name=tool_call["name"], available=", ".join(sorted(by_name))
            )
            continue
        try:
            args = tool.device_args(tool_call["args"], comment_author=comment_author)
            policy.check(tool, args)
        except ValidationError as exc:
            prepared.refused[local_id] = INVALID_ARGUMENTS.format(
                name=tool.name, details=_validation_summary(exc)
            )
            continue
        except PolicyViolation as exc:
            prepared.refused[local_id] = str(exc)
            continue
        device_id = call_id(run_key, scope, local_id)
        prepared.call_ids[local_id] = device_id
        prepared.device_calls.append(DeviceCall(id=device_id, name=tool.name, args=args))
    return prepared


def tool_messages(
    tool_calls: Sequence[ToolCall],
    prepared: PreparedCalls,
    results: Mapping[str, DeviceResult],
) -> list[ToolMessage]:
    """One `ToolMessage` per model tool call, in the model's order; failures as errors.

    Messages of calls that reached the device carry `artifact={"device_call_id": ...}`;
    refused calls carry none, so counting can tell the two apart.
    """
    messages = []
    for index, (tool_call, local_id) in enumerate(
        zip(tool_calls, local_ids(tool_calls), strict=True)
    ):
        model_id = _model_id(tool_call, index)
        if local_id in prepared.refused:
            messages.append(_error_message(tool_call, model_id, prepared.refused[local_id]))
            continue
        result = results[prepared.call_ids[local_id]]
        if result["ok"]:
            messages.append(
                ToolMessage(
                    content=render_result(result.get("result")),
                    tool_call_id=model_id,
                    name=tool_call["name"],
                    artifact={"device_call_id": prepared.call_ids[local_id]},
                )
            )
        else:
            error = _error_message(tool_call, model_id, result.get("error", ""))
            error.artifact = {"device_call_id": prepared.call_ids[local_id]}
            messages.append(error)
    return messages


def render_result(value: Any) -> str:
    """Tool results as the model reads them: JSON, strings as they are."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _error_message(tool_call: ToolCall, model_id: str, text: str) -> ToolMessage:
    return ToolMessage(
        content=f"Error: {text}", tool_call_id=model_id, name=tool_call["name"], status="error"
    )


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def device_tool(name: str) -> DeviceTool:
    """The catalog entry for a tool the server itself schedules (scan, gather)."""
    return DEVICE_TOOLS[name]
