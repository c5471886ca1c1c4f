"""Sending to a device whose socket closes under us is a missed push, not a failed run."""

from typing import cast

import pytest
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from device.protocol import ErrorFrame
from server.hub import Connection, DeviceHub


class DroppingSocket:
    """Connected as far as the server knows; the peer is gone when it sends."""

    application_state = WebSocketState.CONNECTED

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def send_text(self, text: str) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error", [WebSocketDisconnect(code=1006), RuntimeError("closed"), ConnectionResetError()]
)
async def test_a_send_to_a_dropped_socket_reports_false(error: BaseException) -> None:
    hub = DeviceHub()
    hub.register(Connection("ana", "laptop", cast(WebSocket, DroppingSocket(error))))
    sent = await hub.send("ana", "laptop", ErrorFrame(code="x", message="y"))
    assert sent is False


async def test_a_send_to_no_connection_reports_false() -> None:
    assert await DeviceHub().send("ana", "laptop", ErrorFrame(code="x", message="y")) is False
