"""The reference device against a fake server playing the server side of protocol v1."""

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from device import LocalDevice
from device.protocol import make_device_token
from device.reference import (
    DeviceUnauthorized,
    ReferenceDevice,
    device_url,
    run_reference_device,
)
from tools.catalog import DEVICE_TOOLS

DEVICE_ID = "laptop-1"
TOKEN = make_device_token(DEVICE_ID, "s3cret")
RUN_CONTEXT = {"run_id": "run-1", "thread_id": "thread-1", "assistant_id": "agent"}
WAIT = 10  # seconds; every wait is bounded, none is expected to come near it


class FakeServer:
    """The server side: each device connection is handed to the test, which plays the script."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.paths: list[str] = []
        self.server: Server | None = None

    async def handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        await self.connections.put(ws)
        await ws.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def accept(self) -> ServerConnection:
        return await self.connections.get()


async def recv(ws: ServerConnection) -> dict[str, Any]:
    return dict(json.loads(await ws.recv()))


async def accept_hello(server: FakeServer, pending: int = 0) -> tuple[ServerConnection, dict]:
    """The next connection, its hello, answered with `hello_ok`."""
    ws = await server.accept()
    hello = await recv(ws)
    assert hello["type"] == "device_hello"
    await ws.send(json.dumps({"type": "hello_ok", "device_id": hello["device_id"], "pending": 0}))
    return ws, hello


async def call(ws: ServerConnection, call_id: str, name: str, **args: Any) -> dict[str, Any]:
    """Send one `tool_call` and return the `tool_result` that answers it."""
    frame = {"type": "tool_call", "id": call_id, "name": name, "args": args}
    await ws.send(json.dumps({**frame, "run_context": RUN_CONTEXT}))
    result = await recv(ws)
    assert result["type"] == "tool_result"
    assert result["id"] == call_id
    return result


@dataclass
class Harness:
    server: FakeServer
    root: Path
    db: Path
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(
            run_reference_device(
                self.server.url,
                TOKEN,
                [self.root],
                self.db,
                stop=self.stop,
                on_event=self.events.append,
            )
        )

    async def finish(self) -> None:
        """Stop the device and wait for it; it must end cleanly."""
        self.stop.set()
        if self.task is not None:
            async with asyncio.timeout(WAIT):
                await self.task

    def rows(self, table: str) -> list[dict[str, Any]]:
        local = LocalDevice([self.root], self.db)
        try:
            return local.rows(table)
        finally:
            local.close()


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.server = server
        yield fake


@pytest.fixture
async def harness(fake_server: FakeServer, tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "shared"
    root.mkdir()
    h = Harness(fake_server, root, tmp_path / "device.db")
    try:
        yield h
    finally:
        if h.task is not None and not h.task.done():
            h.task.cancel()
            await asyncio.wait({h.task}, timeout=WAIT)


async def test_hello_then_a_call_runs_once_and_a_repeated_id_replays(harness: Harness) -> None:
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, hello = await accept_hello(harness.server)
        assert harness.server.paths == ["/devices/connect"]
        assert hello["token"] == TOKEN
        assert hello["device_id"] == DEVICE_ID
        assert hello["protocol"] == 1
        assert sorted(hello["tools"]) == sorted(DEVICE_TOOLS)

        args = {"title": "Write the report", "isAiSuggested": 1, "isApproved": 0}
        first = await call(ws, "run-1/step/call-1", "create_task", **args)
        assert first["ok"] is True
        assert "error" not in first
        assert first["result"]["title"] == "Write the report"
        assert first["result"]["isAiSuggested"] == 1
        assert first["result"]["id"]

        again = await call(ws, "run-1/step/call-1", "create_task", **args)
        assert again == first
    await harness.finish()

    tasks = harness.rows("tasks")
    assert len(tasks) == 1
    assert tasks[0]["id"] == first["result"]["id"]
    assert len(harness.rows("call_results")) == 1
    assert any("replayed create_task" in e for e in harness.events)


async def test_a_path_outside_the_roots_is_refused(harness: Harness, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not shared")
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        result = await call(ws, "c-outside", "read_file_content", path=str(secret))
        assert result["ok"] is False
        assert "outside" in result["error"]
        assert "result" not in result

        inside = harness.root / "notes.txt"
        inside.write_text("shared")
        result = await call(ws, "c-inside", "read_file_content", path=str(inside))
        assert result["ok"] is True
        assert result["result"]["content"] == "shared"
    await harness.finish()


async def test_reconnects_after_the_server_drops_the_connection(harness: Harness) -> None:
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        first = await call(ws, "c-1", "create_note", title="Before the drop")
        assert first["ok"] is True
        await ws.close()

        ws2, hello = await accept_hello(harness.server)
        assert hello["device_id"] == DEVICE_ID
        assert harness.server.paths == ["/devices/connect", "/devices/connect"]
        second = await call(ws2, "c-2", "create_note", title="After the drop")
        assert second["ok"] is True
        assert second["result"]["title"] == "After the drop"
        # A call redelivered on the new connection is answered from the store.
        assert await call(ws2, "c-1", "create_note", title="Before the drop") == first
    await harness.finish()

    assert sorted(n["title"] for n in harness.rows("notes")) == [
        "After the drop",
        "Before the drop",
    ]
    assert any(e.startswith("disconnected") for e in harness.events)


async def test_an_unauthorized_answer_to_hello_is_fatal(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    async def refuse() -> None:
        ws = await fake_server.accept()
        await recv(ws)
        error = {"type": "error", "code": "unauthorized", "message": "unknown device token"}
        await ws.send(json.dumps(error))

    refuser = asyncio.create_task(refuse())
    with pytest.raises(DeviceUnauthorized, match="unknown device token"):
        async with asyncio.timeout(WAIT):
            await run_reference_device(fake_server.url, TOKEN, [tmp_path], tmp_path / "d.db")
    await refuser
    assert fake_server.paths == ["/devices/connect"]  # no retry with a bad token


async def test_bad_frames_and_run_events_do_not_stop_the_device(harness: Harness) -> None:
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        await ws.send("this is not json")
        await ws.send(json.dumps({"type": "from_the_future", "x": 1}))
        await ws.send(json.dumps({"type": "tool_call", "id": "no-args"}))
        await ws.send(b"\x00binary")
        await ws.send(
            json.dumps(
                {"type": "run_progress", "run_context": RUN_CONTEXT, "event": "step_started"}
            )
        )
        await ws.send(json.dumps({"type": "error", "code": "bad_frame", "message": "huh"}))
        await ws.send(
            json.dumps(
                {
                    "type": "run_complete",
                    "run_context": RUN_CONTEXT,
                    "status": "success",
                    "counts": {"tasks_created": 1},
                }
            )
        )
        result = await call(ws, "c-after", "list_tasks")
        page = {"items": [], "next_cursor": None}
        assert result == {"type": "tool_result", "id": "c-after", "ok": True, "result": page}
    await harness.finish()

    ignored = [e for e in harness.events if e.startswith("ignored")]
    assert len(ignored) == 4
    assert "run run-1: step_started" in harness.events
    assert "server error bad_frame: huh" in harness.events
    assert 'run run-1 complete: success {"tasks_created": 1}' in harness.events


async def test_calls_are_answered_one_at_a_time_in_arrival_order(harness: Harness) -> None:
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        ids = [f"c-{i}" for i in range(5)]
        for i, call_id in enumerate(ids):
            frame = {
                "type": "tool_call",
                "id": call_id,
                "name": "create_task",
                "args": {"title": f"task {i}"},
                "run_context": RUN_CONTEXT,
            }
            await ws.send(json.dumps(frame))
        answers = [await recv(ws) for _ in ids]
    await harness.finish()
    assert [a["id"] for a in answers] == ids
    assert all(a["ok"] for a in answers)
    assert len(harness.rows("tasks")) == 5


async def test_stop_ends_the_device_while_it_cannot_connect(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stop = asyncio.Event()
    failed = asyncio.Event()
    events: list[str] = []

    def on_event(line: str) -> None:
        events.append(line)
        if line.startswith("disconnected"):
            failed.set()

    task = asyncio.create_task(
        run_reference_device(
            f"http://127.0.0.1:{port}",
            TOKEN,
            [tmp_path],
            tmp_path / "d.db",
            stop=stop,
            on_event=on_event,
        )
    )
    async with asyncio.timeout(WAIT):
        await failed.wait()
        stop.set()
        await task
    assert events[-1] == "stopped"


def test_tokens_and_urls_are_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a device token"):
        ReferenceDevice("http://x", "not-a-token", [tmp_path], tmp_path / "d.db")
    with pytest.raises(ValueError, match="not a device token"):
        ReferenceDevice("http://x", "rgd..secret", [tmp_path], tmp_path / "d.db")
    with pytest.raises(ValueError, match="must start with"):
        ReferenceDevice("ftp://x", TOKEN, [tmp_path], tmp_path / "d.db")
    assert device_url("http://h:8123") == "ws://h:8123/devices/connect"
    assert device_url("https://h/api/") == "wss://h/api/devices/connect"
    assert device_url("ws://h:1") == "ws://h:1/devices/connect"
    with pytest.raises(ValueError, match="device_id"):
        ReferenceDevice("http://x", make_device_token("d" * 201, "s"), [tmp_path], tmp_path / "d")


async def test_an_unexpected_failure_is_answered_and_not_stored(harness: Harness) -> None:
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        result = await call(ws, "c-no-title", "create_task")  # violates NOT NULL: unexpected
        assert result["ok"] is False
        assert "failed to run create_task" in result["error"]
        assert (await call(ws, "c-next", "list_notes"))["ok"] is True
    await harness.finish()
    # Rolled back as a whole: nothing stored, so a redelivery runs it again (it had no effect).
    assert [c["id"] for c in harness.rows("call_results")] == ["c-next"]


async def test_a_bad_argument_is_an_ordinary_stored_failure(harness: Harness) -> None:
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        args = {"path": str(harness.root), "modified_since": "not a date"}
        result = await call(ws, "c-bad-date", "scan_directory", **args)
        unknown = await call(ws, "c-bad-field", "update_task", taskId="x", colour="red")
    await harness.finish()
    assert result["ok"] is False and "ISO 8601" in result["error"]
    assert unknown["ok"] is False and "no fields named colour" in unknown["error"]
    assert {c["id"] for c in harness.rows("call_results")} == {"c-bad-date", "c-bad-field"}


async def test_the_socket_is_read_while_a_batch_runs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ping behind a batch of calls is answered while the device still works through the
    batch (its first call held): the connection is read on, so a large batch never starves
    the keepalive and the server never drops a busy device."""
    held, release = threading.Event(), threading.Event()
    execute_one = LocalDevice.execute_one

    def holding(self: LocalDevice, call: Any) -> Any:
        if call["id"] == "c-0000":
            held.set()
            release.wait(WAIT)
        return execute_one(self, call)

    monkeypatch.setattr(LocalDevice, "execute_one", holding)
    harness.start()
    async with asyncio.timeout(WAIT):
        ws, _ = await accept_hello(harness.server)
        ids = [f"c-{i:04d}" for i in range(500)]
        for call_id in ids:
            frame = {
                "type": "tool_call",
                "id": call_id,
                "name": "create_task",
                "args": {"title": f"task {call_id} " + "x" * 200},
                "run_context": RUN_CONTEXT,
            }
            await ws.send(json.dumps(frame))
        await asyncio.to_thread(held.wait, WAIT)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 3)  # answered with the first call still running
        assert not release.is_set()
        release.set()
        answers = [await recv(ws) for _ in ids]
    await harness.finish()
    assert [a["id"] for a in answers] == ids
    assert len(harness.rows("tasks")) == len(ids)
