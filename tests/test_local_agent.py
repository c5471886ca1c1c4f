"""The local agent end to end with scripted models, on memory, SQLite and Postgres."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from device import LocalDevice
from graphs import processing
from llm import load_chat_model
from nodes.bridge import DeviceCall, DeviceResult
from nodes.context import AgentContext
from nodes.state import STANDALONE, Chunk, Part, RunReport
from nodes.triage import TRIAGE_FAILED
from relaygraph import runner
from relaygraph.local_run import default_context, run_local_agent
from tests.support.agent import (
    RecordingDevice,
    agent_graph,
    group_payload,
    run_agent,
    tool_results,
    tool_turn,
    triage_call,
    triage_payload,
)
from tests.support.scripted import ScriptedChatModel
from tools.catalog import DATA_TYPES


def seed_project(device: LocalDevice) -> tuple[str, str]:
    """A user-made project with one task, as the desktop app would hold them."""
    project = device.execute_one(
        {"id": "seed-p", "name": "create_project", "args": {"name": "Website redesign"}}
    )
    project_id = project["result"]["id"]
    task = device.execute_one(
        {
            "id": "seed-t",
            "name": "create_task",
            "args": {"title": "Draft the homepage wireframe", "projectId": project_id},
        }
    )
    return project_id, task["result"]["id"]


def context_for(workspace: Path, **overrides: Any) -> AgentContext:
    return AgentContext(directory_paths=[str(workspace)], **overrides)


def split_by_folder(project_id: str) -> Any:
    """Triage that puts website-redesign files in the project and the rest standalone."""

    def answer(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        files = [f["path"] for f in triage_payload(messages)["files"]]
        website = [f for f in files if "/website-redesign/" in f]
        return triage_call(
            {project_id: website, "standalone": [f for f in files if f not in website]}
        )

    return answer


def update_first_brain(project_id: str) -> Any:
    """Processing turns: update the matching task, create what is new, then summarise."""

    def answer(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        if any(isinstance(m, AIMessage) for m in messages):
            return AIMessage(content="Updated one task, created the rest.")
        group = group_payload(messages)
        if group["project_id"] == project_id:
            existing = group["existing"]["tasks"][0]
            return tool_turn(
                ("update_task", {"taskId": existing["id"], "state": "In Progress"}),
                ("add_task_comment", {"taskId": existing["id"], "content": "Draft started."}),
                (
                    "create_timeline",
                    {"title": "Launch", "date": "2026-03-20", "projectId": project_id},
                ),
            )
        return tool_turn(
            ("create_task", {"title": "Renew the domain name"}),
            ("create_note", {"title": "Ideas", "content": "A newsletter for past clients."}),
        )

    return answer


async def test_local_agent_updates_first_and_counts_from_tool_results(
    storage_url: str, workspace: Path, device: LocalDevice
) -> None:
    project_id, task_id = seed_project(device)
    triage = split_by_folder(project_id)
    brain = update_first_brain(project_id)
    model = ScriptedChatModel(script=[triage, brain, brain, brain, brain])
    recorder = RecordingDevice(device)

    async with agent_graph(storage_url, model) as graph:
        values = await run_agent(graph, context_for(workspace), recorder)

    report = values["report"]
    assert report["status"] == "success", report["errors"]
    assert report["files_scanned"] == 4
    assert report["files_processed"] == 4
    assert report["created"] == {"timelines": 1, "tasks": 1, "notes": 1}
    assert report["updated"] == {"tasks": 2}
    assert report["watermark"] is not None
    assert not model.script, "every scripted answer was used exactly once"

    tasks = {t["title"]: t for t in device.rows("tasks")}
    assert tasks["Draft the homepage wireframe"]["state"] == "In Progress"
    assert tasks["Draft the homepage wireframe"]["isAiSuggested"] == 0
    created = tasks["Renew the domain name"]
    assert (created["isAiSuggested"], created["isApproved"]) == (1, 0)
    assert created["state"] == "ToDo"
    [comment] = device.rows("task_comments")
    assert (comment["taskId"], comment["author"]) == (task_id, "Adiuva")
    [timeline] = device.rows("timelines")
    assert (timeline["projectId"], timeline["isAiSuggested"]) == (project_id, 1)
    # triage is one batch: the scan and the project list, no model-driven folder walking
    assert [c["name"] for c in recorder.batches[0]] == ["scan_directory", "list_all_projects"]


async def test_device_calls_of_one_model_turn_go_out_as_one_interrupt(
    storage_url: str, workspace: Path, device: LocalDevice
) -> None:
    turn = tool_turn(
        ("create_task", {"title": "One"}),
        ("create_task", {"title": "Two"}),
        ("create_note", {"title": "Three", "content": "x"}),
    )
    model = ScriptedChatModel(
        script=[
            triage_call({"standalone": [str(workspace / "inbox.md")]}),
            turn,
            AIMessage(content="done"),
        ]
    )
    recorder = RecordingDevice(device)
    context = context_for(workspace)
    async with agent_graph(storage_url, model) as graph:
        values = await run_agent(graph, context, recorder)

    assert values["report"]["status"] == "success"
    sizes = [[c["name"] for c in batch] for batch in recorder.batches]
    assert sizes[-1] == ["create_task", "create_task", "create_note"]
    assert len(recorder.batches) == 4  # triage, the reads, the lookups, the one model turn


async def test_refused_calls_never_reach_the_device(workspace: Path, device: LocalDevice) -> None:
    (workspace / "secret.pdf").write_text("not for the agent")
    turn = tool_turn(
        ("delete_everything", {}),
        ("create_task", {"description": "no title"}),
        ("read_file_content", {"path": "/etc/passwd"}),
        ("read_file_content", {"path": str(workspace / "../workspace/../../etc/hosts")}),
        ("read_file_content", {"path": str(workspace / "secret.pdf")}),
    )
    model = ScriptedChatModel(
        script=[
            triage_call({"standalone": [str(workspace / "inbox.md")]}),
            turn,
            AIMessage(content="done"),
        ]
    )
    recorder = RecordingDevice(device)
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context_for(workspace), recorder)

    assert len(recorder.batches) == 3, "the refused turn made no device round trip"
    results = tool_results(model.calls[-1][0])
    assert [r["status"] for r in results] == ["error"] * 5
    assert "Unknown tool 'delete_everything'" in results[0]["content"]
    assert "title" in results[1]["content"] and "Field required" in results[1]["content"]
    assert "outside the agent's directories" in results[2]["content"]
    assert "outside the agent's directories" in results[3]["content"]
    assert "allowed extensions" in results[4]["content"]
    report = values["report"]
    assert report["status"] == "success"  # refusals are the model's to recover from
    assert report["outcomes"][0]["refused_calls"] == 5


async def test_device_failures_come_back_as_error_messages_and_make_the_run_partial(
    workspace: Path, device: LocalDevice
) -> None:
    turn = tool_turn(
        ("update_task", {"taskId": "no-such-task", "state": "Completed"}),
        ("create_task", {"title": "Still created"}),
    )
    model = ScriptedChatModel(
        script=[
            triage_call({"standalone": [str(workspace / "inbox.md")]}),
            turn,
            AIMessage(content="one failed"),
        ]
    )
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context_for(workspace), RecordingDevice(device))

    [failed, created] = tool_results(model.calls[-1][0])
    assert failed["status"] == "error" and "does not exist" in failed["content"]
    assert created["status"] == "success"
    report = values["report"]
    assert report["status"] == "partial"
    assert report["created"] == {"tasks": 1} and report["updated"] == {}
    assert any("does not exist" in e for e in report["errors"])
    assert report["watermark"] is not None, "a partial run still moves the watermark"
    # the files of the chunk whose write failed are not counted as processed: they are
    # retried next run (the triage left the others standalone, so all share one chunk)
    assert report["files_processed"] == 0
    failed = {f["path"] for f in report["failed_files"]}
    assert str(workspace / "inbox.md") in failed and len(failed) == report["files_scanned"]


async def test_step_budget_ends_with_a_final_answer_without_tools(
    workspace: Path, device: LocalDevice
) -> None:
    def always_tools(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        if not names:
            return AIMessage(content="Out of steps; the rest is undone.")
        return tool_turn(("list_tasks", {}))

    model = ScriptedChatModel(
        script=[triage_call({"standalone": [str(workspace / "inbox.md")]})] + [always_tools] * 3
    )
    context = context_for(workspace, max_processing_steps=2)
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context, RecordingDevice(device))

    bound = [names for _, names in model.calls[1:]]
    assert [bool(n) for n in bound] == [True, True, False]
    outcome = values["report"]["outcomes"][0]
    assert outcome["summary"] == "Out of steps; the rest is undone."


async def test_triage_is_chunked_for_large_trees(workspace: Path, device: LocalDevice) -> None:
    def everything_standalone(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        return triage_call({"standalone": [f["path"] for f in triage_payload(messages)["files"]]})

    model = ScriptedChatModel(
        script=[everything_standalone, everything_standalone, AIMessage(content="nothing")]
    )
    context = context_for(workspace, triage_chunk_size=3)
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context, RecordingDevice(device))

    chunk_sizes = [len(triage_payload(m)["files"]) for m, _ in model.calls[:2]]
    assert chunk_sizes == [3, 1]
    assert values["report"]["files_processed"] == 4


async def test_invalid_triage_is_retried_then_the_run_fails_clearly(
    storage_url: str, workspace: Path, device: LocalDevice
) -> None:
    bad = triage_call({"standalone": ["/nowhere/invented.md"]})
    unknown_project = triage_call({"p-404": [str(workspace / "inbox.md")]})
    garbage = AIMessage(content="Sure! Here are your groups: inbox.md -> misc")
    model = ScriptedChatModel(script=[bad, unknown_project, garbage])
    recorder = RecordingDevice(device)
    async with agent_graph(storage_url, model) as graph:
        values = await run_agent(graph, context_for(workspace), recorder, since=None)

    report = values["report"]
    assert report["status"] == "error"
    assert report["errors"][0].startswith(TRIAGE_FAILED.split("{")[0])
    assert report["watermark"] is None, "a failed run does not move the watermark"
    assert len(recorder.batches) == 1, "nothing was processed"
    assert device.count_rows() == {"projects": 0, "tasks": 0, "notes": 0, "timelines": 0}


async def test_invalid_triage_answer_is_retried(workspace: Path, device: LocalDevice) -> None:
    bad = triage_call({"standalone": ["/nowhere/invented.md"]})
    good = triage_call({"standalone": [str(workspace / "inbox.md")]})
    model = ScriptedChatModel(script=[bad, good, AIMessage(content="nothing to do")])
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context_for(workspace), RecordingDevice(device))
    assert values["report"]["status"] == "success"
    assert not model.script


async def test_unchanged_folder_makes_no_model_call(workspace: Path, device: LocalDevice) -> None:
    model = ScriptedChatModel(script=[])  # any model call would fail the test
    recorder = RecordingDevice(device)
    async with agent_graph("memory", model) as graph:
        values = await run_agent(
            graph, context_for(workspace), recorder, since="2999-01-01T00:00:00+00:00"
        )
    report = values["report"]
    assert report["status"] == "success"
    assert report["files_scanned"] == 0 and model.calls == []
    assert len(recorder.batches) == 1


@pytest.mark.parametrize("missing", ["folder", "file"])
async def test_missing_folder_or_vanished_file_is_reported(
    missing: str, workspace: Path, device: LocalDevice
) -> None:
    inbox = workspace / "inbox.md"
    context = context_for(workspace if missing == "file" else workspace / "gone")

    async def vanish(calls: Any) -> None:
        if any(c["name"] == "read_file_content" for c in calls):
            inbox.unlink(missing_ok=True)

    def everything_standalone(messages: list[BaseMessage], names: set[str]) -> AIMessage:
        return triage_call({"standalone": [f["path"] for f in triage_payload(messages)["files"]]})

    brain = AIMessage(content="done")
    model = ScriptedChatModel(script=[everything_standalone, brain])
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context, RecordingDevice(device, before=vanish))
    report = values["report"]
    if missing == "folder":
        assert report["status"] == "error"
        assert "Could not scan" in report["errors"][0] and "not a folder" in report["errors"][0]
    else:
        assert report["status"] == "partial"
        assert any("inbox.md: could not be read" in e for e in report["errors"])
        assert report["files_processed"] == 3


async def test_one_title_in_two_projects_is_two_records_and_each_updates_its_own(
    tmp_path: Path,
) -> None:
    """The offline extractor's record is (title, project), as the device's duplicate rule:
    the same line in two clients' folders makes one record in each, in one chunk or across
    runs, and a changed line updates its own project's record, never the other's."""
    folder = tmp_path / "clients"
    for client, date in (("Acme", "2026-01-10"), ("Globex", "2026-02-01")):
        (folder / client).mkdir(parents=True)
        (folder / client / "plan.md").write_text(f"{date} Kickoff\nTODO: Send invoice\n")
    (folder / "Initech").mkdir()
    later = folder / "Initech" / "plan.md"
    device = LocalDevice([folder], tmp_path / "entities.db")
    state = str(tmp_path / "state.db")
    model = load_chat_model(env={}).model

    async def run() -> RunReport:
        context = default_context(folder, DATA_TYPES, [".md"])
        done = await run_local_agent(context=context, state_url=state, model=model, device=device)
        return done.report

    def by_project(table: str) -> dict[str, str]:
        names = {p["id"]: p["name"] for p in device.rows("projects")}
        key = "date" if table == "timelines" else "state"
        return {names[r["projectId"]]: r[key] for r in device.rows(table) if r["title"] in TITLES}

    try:
        first = await run()  # both folders in one chunk
        assert first["status"] == "success", first["errors"]
        assert by_project("timelines") == {"Acme": "2026-01-10", "Globex": "2026-02-01"}
        assert by_project("tasks") == {"Acme": "ToDo", "Globex": "ToDo"}

        later.write_text("2026-03-15 Kickoff\nDONE: Send invoice\n")  # a new client, run 2
        second = await run()
        assert second["status"] == "success", second["errors"]
        assert by_project("timelines") == {
            "Acme": "2026-01-10",
            "Globex": "2026-02-01",
            "Initech": "2026-03-15",
        }
        assert by_project("tasks") == {"Acme": "ToDo", "Globex": "ToDo", "Initech": "Completed"}

        (folder / "Globex" / "plan.md").write_text("2026-02-08 Kickoff\nDONE: Send invoice\n")
        third = await run()
        assert third["updated"] == {"timelines": 1, "tasks": 1}, third
        assert third["created"] == {}
        assert by_project("timelines")["Globex"] == "2026-02-08"
        assert by_project("timelines")["Acme"] == "2026-01-10"
        done = {"Acme": "ToDo", "Globex": "Completed", "Initech": "Completed"}
        assert by_project("tasks") == done
    finally:
        device.close()


TITLES = {"Kickoff", "Send invoice"}


async def test_a_chunk_outside_the_agents_folders_is_never_read(
    workspace: Path, device: LocalDevice, tmp_path: Path
) -> None:
    """The processing graph can be started with any chunk (it is a graph of the server's API):
    its reads pass the same guard as the model's calls, and a refused file fails."""
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "notes.md").write_text("# Not the agent's\n")
    (workspace / "creds.key").write_text("secret")
    refused = ["/etc/passwd", str(sibling / "notes.md"), str(workspace / "creds.key")]
    allowed = str(workspace / "inbox.md")
    parts = [
        Part(path=p, root=str(workspace), part=1, parts=1, offset=0, length=100)
        for p in [*refused, allowed]
    ]
    recorder = RecordingDevice(device)
    model = ScriptedChatModel(script=[AIMessage(content="done")])
    graph = processing.build(model).copy(
        update={"checkpointer": InMemorySaver(), "store": InMemoryStore()}
    )
    values = await runner.start(
        graph,
        thread_id="direct",
        graph_input={"run_key": "direct", "chunk": Chunk(key=STANDALONE, index=0, parts=parts)},
        context=context_for(workspace),
        device=recorder,
    )
    sent = [call["args"]["path"] for call in recorder.calls("read_file_content")]
    assert sent == [allowed], "only the allowed file reached the device"
    failures = {f["path"]: f["error"] for f in values["failed"]}
    assert "outside the agent's directories" in failures["/etc/passwd"]
    assert "outside the agent's directories" in failures[str(sibling / "notes.md")]
    assert "allowed extensions" in failures[str(workspace / "creds.key")]
    assert allowed not in failures


class WideScanDevice:
    """The real device, adding one file of its own to every scan's first page."""

    def __init__(self, inner: LocalDevice, extra: str) -> None:
        self.inner, self.extra, self.added = inner, extra, 0

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        results = await self.inner.execute(calls)
        for call in calls:
            result = results[call["id"]]
            if call["name"] == "scan_directory" and result["ok"] and not call["args"].get("cursor"):
                files = result["result"]["files"]
                files.append({**files[0], "path": self.extra})
                self.added += 1
        return results


async def test_scanned_files_of_other_extensions_are_left_out_of_the_manifest(
    workspace: Path, device: LocalDevice
) -> None:
    """A device that lists more than the scan asked for (a `.bin` beside the notes) does not
    widen what the agent reads."""
    (workspace / "blob.bin").write_bytes(b"\x00\x01")
    wide = WideScanDevice(device, extra=str(workspace / "blob.bin"))
    model = ScriptedChatModel(
        script=[triage_call({"standalone": [str(workspace / "inbox.md")]}), AIMessage("done")]
    )
    async with agent_graph("memory", model) as graph:
        await run_agent(graph, context_for(workspace), wide)
    manifest = triage_payload(model.calls[0][0])
    assert str(workspace / "blob.bin") not in json.dumps(manifest)
    assert wide.added, "the device did list the extra file"


async def test_any_tool_call_id_the_model_gives_is_made_safe_and_unique(
    workspace: Path, device: LocalDevice
) -> None:
    """A 600-character id, one with a slash and a NUL, and one id given to two creates: each
    call reaches the device once, under a short id of the server's; the model reads each
    answer under the id it gave."""
    odd = ["x" * 600, "a/b\x00c", "dup", "dup"]
    titles = ["Long id task", "Odd id task", "First of two", "Second of two"]
    turn = AIMessage(
        content="",
        tool_calls=[
            ToolCall(name="create_task", args={"title": title}, id=tool_call_id)
            for tool_call_id, title in zip(odd, titles, strict=True)
        ],
    )
    model = ScriptedChatModel(
        script=[triage_call({"standalone": [str(workspace / "inbox.md")]}), turn, AIMessage("ok")]
    )
    recorder = RecordingDevice(device)
    async with agent_graph("memory", model) as graph:
        values = await run_agent(graph, context_for(workspace), recorder)

    creates = recorder.calls("create_task")
    assert [c["args"]["title"] for c in creates] == titles
    assert len({c["id"] for c in creates}) == 4
    assert all(len(c["id"]) < 200 and "\x00" not in c["id"] for c in creates)
    assert {t["title"] for t in device.rows("tasks")} >= set(titles)
    answers = [m for m in model.calls[-1][0] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in answers] == odd
    assert all(m.status == "success" for m in answers)
    assert values["report"]["created"]["tasks"] == 4
