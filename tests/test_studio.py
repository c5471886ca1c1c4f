"""The graphs as LangGraph Studio sees them: `langgraph dev` over the real `langgraph.json`.

One `langgraph dev` server per module, offline (no OpenAI variables, so the graphs use the
offline extractor; no tracing, no version check, no CLI analytics). The tests talk to it
with `langgraph_sdk` the way Studio does, and answer the device interrupts with a real
`LocalDevice` over the workspace.

The server runs in a temporary folder of symlinks to the repository's top-level entries:
the relative graph paths of `langgraph.json` resolve as they do at the repository root,
while the `.langgraph_api/` folder the in-memory runtime persists to stays out of the repo.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from device import LocalDevice
from device.local import ENTITY_TABLES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LANGGRAPH = REPO / ".venv" / "bin" / "langgraph"
STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
CALL_TIMEOUT = 60.0
MAX_ROUNDS = 12  # device round trips before a run must have finished

OFFLINE_ENV = {
    "LANGSMITH_TRACING": "false",
    "LANGSMITH_TRACING_V2": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # langgraph-api asks PyPI for a newer version
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # the CLI reports each command
}
DROPPED_ENV_PREFIXES = ("OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_")
DROPPED_ENV = ("RELAYGRAPH_MODEL", "LANGGRAPH_CLOUD_LICENSE_KEY")

GRAPH_NODES = {
    "local_agent": {"begin", "triage", "plan", "processing", "finalize"},
    "triage": {"scan_device", "group_files"},
    "processing": {
        "read_parts",
        "find_candidates",
        "call_model",
        "execute_tools",
        "record_pass",
        "record_outcome",
    },
    "agentic_loop": {
        "plan",
        "start_step",
        "call_model",
        "execute_tools",
        "finish_step",
        "adapt",
        "summarize",
    },
}
#: The agentic loop's routers, as Studio draws them: conditional edges (source, target).
AGENTIC_CONDITIONAL_EDGES = {
    ("plan", "start_step"),
    ("plan", "summarize"),
    ("call_model", "execute_tools"),
    ("call_model", "finish_step"),
    ("finish_step", "adapt"),
    ("finish_step", "start_step"),
    ("finish_step", "summarize"),
}
LOCAL_AGENT_XRAY_NODES = {
    "begin",
    "plan",
    "finalize",
    "triage:scan_device",
    "triage:group_files",
    "processing:read_parts",
    "processing:find_candidates",
    "processing:call_model",
    "processing:execute_tools",
    "processing:record_pass",
    "processing:record_outcome",
}


# ── The server ────────────────────────────────────────────────────────────────


@dataclass
class Studio:
    """A running `langgraph dev` server."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_folder(root: Path) -> Path:
    """A folder that looks like the repository root: symlinks to its visible entries."""
    folder = root / "app"
    folder.mkdir()
    for entry in REPO.iterdir():
        if not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    return folder


def offline_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(DROPPED_ENV_PREFIXES) and key not in DROPPED_ENV
    }
    return {**env, **OFFLINE_ENV}


def wait_until_ok(studio: Studio, timeout: float) -> None:
    """Poll `/ok` until the server answers; fail with its log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if studio.process.poll() is not None:
            pytest.fail(
                f"langgraph dev exited with {studio.process.returncode}:\n{studio.log_tail()}"
            )
        try:
            if httpx.get(f"{studio.url}/ok", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"langgraph dev did not answer /ok within {timeout}s:\n{studio.log_tail()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group, then kill it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    if sys.platform == "win32":  # process groups below are POSIX
        pytest.skip("needs POSIX process groups")
    root = tmp_path_factory.mktemp("studio")
    cwd = server_folder(root)
    port = free_port()
    log = root / "langgraph-dev.log"
    command = [
        str(LANGGRAPH),
        "dev",
        "--no-browser",
        "--no-reload",  # other edits to the repo must not restart the server mid-test
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        "langgraph.json",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=offline_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Studio(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        wait_until_ok(server, STARTUP_TIMEOUT)
        yield server
    finally:
        stop(process)


@pytest.fixture
def client(studio: Studio) -> LangGraphClient:
    return get_client(url=studio.url, api_key=None, timeout=httpx.Timeout(CALL_TIMEOUT))


# ── Talking to it ─────────────────────────────────────────────────────────────


async def bounded(awaitable: Any, timeout: float = CALL_TIMEOUT) -> Any:
    async with asyncio.timeout(timeout):
        return await awaitable


async def assistants_by_graph(client: LangGraphClient) -> dict[str, str]:
    """The assistant id of each graph the server registered."""
    assistants = await bounded(client.assistants.search(limit=100))
    return {a["graph_id"]: a["assistant_id"] for a in assistants}


async def node_names(client: LangGraphClient, assistant_id: str, *, xray: bool = False) -> set[str]:
    drawing = await bounded(client.assistants.get_graph(assistant_id, xray=xray))
    return {node["id"] for node in drawing["nodes"]}


async def pending_device_requests(client: LangGraphClient, thread_id: str) -> dict[str, Any]:
    """The thread's open interrupts by id; every one must be a batch of device calls."""
    state = await bounded(client.threads.get_state(thread_id))
    requests = {i["id"]: i["value"] for i in state["interrupts"]}
    for value in requests.values():
        assert isinstance(value, Mapping), value
        assert value.get("type") == "device_calls", value
    return requests


def calls_of(requests: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [call for request in requests.values() for call in request["calls"]]


async def answer(
    client: LangGraphClient,
    thread_id: str,
    graph: str,
    requests: Mapping[str, Any],
    device: LocalDevice,
    context: dict[str, Any],
) -> Any:
    """Run every pending batch on the device and resume the thread with the results."""
    resume = {
        interrupt_id: await bounded(device.execute(request["calls"]))
        for interrupt_id, request in requests.items()
    }
    return await bounded(
        client.runs.wait(thread_id, graph, command={"resume": resume}, context=context)
    )


async def drive_to_end(
    client: LangGraphClient,
    thread_id: str,
    graph: str,
    device: LocalDevice,
    context: dict[str, Any],
) -> Any:
    """Answer device batches until the run finishes; its output."""
    output = None
    for _ in range(MAX_ROUNDS):
        requests = await pending_device_requests(client, thread_id)
        if not requests:
            return output
        output = await answer(client, thread_id, graph, requests, device, context)
    pytest.fail(f"{graph} still waits for the device after {MAX_ROUNDS} round trips")


def agent_context(workspace: Path) -> dict[str, Any]:
    return {"directory_paths": [str(workspace)], "file_extensions": [".md", ".txt"]}


def workspace_files(workspace: Path) -> set[str]:
    return {str(p) for p in workspace.rglob("*") if p.suffix in {".md", ".txt"}}


# ── Tests ─────────────────────────────────────────────────────────────────────


async def test_studio_registers_every_graph(client: LangGraphClient) -> None:
    assistants = await assistants_by_graph(client)

    assert set(GRAPH_NODES) <= set(assistants)


async def test_studio_draws_every_graph(client: LangGraphClient) -> None:
    assistants = await assistants_by_graph(client)

    for graph_id, expected in GRAPH_NODES.items():
        assert expected <= await node_names(client, assistants[graph_id]), graph_id
    xray = await node_names(client, assistants["local_agent"], xray=True)
    assert xray >= LOCAL_AGENT_XRAY_NODES


async def test_studio_draws_the_agentic_loop_with_its_conditional_edges(
    client: LangGraphClient,
) -> None:
    assistants = await assistants_by_graph(client)
    drawing = await bounded(client.assistants.get_graph(assistants["agentic_loop"]))
    conditional = {(e["source"], e["target"]) for e in drawing["edges"] if e.get("conditional")}
    assert conditional == AGENTIC_CONDITIONAL_EDGES


async def test_local_agent_runs_against_a_device(
    client: LangGraphClient, workspace: Path, device: LocalDevice
) -> None:
    context = agent_context(workspace)
    thread = await bounded(client.threads.create())
    thread_id = thread["thread_id"]

    await bounded(client.runs.wait(thread_id, "local_agent", input={}, context=context))

    # First stop: triage scans the workspace and lists the projects, in one batch.
    scan = await pending_device_requests(client, thread_id)
    assert len(scan) == 1
    calls = calls_of(scan)
    assert {c["name"] for c in calls} == {"scan_directory", "list_all_projects"}
    scans = [c for c in calls if c["name"] == "scan_directory"]
    assert [c["args"]["path"] for c in scans] == [str(workspace)]

    await answer(client, thread_id, "local_agent", scan, device, context)

    # Second stop: processing reads the files the scan found (one chunk: small files).
    gather = await pending_device_requests(client, thread_id)
    assert gather
    reads = [c for c in calls_of(gather) if c["name"] == "read_file_content"]
    assert {c["args"]["path"] for c in reads} == workspace_files(workspace)

    output = await answer(client, thread_id, "local_agent", gather, device, context)
    output = await drive_to_end(client, thread_id, "local_agent", device, context) or output

    report = output["report"]
    assert report["status"] == "success", report
    assert report["files_scanned"] == report["files_processed"] == len(workspace_files(workspace))
    rows = device.count_rows()
    assert rows["tasks"] > 0
    assert rows == {table: report["created"].get(table, 0) for table in ENTITY_TABLES}


async def test_triage_runs_on_its_own(
    client: LangGraphClient, workspace: Path, device: LocalDevice
) -> None:
    """Started alone (as Studio does), triage keys its device calls by the thread id."""
    context = agent_context(workspace)
    thread = await bounded(client.threads.create())
    thread_id = thread["thread_id"]

    await bounded(client.runs.wait(thread_id, "triage", input={}, context=context))
    scan = await pending_device_requests(client, thread_id)
    assert all(c["id"].startswith(f"{thread_id}/") for c in calls_of(scan))

    output = await answer(client, thread_id, "triage", scan, device, context)

    assert await pending_device_requests(client, thread_id) == {}
    assert not output.get("triage_error")
    assert {e["path"] for e in output["manifest"]} == workspace_files(workspace)
    grouped = {path for group in output["groups"] for path in group["files"]}
    assert grouped == workspace_files(workspace)
