"""The agentic loop: plan, execute, adapt, summarise, with progress, on every checkpointer."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolCall

from checkpoints import open_checkpointer
from device import LocalDevice
from graphs import agentic_loop
from harness.fake_openai import FakeOpenAI
from llm import load_chat_model
from nodes.agentic_loop import EMPTY_PLAN, TASK_TOO_LONG
from nodes.context import AgentContext
from relaygraph import runner
from tests.conftest import REPO
from tests.support.agent import tool_turn
from tests.support.scripted import ScriptedChatModel
from tests.test_kill_resume import wait_for


def plan(*steps: str) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[ToolCall(name="Plan", args={"steps": list(steps)}, id="plan-1")]
    )


def verdict(success: bool, result: str, error: str = "") -> AIMessage:
    args = {"success": success, "result": result, "error": error}
    return AIMessage(content="", tool_calls=[ToolCall(name="StepVerdict", args=args, id="v")])


async def run_loop(
    storage_url: str,
    model: ScriptedChatModel,
    device: LocalDevice,
    workspace: Path,
    graph_input: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    context = AgentContext(directory_paths=[str(workspace)], data_types=["tasks"])
    async with open_checkpointer(storage_url) as saver:
        graph = agentic_loop.build(model).copy(update={"checkpointer": saver})
        values = await runner.start(
            graph,
            thread_id="loop",
            graph_input=graph_input,
            context=context,
            device=device,
            on_progress=events.append,
        )
    return values["outcome"], events


async def test_failed_steps_are_adapted_once_then_marked_failed(
    storage_url: str, workspace: Path, device: LocalDevice
) -> None:
    model = ScriptedChatModel(
        script=[
            plan("Create the kickoff task", "Close the brief task", "Archive the old project"),
            # step 1: works
            tool_turn(("create_task", {"title": "Kickoff"})),
            verdict(True, "Created the kickoff task."),
            # step 2: a tool error the model does not recover from; the adaptation works
            tool_turn(("update_task", {"taskId": "no-such-task", "state": "Completed"})),
            AIMessage(content="I could not update it."),
            tool_turn(("create_task", {"title": "Brief", "state": "Completed"})),
            verdict(True, "Created the brief task as completed instead."),
            # step 3: the step's own verdict is failure, and so is the adaptation's
            verdict(False, "", "There is no archive tool."),
            verdict(False, "", "Still no way to archive."),
        ]
    )
    outcome, events = await run_loop(
        storage_url, model, device, workspace, {"task": "Tidy up the brief", "max_steps": 5}
    )

    assert not model.script, "every scripted answer was used, none twice"
    assert outcome["status"] == "partial"
    assert (outcome["completed"], outcome["adapted"], outcome["failed"]) == (1, 1, 1)
    assert outcome["summary"] == "Completed 1/3 steps, 1 adapted, 1 failed"
    assert [s["status"] for s in outcome["steps"]] == ["completed", "adapted", "failed"]
    assert "does not exist" in outcome["steps"][1]["error"]
    assert outcome["steps"][2]["error"] == "There is no archive tool."
    assert all(s["duration_ms"] >= 0 for s in outcome["steps"]) and outcome["duration_ms"] >= 0
    assert [e["event"] for e in events] == [
        "plan_ready",
        "step_complete",
        "step_adapted",
        "step_failed",
        "task_complete",
    ]
    assert events[0]["data"] == {
        "steps": ["Create the kickoff task", "Close the brief task", "Archive the old project"],
        "total": 3,
        "truncated": False,
    }
    assert events[1]["data"]["result"] == "Created the kickoff task."
    assert events[2]["data"]["adaptation"] == "Created the brief task as completed instead."
    assert "does not exist" in events[2]["data"]["error"]
    assert events[-1]["data"]["status"] == "partial"
    assert events[-1]["data"]["steps_completed"] == 2
    assert sorted(t["title"] for t in device.rows("tasks")) == ["Brief", "Kickoff"]


async def test_step_context_carries_the_task_the_step_and_the_last_two_results(
    workspace: Path, device: LocalDevice
) -> None:
    model = ScriptedChatModel(
        script=[
            plan("one", "two", "three"),
            verdict(True, "r1"),
            verdict(True, "r2"),
            verdict(True, "r3"),
        ]
    )
    outcome, _ = await run_loop("memory", model, device, workspace, {"task": "count"})
    assert outcome["status"] == "completed"
    step_three = model.calls[3][0][-1].text
    assert "Task: count" in step_three and "Step 3 of 3: three" in step_three
    assert "Step 1: r1" in step_three and "Step 2: r2" in step_three


async def test_a_longer_plan_is_cut_and_flagged(workspace: Path, device: LocalDevice) -> None:
    model = ScriptedChatModel(
        script=[
            plan("a", "b", "c", "d", "e"),
            verdict(True, "ok a"),
            verdict(True, "ok b"),
        ]
    )
    outcome, events = await run_loop(
        "memory", model, device, workspace, {"task": "five things", "max_steps": 2}
    )
    assert events[0]["data"] == {"steps": ["a", "b"], "total": 2, "truncated": True}
    assert outcome["truncated"] is True and outcome["total"] == 2
    assert outcome["status"] == "partial"
    assert outcome["summary"].startswith("Completed 2/2 steps, 0 adapted, 0 failed")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (plan(), EMPTY_PLAN),
        (AIMessage(content="1. do it\n2. done"), "no usable plan"),
        (
            AIMessage(content="", tool_calls=[ToolCall(name="Plan", args={"steps": "x"}, id="p")]),
            "no usable plan",
        ),
    ],
)
async def test_an_empty_or_invalid_plan_fails_the_run_with_the_reason(
    answer: AIMessage, reason: str, workspace: Path, device: LocalDevice
) -> None:
    model = ScriptedChatModel(script=[answer])
    outcome, events = await run_loop("memory", model, device, workspace, {"task": "anything"})
    assert outcome["status"] == "failed"
    assert reason in outcome["summary"] and reason in (outcome["error"] or "")
    assert [e["event"] for e in events] == ["task_complete"]


async def test_a_task_over_the_prompt_budget_fails_before_any_model_call(
    workspace: Path, device: LocalDevice
) -> None:
    """The plan request carries the task whole; one that cannot fit is refused by the run,
    with the budget named, instead of sent for the model server to refuse."""
    model = ScriptedChatModel(script=[plan("never asked")])
    task = "Sort out the quarterly reports and chase every open invoice. " * 12_000
    outcome, _ = await run_loop("memory", model, device, workspace, {"task": task})
    assert outcome["status"] == "failed"
    assert TASK_TOO_LONG.split(":")[0] in (outcome["error"] or ""), outcome
    assert "max_prompt_tokens" in outcome["error"]
    assert model.calls == []


async def test_a_model_exception_in_a_step_is_adapted(workspace: Path, device: LocalDevice) -> None:
    def unavailable(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        request = httpx.Request("POST", "http://model/v1/chat/completions")
        raise openai.APIConnectionError(request=request)

    model = ScriptedChatModel(script=[plan("only"), unavailable, verdict(True, "second try")])
    outcome, _ = await run_loop("memory", model, device, workspace, {"task": "t"})
    assert outcome["status"] == "completed"
    assert outcome["steps"][0]["status"] == "adapted"
    assert "APIConnectionError" in (outcome["steps"][0]["error"] or "")
    adapt_request = model.calls[-1][0][-1].text
    assert "failed" in adapt_request and "APIConnectionError" in adapt_request


async def test_a_complete_loop_with_chat_openai(workspace: Path, device: LocalDevice) -> None:
    with FakeOpenAI() as server:
        choice = load_chat_model({"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "t"})
        events: list[dict[str, Any]] = []
        context = AgentContext(directory_paths=[str(workspace)])
        async with open_checkpointer("memory") as saver:
            graph = agentic_loop.build(choice.model).copy(update={"checkpointer": saver})
            values = await runner.start(
                graph,
                thread_id="t",
                graph_input={"task": "List my tasks; then list my notes"},
                context=context,
                device=device,
                on_progress=events.append,
            )
        calls = server.calls
    outcome = values["outcome"]
    assert outcome["status"] == "completed"
    assert outcome["summary"] == "Completed 2/2 steps, 0 adapted, 0 failed"
    assert [e["event"] for e in events] == [
        "plan_ready",
        "step_complete",
        "step_complete",
        "task_complete",
    ]
    assert calls == 3  # the plan and one answer per step


# ── Kill and resume ────────────────────────────────────────────────────────────


def loop_process(tmp: Path, workspace: Path, state: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.loop_process",
            "--workspace",
            str(workspace),
            "--entities",
            str(tmp / "entities.db"),
            "--state",
            state,
            "--thread",
            "loop-1",
            "--log",
            str(tmp / "calls.log"),
            "--marker",
            str(tmp / "holding"),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    "hold",
    [["--hold-device", "Step 3 task"], ["--hold-model", "3"]],
    ids=["waiting-on-device", "mid-model-call"],
)
def test_a_run_killed_in_step_three_resumes_at_step_three(
    backend: str,
    hold: list[str],
    tmp_path: Path,
    workspace: Path,
    request: pytest.FixtureRequest,
) -> None:
    state = (
        str(request.getfixturevalue("postgres_url"))
        if backend == "postgres"
        else str(tmp_path / "state.db")
    )
    first = loop_process(tmp_path, workspace, state, *hold)
    wait_for(tmp_path / "holding", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    model_calls_before = (tmp_path / "calls.log.model").read_text().split()
    assert "3" in model_calls_before

    second = loop_process(tmp_path, workspace, state, "--resume")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])

    assert outcome["status"] == "completed"
    assert outcome["summary"] == "Completed 3/3 steps, 0 adapted, 0 failed"
    model_calls = (tmp_path / "calls.log.model").read_text().split()
    resumed_calls = model_calls[len(model_calls_before) :]
    assert set(resumed_calls) == {"3"}, "steps 1 and 2 were not planned or run again"
    executions = Counter((tmp_path / "calls.log").read_text().split())
    assert len(executions) == 3 and set(executions.values()) == {1}
    check = LocalDevice([workspace], tmp_path / "entities.db")
    try:
        titles = sorted(t["title"] for t in check.rows("tasks"))
    finally:
        check.close()
    assert titles == ["Step 1 task", "Step 2 task", "Step 3 task"]
