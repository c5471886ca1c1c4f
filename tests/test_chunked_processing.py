"""The local agent on folders larger than one model request, with `ChatOpenAI` against a
fake OpenAI server that refuses prompts over its context window, as real models do.

Every request fits the budget; a large file is read in parts, none of it cut; existing
records are looked up, not listed; a file whose read, lookup or writes failed is retried on
the next run, changed or not; a request the server refuses ends the run, never sticks it.
"""

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _convert_message_to_dict
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

import nodes.triage
from device import LocalDevice
from harness.fake_openai import FakeOpenAI, prompt_tokens
from llm import load_chat_model
from llm.tokens import (
    MESSAGE_OVERHEAD,
    count_message,
    count_request,
    count_tokens,
    estimate_tokens,
)
from nodes.bridge import DeviceCall, DeviceResult
from nodes.context import AgentContext
from nodes.payloads import GROUP_KIND
from relaygraph.local_run import LocalRun, default_context, run_local_agent
from tools.catalog import DATA_TYPES, tools_for_data_types

BUDGET = 12_000  # tokens: the sample tree below needs many chunks at this size
BIG_FILE_TASKS = 40


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A client folder of 30 notes with their own TODOs, and one 200 KB meeting log whose
    checklist items are spread from its first line to its last."""
    root = tmp_path / "projects"
    notes = root / "Acme" / "notes"
    notes.mkdir(parents=True)
    prose = "We went over the plan again and agreed to keep the scope as it is. " * 4
    for i in range(30):
        lines = [f"# Meeting {i}", prose]
        lines += [f"TODO: Acme follow-up {i}-{j}" for j in range(12)]
        (notes / f"meeting-{i:02}.md").write_text("\n".join(lines) + "\n")
    log: list[str] = []
    for k in range(BIG_FILE_TASKS):
        log.append(f"- [ ] Big log item {k}")
        log += [prose] * 18
    (root / "Acme" / "log.md").write_text("\n".join(log) + "\n")
    assert (root / "Acme" / "log.md").stat().st_size > 190_000
    return root


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(max_prompt_tokens=BUDGET) as fake:
        yield fake


def chat_model(server: FakeOpenAI) -> BaseChatModel:
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
    model = load_chat_model(env=env).model
    assert isinstance(model, ChatOpenAI)
    return model


def context_of(folder: Path, budget: int = BUDGET) -> AgentContext:
    context = default_context(folder, DATA_TYPES, [".md", ".txt"])
    context.max_prompt_tokens = budget
    return context


async def run(context: AgentContext, state: Path, model: BaseChatModel, device: Any) -> LocalRun:
    return await run_local_agent(context=context, state_url=str(state), model=model, device=device)


class FlakyDevice:
    """The in-process device, failing the calls `fails` picks until `healed`."""

    def __init__(self, inner: LocalDevice, fails: Any) -> None:
        self.inner, self.fails, self.healed = inner, fails, False
        self.calls: list[DeviceCall] = []

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        self.calls += calls
        broken = [c for c in calls if not self.healed and self.fails(c)]
        results = await self.inner.execute([c for c in calls if c not in broken])
        for call in broken:
            results[call["id"]] = DeviceResult(ok=False, error="disk on fire")
        return results


def titles(device: LocalDevice, table: str = "tasks") -> Counter[str]:
    key = "name" if table == "projects" else "title"
    return Counter(str(r[key]) for r in device.rows(table))


async def test_no_request_exceeds_the_budget_and_no_line_is_cut(
    tree: Path, tmp_path: Path, server: FakeOpenAI
) -> None:
    device = LocalDevice([tree], tmp_path / "entities.db")
    outcome = await run(context_of(tree), tmp_path / "state.db", chat_model(server), device)

    report = outcome.report
    assert server.refused == 0, "no request was over the model's window"
    assert max(server.prompt_tokens) <= BUDGET
    assert report["status"] == "success", report["errors"]
    assert report["files_processed"] == report["files_scanned"] == 31
    assert report["chunks"] > 10
    # every item of the big file, to its last line, became one task: nothing cut, nothing
    # read twice where its parts overlap
    created = titles(device)
    assert [t for t, n in created.items() if n > 1] == []
    assert {f"Big log item {k}" for k in range(BIG_FILE_TASKS)} <= set(created)
    assert {f"Acme follow-up {i}-{j}" for i in range(30) for j in range(12)} <= set(created)
    # parallel chunks of one folder made its project once
    assert titles(device, "projects") == Counter({"Acme": 1})
    # the model was told which part of the big file it read
    labels = {
        f.get("part")
        for request in server.requests
        for f in _group_files(request)
        if f["path"].endswith("log.md")
    }
    assert any(label and label.startswith("part 1 of ") for label in labels)
    assert len(labels) > 5


def _group_files(request: dict[str, Any]) -> list[dict[str, Any]]:
    for message in request["messages"]:
        content = message.get("content")
        if message["role"] != "user" or not isinstance(content, list):
            continue
        for block in content:
            text = block.get("text", "")
            if text.startswith("{") and json.loads(text).get("kind") == GROUP_KIND:
                return list(json.loads(text)["files"])
    return []


class BatchRecorder:
    """The in-process device, keeping the ids of each batch it is handed."""

    def __init__(self, inner: LocalDevice) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        self.batches.append([c["id"] for c in calls])
        return await self.inner.execute(calls)


async def test_chunks_run_in_waves_so_a_device_batch_is_bounded(
    tree: Path, tmp_path: Path, server: FakeOpenAI
) -> None:
    """However many chunks a folder makes, at most `parallel_chunks` are in flight: a device
    batch holds the calls of that many chunks, never of the whole folder."""
    device = BatchRecorder(LocalDevice([tree], tmp_path / "entities.db"))
    context = context_of(tree)
    context.parallel_chunks = 3
    outcome = await run(context, tmp_path / "state.db", chat_model(server), device)

    report = outcome.report
    assert report["status"] == "success", report["errors"]
    assert report["files_processed"] == report["files_scanned"] == 31
    assert report["chunks"] > 10
    chunks_per_batch = [
        {call_id.split("/")[1].split(".")[0] for call_id in batch if "/c" in call_id}
        for batch in device.batches
    ]
    assert max(len(chunks) for chunks in chunks_per_batch) == 3, chunks_per_batch
    every_chunk = set().union(*chunks_per_batch)
    assert every_chunk == {f"c{i}" for i in range(report["chunks"])}, every_chunk
    assert {f"Acme follow-up {i}-{j}" for i in range(30) for j in range(12)} <= set(
        titles(device.inner)
    )


async def test_a_refused_request_ends_the_run_and_its_files_are_retried(
    tree: Path, tmp_path: Path
) -> None:
    """A model whose window is smaller than the configured budget refuses the requests: the
    run ends with the refusal as its error (never stuck on it), and the next run, with the
    budget set right, processes the same unchanged files."""
    device = LocalDevice([tree], tmp_path / "entities.db")
    state = tmp_path / "state.db"
    with FakeOpenAI(max_prompt_tokens=6_000) as small:
        first = await run(context_of(tree), state, chat_model(small), device)
    assert small.refused > 0
    assert first.report["status"] in ("error", "partial")
    assert any("context_length_exceeded" in e for e in first.report["errors"])
    failed = {f["path"] for f in first.report["failed_files"]}
    assert failed

    with FakeOpenAI(max_prompt_tokens=BUDGET) as right:
        second = await run(context_of(tree), state, chat_model(right), device)
    assert not second.resumed, "the refused run ended: nothing is left to resume"
    assert second.report["status"] == "success", second.report["errors"]
    assert right.refused == 0
    assert second.report["files_processed"] == len(failed)
    assert second.report["files_scanned"] == len(failed), "only the retried files"
    assert [t for t, n in titles(device).items() if n > 1] == []


async def test_a_failed_read_is_retried_on_the_next_run_though_unchanged(
    workspace: Path, device: LocalDevice, tmp_path: Path
) -> None:
    backlog = workspace / "mobile-app" / "backlog.txt"
    model = load_chat_model(env={}).model  # the offline extractor
    flaky = FlakyDevice(
        device,
        lambda c: c["name"] == "read_file_content" and c["args"]["path"] == str(backlog),
    )
    state = tmp_path / "state.db"

    first = await run(context_of(workspace), state, model, flaky)
    assert first.report["status"] == "partial"
    assert [f["path"] for f in first.report["failed_files"]] == [str(backlog)]
    assert "Prototype offline sync" not in titles(device)

    flaky.healed = True
    second = await run(context_of(workspace), state, model, flaky)
    assert second.report["status"] == "success"
    assert second.report["files_scanned"] == second.report["files_processed"] == 1
    assert "Prototype offline sync" in titles(device)
    assert [t for t, n in titles(device).items() if n > 1] == []

    flaky.calls.clear()
    third = await run(context_of(workspace), state, model, flaky)
    assert third.report["files_scanned"] == 0
    assert not [c for c in flaky.calls if c["name"] == "read_file_content"]


async def test_a_failed_lookup_creates_nothing_in_its_chunk_and_is_retried(
    workspace: Path, device: LocalDevice, tmp_path: Path
) -> None:
    model = load_chat_model(env={}).model
    flaky = FlakyDevice(device, lambda c: c["name"] == "find_records")
    state = tmp_path / "state.db"

    first = await run(context_of(workspace), state, model, flaky)
    assert first.report["status"] == "error"
    assert any("Could not look up the existing" in e for e in first.report["errors"])
    assert device.count_rows() == {"projects": 0, "tasks": 0, "notes": 0, "timelines": 0}
    assert len(first.report["failed_files"]) == first.report["files_scanned"] == 4

    flaky.healed = True
    second = await run(context_of(workspace), state, model, flaky)
    assert second.report["status"] == "success"
    assert second.report["files_processed"] == 4
    assert device.count_rows()["tasks"] == 8


async def seeded(device: LocalDevice, count: int) -> None:
    """`count` user-made tasks, as a desktop app that has been used for years holds."""
    calls = [
        DeviceCall(id=f"seed-{i}", name="create_task", args={"title": f"Old chore {i}"})
        for i in range(count)
    ]
    for start in range(0, len(calls), 500):
        await device.execute(calls[start : start + 500])


@pytest.mark.parametrize("existing", [20, 3_000])
async def test_rerunning_a_changed_file_updates_and_its_prompt_ignores_the_database(
    existing: int, workspace: Path, device: LocalDevice, tmp_path: Path, server: FakeOpenAI
) -> None:
    await seeded(device, existing)
    model = chat_model(server)
    state = tmp_path / "state.db"
    first = await run(context_of(workspace), state, model, device)
    assert first.report["status"] == "success", first.report["errors"]
    tasks_before = device.count_rows()["tasks"]

    backlog = workspace / "mobile-app" / "backlog.txt"
    text = backlog.read_text()
    assert "[ ] Prototype offline sync" in text
    backlog.write_text(text.replace("[ ] Prototype offline sync", "[x] Prototype offline sync"))
    calls_before = len(server.prompt_tokens)
    second = await run(context_of(workspace), state, model, device)

    assert second.report["status"] == "success"
    assert second.report["files_scanned"] == 1
    assert second.report["created"] == {}
    assert second.report["updated"] == {"tasks": 1}
    assert device.count_rows()["tasks"] == tasks_before, "updated, not duplicated"
    [row] = [r for r in device.rows("tasks") if r["title"] == "Prototype offline sync"]
    assert row["state"] == "Completed"
    # the re-run's requests hold the file and the records it names, not the database
    rerun = server.prompt_tokens[calls_before:]
    assert max(rerun) < 6_000
    assert all("Old chore" not in json.dumps(r["messages"]) for r in server.requests[calls_before:])


async def test_a_scan_of_many_pages_finds_every_file(
    workspace: Path, device: LocalDevice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes.triage, "SCAN_PAGE", 1)
    flaky = FlakyDevice(device, lambda c: False)
    model = load_chat_model(env={}).model
    outcome = await run(context_of(workspace), tmp_path / "state.db", model, flaky)
    scans = [c for c in flaky.calls if c["name"] == "scan_directory"]
    assert len(scans) == 4, "one page a file"
    assert outcome.report["files_scanned"] == outcome.report["files_processed"] == 4


# ── The pieces ────────────────────────────────────────────────────────────────


def test_the_budget_count_over_counts_what_the_api_counts() -> None:
    """The budget is checked with `count_request`; the fake's count models OpenAI's."""
    model = ChatOpenAI(model="gpt-4.1-mini", api_key="x")  # type: ignore[arg-type]
    specs = [t.openai_spec for t in tools_for_data_types(DATA_TYPES)]
    messages = [
        SystemMessage("You keep records.\n" * 20),
        HumanMessage([{"type": "text", "text": "Files:"}, {"type": "text", "text": SAMPLE}]),
        AIMessage(
            "",
            tool_calls=[{"name": "create_task", "args": {"title": "Ünïcode ✓ 日本"}, "id": "c1"}],
        ),
        ToolMessage('{"id": "abc", "title": "Ünïcode ✓ 日本"}', tool_call_id="c1"),
    ]
    payload = model._get_request_payload(messages, tools=specs)
    assert count_request(messages, specs) >= prompt_tokens(payload)


def test_a_message_changed_under_its_id_is_counted_again() -> None:
    """Counts are remembered per message (a loop counts its conversation every turn); a tool
    result left out keeps its message id, and must be counted as what is sent now."""
    result = ToolMessage(SAMPLE * 20, tool_call_id="c1", id="m1")
    stub = result.model_copy(update={"content": "(left out)"})
    assert count_message(result) == count_message(result.model_copy())
    assert count_message(stub) < count_message(result) // 10
    wire = json.dumps(_convert_message_to_dict(stub))
    assert count_message(stub) == count_tokens(wire) + MESSAGE_OVERHEAD


SAMPLE = "\n".join(
    [
        "# Kickoff — Acme Corp\n- [ ] Send the revised quote to María by 2026-04-01",
        "TODO: 修正する ログイン画面 🚀🚀 and ✓ the naïve café façade",
        'def f(x): return {"a": [1, 2, 3], "b": x ** 2}  # code, JSON and digits 1234567890',
        "https://example.com/path?q=a%20b&x=1 " * 3,
        "AAAAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwg",
        "\t\t  indented   spaces    and\n\n\nblank lines",
    ]
)


@pytest.mark.parametrize("text", [SAMPLE, SAMPLE * 50, "日本語のテキスト" * 200, "a b c " * 300])
def test_the_estimate_over_counts_the_tokenizer(text: str) -> None:
    assert estimate_tokens(text) >= count_tokens(text)


async def test_the_device_pages_scans_lists_and_searches(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for path in ["b/z.md", "a.md", "a/x.md", "a-b.md", "c/d/e.md", ".hidden/h.md"]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    device = LocalDevice([root], tmp_path / "e.db")
    seen: list[str] = []
    cursor = None
    for page in range(10):
        args: dict[str, Any] = {"path": str(root), "limit": 2}
        if cursor:
            args["cursor"] = cursor
        result = device.execute_one({"id": f"s{page}", "name": "scan_directory", "args": args})
        seen += [f["path"][len(str(root)) + 1 :] for f in result["result"]["files"]]
        if (cursor := result["result"]["next_cursor"]) is None:
            break
    assert seen == sorted(["a-b.md", "a.md", "a/x.md", "b/z.md", "c/d/e.md"])

    for i in range(5):
        device.execute_one({"id": f"t{i}", "name": "create_task", "args": {"title": f"T {i}"}})
    first = device.execute_one({"id": "l1", "name": "list_tasks", "args": {"limit": 3}})
    assert [t["title"] for t in first["result"]["items"]] == ["T 0", "T 1", "T 2"]
    cursor = first["result"]["next_cursor"]
    rest = device.execute_one(
        {"id": "l2", "name": "list_tasks", "args": {"limit": 3, "cursor": cursor}}
    )
    assert [t["title"] for t in rest["result"]["items"]] == ["T 3", "T 4"]
    assert rest["result"]["next_cursor"] is None

    found = device.execute_one(
        {"id": "f1", "name": "find_records", "args": {"type": "tasks", "titles": ["t 3", "nope"]}}
    )
    assert [t["title"] for t in found["result"]["items"]] == ["T 3"]
    again = device.execute_one(
        {
            "id": "c1",
            "name": "create_task",
            "args": {"title": "t 3", "onDuplicate": "return_existing"},
        }
    )
    assert again["result"]["existing"] is True and again["result"]["title"] == "T 3"
    assert device.count_rows()["tasks"] == 5

    (root / "big.md").write_text("x" * 50 + "\nend")
    part = device.execute_one(
        {
            "id": "r1",
            "name": "read_file_content",
            "args": {"path": str(root / "big.md"), "offset": 40, "max_chars": 20},
        }
    )
    assert part["result"]["content"] == "x" * 10 + "\nend"
    assert part["result"]["total_chars"] == 54 and part["result"]["truncated"] is False
    device.close()


def notes_tree(root: Path, count: int) -> Path:
    """`count` notes of about 3 KB: one chunk each at the smallest budget."""
    prose = "We went over the plan again and agreed to keep the scope as it is. " * 40
    for i in range(count):
        note = root / "Acme" / f"note-{i:03}.md"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(f"# Note {i}\n{prose}\nTODO: Acme item {i}\n")
    return root


def root_checkpoints_while_chunks_ran(state: Path) -> list[int]:
    """The sizes of the root checkpoints stored between the plan and the report."""
    serde = JsonPlusSerializer()
    sizes = []
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT type, checkpoint FROM checkpoints WHERE checkpoint_ns = ''")
        for kind, blob in rows:
            values = serde.loads_typed((kind, blob))["channel_values"]
            if values.get("wave") and "report" not in values:
                sizes.append(len(blob))
    return sizes


async def test_a_checkpoint_holds_the_wave_under_way_not_the_plan(tmp_path: Path) -> None:
    """Every device round trip stores a root checkpoint, and the SQLite saver stores it
    whole: the chunks still to run and the outcomes of those done stay out of it (in the
    store), so a folder four times larger writes root checkpoints of the same size, not
    four times larger ones four times as often."""
    largest: dict[int, int] = {}
    for count in (8, 32):
        tree = notes_tree(tmp_path / f"tree-{count}", count)
        device = LocalDevice([tree], tmp_path / f"entities-{count}.db")
        context = context_of(tree, budget=8_000)
        context.parallel_chunks = 2
        state = tmp_path / f"state-{count}.db"
        outcome = await run(context, state, load_chat_model(env={}).model, device)
        assert outcome.report["status"] == "success", outcome.report["errors"]
        assert outcome.report["chunks"] == count
        assert len(outcome.report["outcomes"]) == count
        sizes = root_checkpoints_while_chunks_ran(state)
        assert len(sizes) >= count // 2  # a round trip per wave at least
        largest[count] = max(sizes)
    assert largest[32] < largest[8] * 1.25, largest
