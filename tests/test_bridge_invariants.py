"""Each device-bridge invariant of the architecture (1-4, 8-11), pinned by a test."""

import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.types import Command

from device import LocalDevice
from graphs import local_agent, processing, triage
from nodes.bridge import DEVICE_CALLS
from nodes.context import AgentContext
from relaygraph import runner
from tests.support.agent import (
    RecordingDevice,
    agent_graph,
    group_payload,
    tool_turn,
    triage_call,
)
from tests.support.scripted import ScriptedChatModel
from tools.catalog import DEVICE_TOOLS
from tools.policy import PathPolicy, PolicyViolation


def one_group_script(workspace: Path) -> list[Any]:
    return [
        triage_call({"standalone": [str(workspace / "inbox.md")]}),
        tool_turn(("create_task", {"title": "A"}), ("create_task", {"title": "B"})),
        AIMessage(content="done"),
    ]


def config(thread_id: str) -> Any:
    return runner.thread_config(thread_id)


async def test_interrupt_values_are_stable_across_a_restart(
    tmp_path: Path, workspace: Path
) -> None:
    """Invariants 1 and 4: a node re-runs from its first line on resume and asks for the
    same calls with the same ids; a new process reading the checkpoint sees the same ids."""
    url = str(tmp_path / "state.db")
    context = AgentContext(directory_paths=[str(workspace)])
    thread = str(uuid.uuid4())
    async with agent_graph(url, ScriptedChatModel()) as graph:
        await graph.ainvoke({}, config(thread), context=context, durability="sync")
        first = (await graph.aget_state(config(thread))).interrupts
    async with agent_graph(url, ScriptedChatModel()) as graph:  # a "restarted process"
        again = (await graph.aget_state(config(thread))).interrupts
    assert len(first) == 1, "one interrupt for the whole triage batch"
    assert first[0].value["type"] == DEVICE_CALLS
    assert [i.value for i in again] == [i.value for i in first]
    assert [i.id for i in again] == [i.id for i in first]
    ids = [c["id"] for c in first[0].value["calls"]]
    assert len(set(ids)) == len(ids)
    run_key = ids[0].split("/")[0]
    assert all(i.startswith(f"{run_key}/triage/") for i in ids)


async def test_model_turn_is_checkpointed_before_the_device_sees_its_calls(
    storage_url: str, workspace: Path, device: LocalDevice
) -> None:
    """Invariants 2 and 3: the device is handed calls only once the graph has returned with
    the interrupt, and the model turn that made them is already in the checkpoint; resuming
    never calls the model again for the same turn."""
    model = ScriptedChatModel(script=one_group_script(workspace))
    thread = str(uuid.uuid4())
    seen: list[tuple[set[str], set[str]]] = []
    async with agent_graph(storage_url, model) as graph:

        async def check(calls: Any) -> None:
            snapshot = await graph.aget_state(config(thread), subgraphs=True)
            pending = {c["id"] for i in snapshot.interrupts for c in i.value["calls"]}
            checkpointed_tool_ids: set[str] = set()
            for task in snapshot.tasks:
                sub = task.state
                for message in getattr(sub, "values", {}).get("messages", []):
                    if isinstance(message, AIMessage):
                        checkpointed_tool_ids |= {c["id"] for c in message.tool_calls}
            seen.append((pending, checkpointed_tool_ids))
            assert {c["id"] for c in calls} <= pending

        recorder = RecordingDevice(device, before=check)
        values = await runner.start(
            graph,
            thread_id=thread,
            graph_input={},
            context=AgentContext(directory_paths=[str(workspace)]),
            device=recorder,
        )
    assert values["report"]["created"] == {"tasks": 2}
    turn_batch = recorder.batches[-1]
    _, checkpointed = seen[-1]
    assert {c["id"].rsplit("/", 1)[1] for c in turn_batch} <= checkpointed
    assert len(model.calls) == 3 and not model.script


async def test_resuming_an_unknown_thread_is_an_error(
    storage_url: str, device: LocalDevice
) -> None:
    """Invariant 8: LangGraph would start a fresh run; the runner refuses."""
    async with agent_graph(storage_url, ScriptedChatModel()) as graph:
        with pytest.raises(runner.UnknownThread, match="nothing to resume"):
            await runner.resume(
                graph, thread_id="never-started", context=AgentContext(), device=device
            )


async def test_parallel_groups_keep_their_own_answers(
    storage_url: str, workspace: Path, device: LocalDevice, mobile_project: str
) -> None:
    """Invariant 9: subgraphs have no checkpointer of their own, and the answers of two
    groups interrupted in the same step reach the right group."""
    assert processing.graph.checkpointer is None
    assert triage.graph.checkpointer is None
    assert local_agent.graph.checkpointer is None

    def brain(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        group = group_payload(messages)
        name = Path(group["files"][0]["path"]).stem
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            return AIMessage(content=f"{name}: {results[0].content}")
        return tool_turn(("create_task", {"title": f"from {name}"}))

    model = ScriptedChatModel(
        script=[
            triage_call(
                {
                    "standalone": [str(workspace / "inbox.md")],
                    mobile_project: [str(workspace / "mobile-app" / "backlog.txt")],
                }
            ),
            brain,
            brain,
            brain,
            brain,
        ]
    )
    async with agent_graph(storage_url, model) as graph:
        values = await runner.start(
            graph,
            thread_id="t",
            graph_input={},
            context=AgentContext(
                directory_paths=[str(workspace)], data_types=["tasks", "projects"]
            ),
            device=device,
        )
    summaries = {o["summary"].split(":")[0]: o["summary"] for o in values["report"]["outcomes"]}
    assert "from inbox" in summaries["inbox"] and "from backlog" not in summaries["inbox"]
    assert "from backlog" in summaries["backlog"] and "from inbox" not in summaries["backlog"]


@pytest.fixture
def mobile_project(device: LocalDevice) -> str:
    return str(
        device.execute_one({"id": "seed", "name": "create_project", "args": {"name": "mobile"}})[
            "result"
        ]["id"]
    )


async def test_runner_resumes_with_sync_durability(workspace: Path, device: LocalDevice) -> None:
    """Invariant 10: every step around device side effects is checkpointed synchronously."""
    seen: list[Any] = []
    model = ScriptedChatModel(script=one_group_script(workspace))
    async with agent_graph("memory", model) as graph:
        original = graph.astream

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs.get("durability"))
            return original(*args, **kwargs)

        graph.astream = spy  # type: ignore[method-assign]
        await runner.start(
            graph,
            thread_id="t",
            graph_input={},
            context=AgentContext(directory_paths=[str(workspace)]),
            device=device,
        )
    assert seen and set(seen) == {"sync"}


def test_path_policy_refuses_escapes_foreign_roots_and_extensions(tmp_path: Path) -> None:
    """Invariant 11, server side."""
    policy = PathPolicy.build([str(tmp_path / "ws")], ["md"])
    read = DEVICE_TOOLS["read_file_content"]
    policy.check(read, {"path": str(tmp_path / "ws" / "a" / "b.MD")})
    for path in [
        str(tmp_path / "ws" / ".." / "other" / "a.md"),
        str(tmp_path / "ws-evil" / "a.md"),
        "relative/a.md",
        str(tmp_path / "ws" / "a.pdf"),
    ]:
        with pytest.raises(PolicyViolation):
            policy.check(read, {"path": path})
    scan = DEVICE_TOOLS["scan_directory"]
    with pytest.raises(PolicyViolation):
        policy.check(scan, {"path": str(tmp_path / "ws"), "extensions": [".exe"]})
    policy.check(scan, {"path": str(tmp_path / "ws"), "extensions": [".md"]})


def test_device_checks_paths_again(tmp_path: Path, device: LocalDevice) -> None:
    """Invariant 11, device side: a call that slipped past the server is still refused."""
    (tmp_path / "outside.md").write_text("x")
    result = device.execute_one(
        {"id": "x1", "name": "read_file_content", "args": {"path": str(tmp_path / "outside.md")}}
    )
    assert result["ok"] is False and "outside the folders" in result["error"]


def test_a_device_reads_and_scans_only_the_kinds_of_file_it_shares(tmp_path: Path) -> None:
    """Invariant 11, device side, for extensions: the device's own list holds whatever the
    server asks (the reference device shares .md and .txt unless told otherwise)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.md").write_text("# Notes")
    (shared / "creds.key").write_text("secret")
    device = LocalDevice([shared], tmp_path / "d.db", extensions=[".md", "TXT"])
    read = device.execute_one(
        {"id": "r1", "name": "read_file_content", "args": {"path": str(shared / "creds.key")}}
    )
    assert read["ok"] is False and "kinds of file this device shares" in read["error"]
    assert device.execute_one(
        {"id": "r2", "name": "read_file_content", "args": {"path": str(shared / "notes.md")}}
    )["ok"]
    scans = [([".md", ".key"], ["notes.md"]), ([".key"], []), ([], ["notes.md"])]
    for number, (asked, found) in enumerate(scans):
        scan = device.execute_one(
            {
                "id": f"s{number}",
                "name": "scan_directory",
                "args": {"path": str(shared), "extensions": asked},
            }
        )
        assert scan["ok"], scan
        assert [Path(f["path"]).name for f in scan["result"]["files"]] == found, asked


def test_device_replays_a_repeated_call_id(device: LocalDevice) -> None:
    """Invariant 6 for the in-process device: a redelivered call is not executed twice."""
    call = {"id": "dup", "name": "create_task", "args": {"title": "Once"}}
    first = device.execute_one(call)  # type: ignore[arg-type]
    second = device.execute_one(call)  # type: ignore[arg-type]
    assert first == second
    assert [t["title"] for t in device.rows("tasks")] == ["Once"]


async def test_resume_answers_each_interrupt_by_its_id(
    workspace: Path, device: LocalDevice
) -> None:
    """The resume value maps interrupt ids to {call id: result}; a missing result is an
    error the model reads, never a crash."""
    model = ScriptedChatModel(script=one_group_script(workspace))
    context = AgentContext(directory_paths=[str(workspace)])
    async with agent_graph("memory", model) as graph:
        cfg = config("t")
        await graph.ainvoke({}, cfg, context=context, durability="sync")
        for _ in range(3):  # triage, the reads and the lookups answered by the device
            snapshot = await graph.aget_state(cfg)
            command = await runner.answer_interrupts(snapshot, device)
            await graph.ainvoke(command, cfg, context=context, durability="sync")
        [pending] = (await graph.aget_state(cfg)).interrupts
        await graph.ainvoke(
            Command(resume={pending.id: {}}), cfg, context=context, durability="sync"
        )
        values = (await graph.aget_state(cfg)).values
    results = [m for m in model.calls[-1][0] if isinstance(m, ToolMessage)]
    assert [r.status for r in results] == ["error", "error"]
    assert all("no result" in str(r.content) for r in results)
    # nothing was written, so the run failed, and its files are retried next run
    assert values["report"]["status"] == "error"
    assert values["report"]["failed_files"] != []
    assert device.count_rows()["tasks"] == 0
