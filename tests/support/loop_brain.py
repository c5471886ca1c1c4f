"""A stateless, deterministic model for agentic-loop runs in subprocesses.

Plans three steps; in step N it creates the task "Step N task", then reports success.
"""

import re
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolCall

STEPS = ["Create the first task", "Create the second task", "Create the third task"]
_STEP = re.compile(r"Step (\d+) of \d+")


def step_number(messages: list[BaseMessage]) -> int | None:
    for message in messages:
        if message.type == "human" and (match := _STEP.search(message.text)):
            return int(match.group(1))
    return None


def answer(messages: list[BaseMessage], names: set[str]) -> AIMessage:
    if "Plan" in names:
        return AIMessage(
            content="", tool_calls=[ToolCall(name="Plan", args={"steps": STEPS}, id="plan")]
        )
    number = step_number(messages)
    if not any(isinstance(m, AIMessage) for m in messages):
        args: dict[str, Any] = {"title": f"Step {number} task"}
        return AIMessage(
            content="", tool_calls=[ToolCall(name="create_task", args=args, id=f"s{number}-create")]
        )
    verdict = {"success": True, "result": f"created the step {number} task"}
    return AIMessage(
        content="", tool_calls=[ToolCall(name="StepVerdict", args=verdict, id=f"s{number}-verdict")]
    )
