"""The device WebSocket, `/devices/connect`: protocol v1 (see docs/device-protocol.md)."""

import asyncio
import contextlib
import json
import logging
import sqlite3

import psycopg
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from device.protocol import (
    BAD_FRAME,
    CLOSE_REPLACED,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED,
    DEVICE_FRAME,
    NOT_HELLO,
    PROTOCOL_VERSION,
    SUPPORTED_PROTOCOLS,
    UNAUTHORIZED,
    UNKNOWN_CALL,
    UNSUPPORTED_PROTOCOL,
    DeviceHello,
    ErrorFrame,
    HelloOk,
    ToolResult,
    ToolResultHead,
)
from server.hub import Connection
from server.services import Services
from server.storage import accounts, bridge

log = logging.getLogger(__name__)
router = APIRouter(tags=["devices"])

BAD_TOKEN = "The device token is not valid (or not for this device)."
NO_TOKEN = "device_hello.token: the hello has no device token."
UNSUPPORTED = "device_hello.protocol: this server speaks protocol {versions}, not {version}."
HELLO_FIRST = "Say device_hello first."
UNKNOWN_ID = "No pending call has the id {call_id!r}."
#: The largest frame the server takes, in bytes of UTF-8. The socket itself reads frames up to
#: the ASGI server's limit (uvicorn's `ws_max_size`, 16 MiB as `relaygraph serve` runs it) and
#: closes the connection (1009) on a larger one.
MAX_FRAME = 4 * 1024 * 1024
TOO_LARGE = "Frame larger than {limit} bytes."
#: The error a call gets for a result too large to take: what its run (and model) reads.
RESULT_TOO_LARGE = (
    "The device's result was {size:,} bytes, over the {limit:,}-byte limit of a frame, and was "
    "dropped. Ask for less at a time: page through it (a smaller `limit`, then the "
    "`next_cursor` of each page as `cursor`) or narrow the request."
)


@router.websocket("/devices/connect")
async def connect(socket: WebSocket) -> None:
    """One device's connection: hello, redelivery of its pending calls, then answers."""
    svc: Services = socket.app.state.services
    await socket.accept()
    connection = await _hello(socket, svc)
    if connection is None:
        return
    previous = svc.hub.register(connection)
    try:
        if previous is not None:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await previous.socket.close(
                    code=CLOSE_REPLACED, reason="replaced by a new connection"
                )
        pending = await bridge.for_device(
            svc.db, user_id=connection.user_id, device_id=connection.device_id
        )
        await connection.send(HelloOk(device_id=connection.device_id, pending=len(pending)))
        await svc.runs.push(connection.user_id, pending)
        if svc.scheduler is not None:  # overdue schedules of this device fire now
            await svc.scheduler.device_connected(connection.user_id, connection.device_id)
        await _answers(socket, svc, connection)
    except WebSocketDisconnect:
        pass
    finally:
        svc.hub.unregister(connection)
        if svc.scheduler is not None:
            await svc.scheduler.device_disconnected(connection.user_id, connection.device_id)


async def _hello(socket: WebSocket, svc: Services) -> Connection | None:
    """Wait for a valid `device_hello`; anything else gets an `error` frame."""
    while True:
        try:
            message = await asyncio.wait_for(socket.receive(), svc.settings.hello_timeout)
        except (TimeoutError, WebSocketDisconnect, RuntimeError):
            await _close(socket)
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            await _error(socket, BAD_FRAME, "Frames are JSON text.")
            continue
        if (refusal := _hello_refusal(text)) is not None:
            code, why, close = refusal
            await _error(socket, code, why)
            await _close(socket, code=close)
            return None
        frame = _parse(text)
        if isinstance(frame, str):
            await _error(socket, BAD_FRAME, frame)
            continue
        if not isinstance(frame, DeviceHello):
            await _error(socket, NOT_HELLO, HELLO_FIRST)
            continue
        owner = await accounts.device_for_token(svc.db, frame.token)
        if owner is None or owner[1] != frame.device_id:
            await _error(socket, UNAUTHORIZED, BAD_TOKEN)
            await _close(socket, code=CLOSE_UNAUTHORIZED)
            return None
        return Connection(user_id=owner[0], device_id=owner[1], socket=socket)


async def _answers(socket: WebSocket, svc: Services, connection: Connection) -> None:
    """Read frames as fast as they come (so the socket's keepalive is never starved) and
    store answers, in order, from a second task."""
    answers: asyncio.Queue[ToolResult | None] = asyncio.Queue()
    storing = asyncio.create_task(_store_answers(svc, connection, answers))
    try:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await connection.send(ErrorFrame(code=BAD_FRAME, message="Frames are JSON text."))
                continue
            frame = _parse(text)
            if isinstance(frame, str):
                await connection.send(ErrorFrame(code=BAD_FRAME, message=frame))
            elif isinstance(frame, ToolResult):
                answers.put_nowait(frame)
            else:
                await connection.send(ErrorFrame(code=BAD_FRAME, message="Already said hello."))
    finally:
        answers.put_nowait(None)  # store what arrived, then stop
        await storing


async def _store_answers(
    svc: Services, connection: Connection, answers: "asyncio.Queue[ToolResult | None]"
) -> None:
    """Store the answers in order. If one cannot be stored, the connection is closed (1011)
    rather than left to drop every later answer unseen: the device reconnects and sends its
    unacknowledged answers again."""
    try:
        while (frame := await answers.get()) is not None:
            await _store_answer(svc, connection, frame)
    except (psycopg.Error, sqlite3.Error, OSError):
        log.exception("an answer of %s could not be stored; closing", connection.device_id)
        await _close(connection.socket, code=1011)


async def _store_answer(svc: Services, connection: Connection, frame: ToolResult) -> None:
    answer = await svc.runs.answer(connection.user_id, connection.device_id, frame)
    if answer.outcome == "unknown":
        await connection.send(
            ErrorFrame(code=UNKNOWN_CALL, message=UNKNOWN_ID.format(call_id=frame.id))
        )


def _hello_refusal(text: str) -> tuple[str, str, int] | None:
    """A hello that ends the connection before it is validated: one naming a protocol version
    this server does not speak, or one without a token (error code, message, close code)."""
    try:
        value = json.loads(text) if len(text) <= MAX_FRAME else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or value.get("type") != "device_hello":
        return None
    version = value.get("protocol", PROTOCOL_VERSION)
    if version not in SUPPORTED_PROTOCOLS or isinstance(version, bool):
        versions = ", ".join(str(v) for v in SUPPORTED_PROTOCOLS)
        message = UNSUPPORTED.format(version=json.dumps(version)[:20], versions=versions)
        return UNSUPPORTED_PROTOCOL, message, CLOSE_UNSUPPORTED
    if not value.get("token"):
        return UNAUTHORIZED, NO_TOKEN, CLOSE_UNAUTHORIZED
    return None


def _parse(text: str) -> DeviceHello | ToolResult | str:
    """A frame, or the reason it is not one."""
    size = len(text.encode())
    if size > MAX_FRAME:
        return _oversized(text, size)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"Not JSON: {exc.msg} at {exc.pos}."
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
        return f"Not JSON this server reads: {type(exc).__name__}."
    try:
        return DEVICE_FRAME.validate_python(value)
    except RecursionError:
        return "Invalid frame: nested too deep."
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "frame"
        return f"Invalid frame: {where}: {first['msg']}."


def _oversized(text: str, size: int) -> ToolResult | str:
    """A frame over the limit, read for its type and call id only: a `tool_result` becomes
    an error answer to its call, so the run goes on and its model reads why (a repeat is
    then a duplicate); anything else is a bad frame."""
    try:
        head = ToolResultHead.model_validate_json(text)
    except ValidationError:  # not JSON, not a tool_result, no usable id
        return TOO_LARGE.format(limit=MAX_FRAME)
    log.warning(
        "the tool_result for %s is %d bytes, over the %d-byte limit: it answers as an error",
        head.id,
        size,
        MAX_FRAME,
    )
    error = RESULT_TOO_LARGE.format(size=size, limit=MAX_FRAME)
    return ToolResult(type="tool_result", id=head.id, ok=False, error=error)


async def _error(socket: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await socket.send_text(ErrorFrame(code=code, message=message).model_dump_json())


async def _close(socket: WebSocket, code: int = 1000) -> None:
    with contextlib.suppress(RuntimeError):
        await socket.close(code=code)
