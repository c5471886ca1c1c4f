"""Agentic-loop nodes: plan, run each step as a tool loop, adapt a failed step, summarise.

Progress goes out on LangGraph's custom stream as `{"event": ..., "data": ...}`:
`plan_ready`, `step_complete`, `step_adapted`, `step_failed`, `task_complete`.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import openai
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from pydantic import ValidationError

from llm.tokens import count_request
from nodes import prompts
from nodes.context import AgentContext, AgentNode
from nodes.state import (
    DEFAULT_MAX_STEPS,
    AgenticState,
    LoopOutcome,
    LoopStatus,
    Plan,
    StepRecord,
    StepStatus,
    StepVerdict,
)
from nodes.tool_loop import last_turn, wants_device

EMPTY_TASK = "The task is empty."
BAD_MAX_STEPS = "max_steps must be at least 1, got {value}."
INVALID_PLAN = "The model gave no usable plan: {error}"
TASK_TOO_LONG = (
    "The task is too long to plan: its request is {tokens} tokens, over the prompt budget of "
    "{budget} (max_prompt_tokens)."
)
EMPTY_PLAN = "The model's plan has no steps."
NO_PLAN_CALL = "the answer did not call {tool}"
BUDGET_USED = "The step was not finished within {turns} model turns."
SUMMARY = "Completed {completed}/{total} steps, {adapted} adapted, {failed} failed"
RESULT_PREVIEW = 300

#: Model errors a step survives (and adapts to); anything else fails the run.
STEP_EXCEPTIONS: tuple[type[Exception], ...] = (openai.APIError, OutputParserException)


def _now() -> datetime:
    return datetime.now(UTC)


def _ms_since(iso: str) -> int:
    return int((_now() - datetime.fromisoformat(iso)).total_seconds() * 1000)


def plan_node(model: BaseChatModel) -> AgentNode[AgenticState]:
    """The planning node: the task in, at most `max_steps` steps out (structured output)."""
    planner = model.with_structured_output(Plan, method="function_calling")

    async def plan(state: AgenticState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        """Break the task into steps; a longer plan is cut and flagged as truncated."""
        # a new run on the same thread starts with no finished steps
        started = {
            "run_key": uuid.uuid4().hex[:12],
            "started_at": _now().isoformat(),
            "steps": Overwrite([]),
            "step_error": None,
        }
        task = (state.get("task") or "").strip()
        max_steps = state.get("max_steps") or DEFAULT_MAX_STEPS
        if not task:
            return {**started, "plan_error": EMPTY_TASK, "plan": []}
        if max_steps < 1:
            return {**started, "plan_error": BAD_MAX_STEPS.format(value=max_steps), "plan": []}
        system = prompts.PLAN_SYSTEM.format(
            max_steps=max_steps,
            tool_name=Plan.__name__,
            user_instructions=prompts.user_instructions(runtime.context.prompt_template),
        )
        messages = [SystemMessage(system), HumanMessage(prompts.PLAN_REQUEST.format(task=task))]
        tokens = count_request(messages, [convert_to_openai_tool(Plan)])
        if tokens > runtime.context.max_prompt_tokens:
            budget = runtime.context.max_prompt_tokens
            error = TASK_TOO_LONG.format(tokens=tokens, budget=budget)
            return {**started, "plan_error": error, "plan": []}
        try:
            answer = await planner.ainvoke(messages)
        except (OutputParserException, ValidationError) as exc:
            return {**started, "plan_error": INVALID_PLAN.format(error=exc), "plan": []}
        if not isinstance(answer, Plan):
            error = INVALID_PLAN.format(error=NO_PLAN_CALL.format(tool=Plan.__name__))
            return {**started, "plan_error": error, "plan": []}
        steps = [s.strip() for s in answer.steps if s.strip()]
        if not steps:
            return {**started, "plan_error": EMPTY_PLAN, "plan": []}
        truncated = len(steps) > max_steps
        steps = steps[:max_steps]
        runtime.stream_writer(
            {
                "event": "plan_ready",
                "data": {"steps": steps, "total": len(steps), "truncated": truncated},
            }
        )
        return {**started, "plan": steps, "truncated": truncated, "plan_error": None, "current": 0}

    return plan


def route_plan(state: AgenticState) -> Literal["start_step", "summarize"]:
    """A plan goes to its first step; a failed plan straight to the summary."""
    return "summarize" if state.get("plan_error") else "start_step"


def start_step(state: AgenticState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """A fresh conversation for the step under way, with the last two results."""
    number = state["current"] + 1
    recent = "\n".join(
        f"Step {s['number']}: {s['result'][:RESULT_PREVIEW]}" for s in state.get("steps", [])[-2:]
    )
    request = prompts.STEP_REQUEST.format(
        task=state["task"],
        number=number,
        total=len(state["plan"]),
        step=state["plan"][state["current"]],
        recent=recent or prompts.NO_RECENT_RESULTS,
    )
    return {
        **_fresh_conversation(_step_system(runtime), request),
        "attempt": "execute",
        "scope": f"s{number}.execute",
        "step_started": _now().isoformat(),
        "step_error": None,
    }


def adapt(state: AgenticState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Tell the model the step and its error, and ask for another way to reach its goal."""
    number = state["current"] + 1
    request = prompts.ADAPT_REQUEST.format(
        task=state["task"],
        number=number,
        total=len(state["plan"]),
        step=state["plan"][state["current"]],
        error=state.get("step_error"),
        verdict_tool=StepVerdict.__name__,
    )
    return {
        **_fresh_conversation(_step_system(runtime), request),
        "attempt": "adapt",
        "scope": f"s{number}.adapt",
    }


def _step_system(runtime: Runtime[AgentContext]) -> str:
    return prompts.STEP_SYSTEM.format(
        verdict_tool=StepVerdict.__name__,
        user_instructions=prompts.user_instructions(runtime.context.prompt_template),
    )


def _fresh_conversation(system: str, request: str) -> dict[str, Any]:
    return {
        "messages": [
            RemoveMessage(id=REMOVE_ALL_MESSAGES),
            SystemMessage(system),
            HumanMessage(request),
        ],
        "turns": 0,
        "failure": None,
    }


async def route_step(
    state: AgenticState, runtime: Runtime[AgentContext]
) -> Literal["execute_tools", "finish_step"]:
    """Device calls go to the device; a verdict, an answer or a failure ends the attempt."""
    if state.get("failure") or _verdict_call(state) is not None:
        return "finish_step"
    if wants_device(state, runtime.context.max_step_turns):
        return "execute_tools"
    return "finish_step"


def finish_step(state: AgenticState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Judge the attempt. A first failure goes to `adapt`; otherwise the step is recorded."""
    ok, result, error = _judge(state, runtime.context.max_step_turns)
    number = state["current"] + 1
    description = state["plan"][state["current"]]
    adapting = state.get("attempt") == "adapt"
    if not ok and not adapting:
        return {"step_error": error}
    status: StepStatus = "failed" if not ok else ("adapted" if adapting else "completed")
    record = StepRecord(
        number=number,
        description=description,
        status=status,
        result=result,
        error=state.get("step_error") if adapting else None,
        duration_ms=_ms_since(state["step_started"]),
    )
    total = len(state["plan"])
    if status == "completed":
        event = {
            "event": "step_complete",
            "data": {
                "step": number,
                "total": total,
                "description": description,
                "result": result[:RESULT_PREVIEW],
            },
        }
    elif status == "adapted":
        event = {
            "event": "step_adapted",
            "data": {
                "step": number,
                "total": total,
                "error": state.get("step_error"),
                "adaptation": result[:RESULT_PREVIEW],
            },
        }
    else:
        event = {
            "event": "step_failed",
            "data": {
                "step": number,
                "total": total,
                "error": state.get("step_error"),
                "adaptation_error": error,
            },
        }
    runtime.stream_writer(event)
    return {"steps": [record], "current": state["current"] + 1, "step_error": None}


def route_after_step(state: AgenticState) -> Literal["adapt", "start_step", "summarize"]:
    """A first failure is adapted; otherwise on to the next step, or to the summary."""
    if state.get("step_error"):
        return "adapt"
    if state.get("current", 0) < len(state.get("plan", [])):
        return "start_step"
    return "summarize"


def _verdict_call(state: AgenticState) -> dict[str, Any] | None:
    if state.get("failure") or not state.get("messages"):
        return None
    last = last_turn(state)
    calls = [c for c in last.tool_calls if c["name"] == StepVerdict.__name__]
    return calls[0]["args"] if calls else None


def _judge(state: AgenticState, budget: int) -> tuple[bool, str, str]:
    """(succeeded, result, error) of the attempt that just ended."""
    if failure := state.get("failure"):
        return False, "", failure
    if (args := _verdict_call(state)) is not None:
        try:
            verdict = StepVerdict.model_validate(args)
        except ValidationError as exc:
            return False, "", f"The step's verdict was malformed: {exc}"
        return verdict.success, verdict.result, verdict.error or verdict.result
    last = last_turn(state)
    if last.tool_calls or last.invalid_tool_calls:
        return False, "", BUDGET_USED.format(turns=budget)
    unrecovered = _last_tool_errors(state)
    if unrecovered:
        return False, last.text, "; ".join(unrecovered)
    return True, last.text, ""


def _last_tool_errors(state: AgenticState) -> list[str]:
    """Errors in the last batch of tool results, which the model answered without fixing."""
    messages = state.get("messages", [])
    errors: list[str] = []
    for message in reversed(messages[:-1]):
        if isinstance(message, AIMessage):
            break
        if isinstance(message, ToolMessage) and message.status == "error":
            errors.append(f"{message.name}: {message.content}")
    return list(reversed(errors))


def summarize(state: AgenticState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """ "Completed X/N steps, k adapted, f failed", the status, and the durations."""
    steps = state.get("steps", [])
    counts = {
        s: sum(1 for r in steps if r["status"] == s) for s in ("completed", "adapted", "failed")
    }
    total = len(state.get("plan", []))
    error = state.get("plan_error")
    status: LoopStatus
    if error:
        status = "failed"
        summary = f"Planning failed: {error}"
    else:
        status = "partial" if counts["failed"] or state.get("truncated") else "completed"
        summary = SUMMARY.format(total=total, **counts)
        if state.get("truncated"):
            summary += f" (the plan was cut to its first {total} steps)"
    duration = _ms_since(state["started_at"])
    outcome = LoopOutcome(
        status=status,
        summary=summary,
        total=total,
        completed=counts["completed"],
        adapted=counts["adapted"],
        failed=counts["failed"],
        truncated=bool(state.get("truncated")),
        error=error,
        steps=steps,
        duration_ms=duration,
    )
    runtime.stream_writer(
        {
            "event": "task_complete",
            "data": {
                "status": status,
                "steps_completed": counts["completed"] + counts["adapted"],
                "summary": summary,
                "duration_ms": duration,
            },
        }
    )
    return {"outcome": outcome}
