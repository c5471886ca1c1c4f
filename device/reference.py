"""The reference device: protocol v1 from the device's side, as an executable specification.

Other clients (the Electron app) port from this module, so it spells out every rule a device
must keep, in the order a connection goes through them:

1. Connect to `{server}/devices/connect` (http -> ws, https -> wss) and send `device_hello`
   first: the device token, the device id the token names, `protocol: 1` and the names of
   every tool the device can run.
2. Wait for `hello_ok`. An `error` frame with code `unauthorized` in answer to the hello is
   fatal: the token is wrong or revoked, and retrying cannot fix it. Any other answer is a
   failed connection, retried with backoff.
3. Answer each `tool_call` with one `tool_result` (`{"id", "ok": true, "result"}` or
   `{"id", "ok": false, "error"}`), strictly one call at a time, in arrival order.
4. Report `run_progress`, `run_complete` and `error` frames to the user and keep going;
   ignore (and report) frames that do not parse, so a newer server can add frame types.
5. When the connection drops or is refused, reconnect with exponential backoff and jitter,
   forever, until told to stop; a successful hello resets the backoff.

What a device must persist, and why: delivery of `tool_call` is at least once. The server
redelivers every unanswered call after a reconnect (`hello_ok.pending` says how many), and a
call may also arrive again because its result was lost with the connection. So a device
stores the result of every call under its call id, in the SAME database transaction as the
call's effect, and answers a repeated id with the stored result without running the call
again. Storing the result separately (before or after the effect) opens a window in which a
crash leaves an effect without a result (the redelivered call then creates the task twice) or
a result without an effect. `LocalDevice.execute_one` keeps this rule; a port must keep it in
its own database (one transaction: effect + `call_results` row). Running calls one at a time
is part of the same rule: the store is one SQLite connection, and two transactions
interleaved on one connection are one transaction.

A call that fails with an unexpected error (not a tool failure the model should read) is
rolled back, effect and all, so nothing is stored: it is answered `ok: false` and, if it is
ever delivered again, it runs again, which is safe because it never had an effect.
"""

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from device.local import LocalDevice
from device.protocol import (
    SERVER_FRAME,
    UNAUTHORIZED,
    DeviceHello,
    ErrorFrame,
    HelloOk,
    RunComplete,
    RunProgress,
    ToolCallFrame,
    device_id_from_token,
)
from nodes.bridge import DeviceCall, DeviceResult
from tools.catalog import DEVICE_TOOLS

logger = logging.getLogger(__name__)

CONNECT_PATH = "/devices/connect"
#: Seconds the server has to answer `device_hello` before the connection counts as failed.
HELLO_TIMEOUT = 10.0
#: Seconds to open the TCP + WebSocket connection.
OPEN_TIMEOUT = 10.0
#: Longest preview of a frame or payload in a reported line.
PREVIEW_CHARS = 160

NOT_A_DEVICE_TOKEN = (
    "The token is not a device token: expected 'rgd.<device id>.<secret>' as printed by "
    "`relaygraph devices add`."
)
BAD_SERVER_URL = "Server URL {url!r} must start with http://, https://, ws:// or wss://."
UNEXPECTED_FAILURE = "The device failed to run {name}: {error}"

_T = TypeVar("_T")


class DeviceUnauthorized(RuntimeError):
    """The server refused the device token; reconnecting with the same token cannot help."""


class _HelloRejected(Exception):
    """The server answered the hello with something other than `hello_ok` (not fatal)."""


# ── Pure helpers (a port can test these in isolation) ─────────────────────────


def device_url(server: str) -> str:
    """The WebSocket URL of the device endpoint under a server base URL.

    `http://host:8123` -> `ws://host:8123/devices/connect`; https maps to wss; a ws:// or
    wss:// base is kept; a path prefix (behind a reverse proxy) is kept.
    """
    parts = urlsplit(server.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(BAD_SERVER_URL.format(url=server))
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + CONNECT_PATH, "", ""))


def device_id_of(token: str) -> str:
    """The device id a device token names; ValueError when it is not a device token."""
    device_id = device_id_from_token(token)
    if not device_id:
        raise ValueError(NOT_A_DEVICE_TOKEN)
    return device_id


def hello_frame(token: str, device_id: str, tools: list[str]) -> dict[str, Any]:
    """The first frame of every connection."""
    hello = DeviceHello(
        type="device_hello",
        token=token,
        device_id=device_id,
        protocol=1,  # PROTOCOL_VERSION, as the Literal the model declares
        tools=tools,
    )
    return hello.model_dump(mode="json", exclude_none=True)


def result_frame(call_id: str, result: DeviceResult) -> dict[str, Any]:
    """The `tool_result` answering one call: `result` when ok, `error` when not."""
    if result["ok"]:
        return {"type": "tool_result", "id": call_id, "ok": True, "result": result.get("result")}
    error = result.get("error") or "The device reported an error."
    return {"type": "tool_result", "id": call_id, "ok": False, "error": error}


def describe_frame(frame: HelloOk | ToolCallFrame | RunProgress | RunComplete | ErrorFrame) -> str:
    """One line for the user about a server frame."""
    if isinstance(frame, RunProgress):
        data = f" {_preview(frame.data)}" if frame.data else ""
        return f"run {frame.run_context.run_id}: {frame.event}{data}"
    if isinstance(frame, RunComplete):
        counts = f" {_preview(frame.counts)}" if frame.counts else ""
        return f"run {frame.run_context.run_id} complete: {frame.status}{counts}"
    if isinstance(frame, ErrorFrame):
        return f"server error {frame.code}: {frame.message}"
    if isinstance(frame, HelloOk):
        return f"hello_ok for {frame.device_id}, {frame.pending} pending"
    return f"tool_call {frame.id}: {frame.name}"


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class Backoff:
    """Exponential backoff with jitter: `initial` doubling up to `maximum` seconds.

    Each delay is drawn from [d/2, d] ("equal jitter"), so devices that lost the same server
    at the same moment do not all come back at the same moment.
    """

    def __init__(self, initial: float = 0.2, maximum: float = 10.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return random.uniform(delay / 2, delay)


# ── The device ────────────────────────────────────────────────────────────────


class ReferenceDevice:
    """A device connected to one server: a `LocalDevice` behind the protocol v1 WebSocket."""

    def __init__(
        self,
        server: str,
        token: str,
        roots: list[Path],
        db: Path,
        *,
        on_event: Callable[[str], None] | None = None,
        backoff: Backoff | None = None,
        extensions: list[str] | None = None,
    ) -> None:
        self.extensions = extensions
        self.url = device_url(server)
        self.device_id = device_id_of(token)
        self.token = token
        self.roots = list(roots)
        self.db = Path(db)
        self.tools = list(DEVICE_TOOLS)
        # Built once, so a device id the protocol cannot carry fails here (ValidationError is
        # a ValueError), not on every connection.
        self.hello = json.dumps(hello_frame(token, self.device_id, self.tools))
        self.on_event = on_event
        self.backoff = backoff or Backoff()
        self._replayed = False

    def report(self, line: str) -> None:
        """Tell the user (and the log) one thing that happened."""
        logger.info("%s", line)
        if self.on_event is not None:
            self.on_event(line)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve calls, reconnecting forever, until `stop` is set.

        Raises `DeviceUnauthorized` when the server refuses the token, and
        `DeviceDatabaseError` when the entity database cannot be opened.
        """
        stop = stop or asyncio.Event()
        local = LocalDevice(self.roots, self.db, on_call=self._on_call, extensions=self.extensions)
        try:
            while not stop.is_set():
                reason = await _until(stop, self._connection(local))
                if reason is None:  # stopped
                    break
                delay = self.backoff.next_delay()
                self.report(f"disconnected ({reason}); reconnecting in {delay:.1f} s")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
        finally:
            local.close()
        self.report("stopped")

    async def _connection(self, local: LocalDevice) -> str:
        """One connection from connect to close; returns why it ended."""
        try:
            async with connect(self.url, open_timeout=OPEN_TIMEOUT) as ws:
                await ws.send(self.hello)
                await self._await_hello_ok(ws)
                self.backoff.reset()
                await self._serve(ws, local)
                return "the server closed the connection"
        except ConnectionClosedOK:
            return "the server closed the connection"
        except (OSError, TimeoutError, WebSocketException, _HelloRejected) as exc:
            return str(exc) or type(exc).__name__

    async def _serve(self, ws: ClientConnection, local: LocalDevice) -> None:
        """Answer frames in arrival order while a reader task keeps taking them off the
        socket: a batch of thousands of calls never stops the connection being read, so the
        keepalive's pongs (and pings) behind it are handled at once, not after the batch.
        The queue holds at most one batch (the server parks a bounded wave of calls)."""
        inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for raw in ws:
                    inbox.put_nowait(raw)
            finally:
                inbox.put_nowait(None)  # closed: the reader's exception, if any, is raised below

        reader = asyncio.create_task(read())
        try:
            while (raw := await inbox.get()) is not None:
                await self._handle(ws, local, raw)
            await reader
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _await_hello_ok(self, ws: ClientConnection) -> None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                while True:
                    frame = self._parse(await ws.recv())
                    if isinstance(frame, HelloOk):
                        self.report(
                            f"connected to {self.url} as {frame.device_id}, {frame.pending} pending"
                        )
                        return
                    if isinstance(frame, ErrorFrame):
                        if frame.code == UNAUTHORIZED:
                            raise DeviceUnauthorized(
                                f"The server refused the device token for {self.device_id!r}: "
                                f"{frame.message}"
                            )
                        raise _HelloRejected(f"hello refused: {frame.code}: {frame.message}")
                    if frame is not None:
                        self.report(f"ignored {frame.type} before hello_ok")
        except TimeoutError as exc:
            raise _HelloRejected(f"no hello_ok within {HELLO_TIMEOUT:g} s") from exc

    async def _handle(self, ws: ClientConnection, local: LocalDevice, raw: str | bytes) -> None:
        frame = self._parse(raw)
        if frame is None:
            return
        if isinstance(frame, ToolCallFrame):
            call = DeviceCall(id=frame.id, name=frame.name, args=frame.args)
            result = await self._execute(local, call)
            await ws.send(json.dumps(result_frame(call["id"], result), default=str))
            return
        if isinstance(frame, HelloOk):
            self.report("ignored a repeated hello_ok")
            return
        self.report(describe_frame(frame))

    def _parse(
        self, raw: str | bytes
    ) -> HelloOk | ToolCallFrame | RunProgress | RunComplete | ErrorFrame | None:
        if isinstance(raw, bytes):
            self.report(f"ignored a binary frame ({len(raw)} bytes); frames are JSON text")
            return None
        try:
            return SERVER_FRAME.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "frame"
            self.report(
                f"ignored a frame that does not parse ({where}: {first['msg']}): {_preview(raw)}"
            )
            return None

    async def _execute(self, local: LocalDevice, call: DeviceCall) -> DeviceResult:
        """Run one call in a worker thread; the caller awaits it before reading on, so calls
        never overlap. Stopping mid-call waits for the thread: its transaction commits (effect
        and stored result) or rolls back as a whole, never half-way, and never after the
        database is closed."""
        self._replayed = False
        work = asyncio.ensure_future(asyncio.to_thread(local.execute_one, call))
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait({work})
            raise
        except Exception as exc:  # rolled back by LocalDevice: no effect, nothing stored
            result = DeviceResult(
                ok=False, error=UNEXPECTED_FAILURE.format(name=call["name"], error=exc)
            )
            self.report(f"call {call['id']} {call['name']} failed unexpectedly: {exc!r}")
            return result
        how = "replayed" if self._replayed else "ran"
        outcome = "ok" if result["ok"] else f"error: {result.get('error')}"
        self.report(f"{how} {call['name']} ({call['id']}): {outcome}")
        return result

    def _on_call(self, call: DeviceCall, result: DeviceResult, replayed: bool) -> None:
        # Runs in the worker thread; read by `_execute` only after the thread is done.
        self._replayed = replayed


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, _T]) -> _T | None:
    """Run `work` until it ends (its value) or `stop` is set (None; `work` is cancelled)."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.result()


async def run_reference_device(
    server: str,
    token: str,
    roots: list[Path],
    db: Path,
    *,
    stop: asyncio.Event | None = None,
    on_event: Callable[[str], None] | None = None,
    extensions: list[str] | None = None,
) -> None:
    """Connect the device named by `token` to `server` and serve its calls until `stop` is set.

    `roots` are the folders the file-system tools may touch, `extensions` the kinds of file
    they may read (None: any); `db` is the entity database, which
    also stores every call's result by call id (see the module docstring for why). Raises
    ValueError for a token that is not a device token or a server URL that is not http(s) or
    ws(s), and `DeviceUnauthorized` when the server refuses the token.
    """
    device = ReferenceDevice(server, token, roots, db, on_event=on_event, extensions=extensions)
    await device.run(stop)
