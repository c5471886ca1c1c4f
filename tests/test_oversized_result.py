"""A device answer over the frame size limit, through a real `relaygraph serve` process.

The device is the test itself, speaking protocol v1 over a real WebSocket: it answers the
local agent's scan with a 5 MiB result (over the 4 MiB limit, under the socket's own 16 MiB).
The call must end as an error the graph sees (the triage fails with the size in its message)
and the run must end; it never stays parked. The same frame sent again is a duplicate, and the
call is not delivered again after a reconnect. On SQLite and on Postgres."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client
from websockets.asyncio.client import ClientConnection, connect

from device.protocol import SERVER_FRAME, ErrorFrame, HelloOk, ToolCallFrame
from harness.processes import ServerProcess
from server.api.devices import MAX_FRAME
from tests.support.waiting import until

pytestmark = pytest.mark.slow

USER, DEVICE = "ana", "laptop"
RESULT_BYTES = 5 * 1024 * 1024
FINAL = ("success", "partial", "error", "cancelled")
TIMEOUT = 60.0  # a bound against hanging, not a timing assertion


class Server:
    """The server process, what the test waits on (`tests.support.waiting.until`)."""

    deadline = TIMEOUT

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.key = process.api_key(USER)
        self.token = process.device_token(USER, DEVICE)

    @property
    def ws_url(self) -> str:
        return self.process.url.replace("http://", "ws://") + "/devices/connect"

    def check_alive(self) -> None:
        popen = self.process.process
        if popen is not None and popen.poll() is not None:
            raise AssertionError(f"the server exited ({popen.returncode}):\n{self.logs()}")

    def logs(self) -> str:
        return self.process.log()[-20000:]


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    process = ServerProcess(database_url=database_url, workdir=tmp_path).start()
    try:
        yield Server(process)
    finally:
        process.stop()


def scan_of(root: str, size: int) -> dict[str, Any]:
    """A `scan_directory` result of at least `size` bytes of JSON: a folder of many files."""
    entry = {"path": f"{root}/client/notes/file-000000.md", "size": 1, "modified": "2026-11-20"}
    count = size // len(json.dumps(entry)) + 1
    files = [{**entry, "path": f"{root}/client/notes/file-{n:06d}.md"} for n in range(count)]
    return {"root": root, "files": files}


async def receive(socket: ClientConnection) -> Any:
    return SERVER_FRAME.validate_json(await asyncio.wait_for(socket.recv(), TIMEOUT))


async def hello(server: Server, socket: ClientConnection) -> list[ToolCallFrame]:
    """Say hello; the calls the server redelivers."""
    hello = {"type": "device_hello", "token": server.token, "device_id": DEVICE, "protocol": 1}
    await socket.send(json.dumps(hello))
    accepted = await receive(socket)
    assert isinstance(accepted, HelloOk), accepted
    calls = [await receive(socket) for _ in range(accepted.pending)]
    assert all(isinstance(c, ToolCallFrame) for c in calls), calls
    return calls


async def answered_nothing(socket: ClientConnection) -> None:
    """The server sent nothing for the frames before this: the next frame it sends is the
    answer to a probe that no call waits for."""
    probe = {"type": "tool_result", "id": "probe", "ok": True, "result": None}
    await socket.send(json.dumps(probe))
    answer = await receive(socket)
    assert isinstance(answer, ErrorFrame) and answer.code == "unknown_call", answer
    assert "probe" in answer.message, answer


async def test_an_oversized_result_ends_its_call_as_an_error(
    server: Server, workspace: Path
) -> None:
    client = get_client(url=server.process.url, api_key=server.key)
    assistant = await client.assistants.create(
        graph_id="local_agent",
        context={"directory_paths": [str(workspace)], "device_id": DEVICE},
    )
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(thread_id, assistant["assistant_id"], input={})

    async def parked() -> bool:
        found = await client.runs.get(thread_id, run["run_id"])
        assert found["status"] not in FINAL, found
        return found["status"] == "interrupted"

    await until(server, "the run parked on its device", parked)
    async with connect(server.ws_url, max_size=None) as socket:
        calls = await hello(server, socket)
        scan = next(c for c in calls if c.name == "scan_directory")
        oversized = json.dumps(
            {
                "type": "tool_result",
                "id": scan.id,
                "ok": True,
                "result": scan_of(str(workspace), RESULT_BYTES),
            }
        )
        assert RESULT_BYTES < len(oversized.encode()) < 16 * 1024 * 1024
        assert len(oversized.encode()) > MAX_FRAME

        await socket.send(oversized)
        await socket.send(oversized)  # a device replaying it: a duplicate, nothing to say
        await answered_nothing(socket)
    async with connect(server.ws_url, max_size=None) as socket:
        redelivered = await hello(server, socket)
        assert {c.id for c in redelivered} == {c.id for c in calls} - {scan.id}
        for call in redelivered:
            await socket.send(
                json.dumps({"type": "tool_result", "id": call.id, "ok": True, "result": []})
            )

        async def ended() -> Any:
            found = await client.runs.get(thread_id, run["run_id"])
            return found if found["status"] in FINAL else None

        final = await until(server, "the end of the run", ended)

    size = f"{len(oversized.encode()):,} bytes"
    assert final["status"] == "error", final
    assert f"Could not scan {workspace}" in final["error"], final
    assert size in final["error"] and f"{MAX_FRAME:,}-byte limit" in final["error"], final
    values: Any = (await client.threads.get_state(thread_id))["values"]  # what the graph saw
    report = values["report"]
    assert any(size in error for error in report["errors"]), report
