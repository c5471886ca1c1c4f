"""The local agent with `ChatOpenAI` over real HTTP, against a fake OpenAI-compatible server.

The fake answers like the offline extractor; faults it injects (a tool call whose arguments
are not JSON, a triage answer naming a file the manifest does not have) must be absorbed by
the graphs: error `ToolMessage`s the model reads, triage retried.
"""

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolCall
from langchain_openai import ChatOpenAI

from device import LocalDevice
from harness.fake_openai import (
    GHOST_FILE,
    INVALID_TRIAGE,
    MALFORMED_TOOL_CALL,
    PROCESSING,
    TRIAGE,
    TRIAGE_TOOL,
    FakeOpenAI,
)
from llm import load_chat_model
from nodes.context import AgentContext
from nodes.payloads import TRIAGE_KIND, payload_message
from nodes.state import TriageAnswer
from nodes.triage import TRIAGE_ATTEMPTS, TRIAGE_FAILED
from relaygraph.local_run import LocalRun, default_context, run_local_agent
from tools.catalog import DATA_TYPES

# What the offline rules find in sample/: two project folders, eight checklist and TODO
# lines, three dated lines, four headed sections with prose.
SAMPLE_ROWS = {"projects": 2, "tasks": 8, "notes": 4, "timelines": 3}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def model(server: FakeOpenAI) -> BaseChatModel:
    choice = load_chat_model(env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"})
    assert isinstance(choice.model, ChatOpenAI)
    assert not choice.offline
    return choice.model


@pytest.fixture
def context(workspace: Path) -> AgentContext:
    return default_context(workspace, DATA_TYPES, [".md", ".txt"])


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


async def run(
    context: AgentContext, state_url: str, model: BaseChatModel, device: LocalDevice
) -> LocalRun:
    return await run_local_agent(context=context, state_url=state_url, model=model, device=device)


def tool_names(request: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools") or []}


def triage_requests(server: FakeOpenAI) -> list[dict[str, Any]]:
    return [r for r in server.requests if TRIAGE_TOOL in tool_names(r)]


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


async def test_faults_are_absorbed_and_the_run_succeeds(
    server: FakeOpenAI,
    model: BaseChatModel,
    context: AgentContext,
    state_url: str,
    device: LocalDevice,
) -> None:
    malformed = server.inject(MALFORMED_TOOL_CALL, when=PROCESSING)
    invalid = server.inject(INVALID_TRIAGE, when=TRIAGE)

    result = await run(context, state_url, model, device)
    report = result.report

    assert not result.resumed
    assert report["status"] == "success", report["errors"]
    assert report["errors"] == []
    assert server.pending_faults() == []
    # Triage was asked twice: the invalid answer, then a retry that says what was wrong.
    triage = triage_requests(server)
    assert len(triage) == 2
    assert triage[1]["messages"][: len(triage[0]["messages"])] == triage[0]["messages"]
    feedback = triage[1]["messages"][-1]
    assert feedback["role"] == "user"
    assert "previous answer could not be used" in feedback["content"]
    assert GHOST_FILE in feedback["content"]
    assert invalid.served_at == 1

    # Everything the sample holds is in the device database, once.
    assert device.count_rows() == SAMPLE_ROWS
    assert report["created"] == nonzero(device.count_rows())
    assert report["updated"] == {}
    assert report["files_scanned"] == report["files_processed"] == 4
    for table, key in [
        ("projects", "name"),
        ("tasks", "title"),
        ("notes", "title"),
        ("timelines", "title"),
    ]:
        values = [row[key] for row in device.rows(table)]
        assert [v for v, n in Counter(values).items() if n > 1] == [], table
    # The refused call is counted as refused, not as a device error.
    (group,) = report["outcomes"]
    assert group["refused_calls"] == 1
    assert group["errors"] == []

    # The model got the malformed call back as an error tool message, and went on: the
    # projects it then created hold the tasks of their folders.
    assert malformed.served_at is not None
    fault_answer = server.requests[malformed.served_at]  # the request right after the fault
    errors = [m for m in fault_answer["messages"] if m["role"] == "tool"]
    assert len(errors) == 1
    assert errors[0]["tool_call_id"] == f"call_fault_{malformed.served_at}"
    assert errors[0]["content"].startswith("Error:")
    assert "not valid JSON" in errors[0]["content"]
    assert len(server.requests) > malformed.served_at + 1  # more turns after the error
    projects = {row["name"]: row["id"] for row in device.rows("projects")}
    tasks = {row["title"]: row["projectId"] for row in device.rows("tasks")}
    assert tasks["Prototype offline sync"] == projects["mobile-app"]
    assert tasks["Draft the homepage wireframe"] == projects["website-redesign"]
    assert tasks["Renew the domain name"] is None


async def test_second_run_over_unchanged_folder_calls_no_model(
    server: FakeOpenAI,
    model: BaseChatModel,
    context: AgentContext,
    state_url: str,
    device: LocalDevice,
) -> None:
    first = await run(context, state_url, model, device)
    assert first.report["status"] == "success"
    assert first.report["created"] == SAMPLE_ROWS
    calls = server.calls
    assert calls > 0

    second = await run(context, state_url, model, device)

    assert server.calls == calls
    assert second.thread_id != first.thread_id
    assert not second.resumed
    assert second.report["status"] == "success"
    assert second.report["created"] == {}
    assert second.report["updated"] == {}
    assert second.report["files_scanned"] == 0
    assert device.count_rows() == SAMPLE_ROWS


async def test_triage_invalid_on_every_attempt_ends_in_error(
    server: FakeOpenAI,
    model: BaseChatModel,
    context: AgentContext,
    state_url: str,
    device: LocalDevice,
) -> None:
    for _ in range(TRIAGE_ATTEMPTS):
        server.inject(INVALID_TRIAGE, when=TRIAGE)

    report = (await run(context, state_url, model, device)).report

    assert report["status"] == "error"
    prefix = TRIAGE_FAILED.split("{error}")[0].format(attempts=TRIAGE_ATTEMPTS)
    (error,) = report["errors"]
    assert error.startswith(prefix)
    assert "not in the manifest" in error
    assert server.pending_faults() == []
    assert server.calls == len(triage_requests(server)) == TRIAGE_ATTEMPTS  # no processing
    assert report["outcomes"] == []
    assert report["created"] == {}
    assert device.count_rows() == dict.fromkeys(SAMPLE_ROWS, 0)
    assert device.rows("call_results") != []  # the scan did reach the device


# ── The fake server itself ────────────────────────────────────────────────────


def triage_request(workspace: Path) -> list[Any]:
    files = sorted(str(p) for p in workspace.rglob("*.md"))
    payload = {
        "kind": TRIAGE_KIND,
        "projects": [],
        "files": [{"path": f, "root": str(workspace)} for f in files],
    }
    return [SystemMessage("Group the files."), payload_message("Files follow.", payload)]


async def test_streamed_answer_matches_the_plain_one(server: FakeOpenAI, workspace: Path) -> None:
    messages = triage_request(workspace)
    plain = ChatOpenAI(model="m", api_key="k", base_url=server.base_url)  # type: ignore[arg-type]
    streamed = ChatOpenAI(
        model="m",
        api_key="k",
        base_url=server.base_url,
        streaming=True,
        stream_usage=True,  # type: ignore[arg-type]
    )

    a = await plain.bind_tools([TriageAnswer]).ainvoke(messages)
    b = await streamed.bind_tools([TriageAnswer]).ainvoke(messages)

    assert [r.get("stream") for r in server.requests] == [False, True]
    assert len(a.tool_calls) == len(b.tool_calls) == 1
    assert a.tool_calls[0]["args"] == b.tool_calls[0]["args"]
    assert a.tool_calls[0]["args"]["groups"][0]["project_id"] == "standalone"
    assert b.usage_metadata is not None and b.usage_metadata["total_tokens"] > 0


async def test_held_request_waits_until_released(server: FakeOpenAI, workspace: Path) -> None:
    model = ChatOpenAI(model="m", api_key="k", base_url=server.base_url)  # type: ignore[arg-type]
    hold = server.hold(when=TRIAGE)
    task = asyncio.create_task(model.bind_tools([TriageAnswer]).ainvoke(triage_request(workspace)))

    assert await asyncio.to_thread(hold.arrived.wait, 30)
    assert server.calls == 1
    assert not task.done()
    hold.release()
    answer = await task

    assert hold.served_at == 1
    assert [c["name"] for c in answer.tool_calls] == [TRIAGE_TOOL]


async def test_unanswered_tool_calls_are_refused_like_the_real_api(server: FakeOpenAI) -> None:
    model = ChatOpenAI(model="m", api_key="k", base_url=server.base_url, max_retries=0)  # type: ignore[arg-type]
    dangling = AIMessage("", tool_calls=[ToolCall(name="create_task", args={}, id="call_1")])

    with pytest.raises(openai.BadRequestError, match="call_1"):
        await model.ainvoke([HumanMessage("hi"), dangling, HumanMessage("again")])

    assert server.calls == 1
