"""Connected devices: one WebSocket per (user, device), each with its own send lock."""

import asyncio
import logging
from dataclasses import dataclass, field

from fastapi import WebSocket
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect, WebSocketState

log = logging.getLogger(__name__)


@dataclass
class Connection:
    """One device's socket."""

    user_id: str
    device_id: str
    socket: WebSocket
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, frame: BaseModel) -> bool:
        """Send one frame; False when the socket is gone (the device will get it on hello)."""
        if self.socket.application_state != WebSocketState.CONNECTED:
            return False
        try:
            async with self.lock:
                await self.socket.send_text(frame.model_dump_json())
        except (RuntimeError, OSError, WebSocketDisconnect) as exc:  # closed under us
            log.info("send to %s/%s failed: %s", self.user_id, self.device_id, exc)
            return False
        return True


class DeviceHub:
    """Which devices are connected, and sending to them."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str], Connection] = {}

    def register(self, connection: Connection) -> Connection | None:
        """Add a connection; returns the one it replaces (the same device reconnected)."""
        key = (connection.user_id, connection.device_id)
        previous = self._connections.get(key)
        self._connections[key] = connection
        return previous

    def unregister(self, connection: Connection) -> None:
        key = (connection.user_id, connection.device_id)
        if self._connections.get(key) is connection:
            del self._connections[key]

    def get(self, user_id: str, device_id: str) -> Connection | None:
        return self._connections.get((user_id, device_id))

    def connected(self) -> list[tuple[str, str]]:
        """Every (user, device) connected to this process."""
        return list(self._connections)

    def connected_devices(self, user_id: str) -> list[str]:
        return sorted(d for (u, d) in self._connections if u == user_id)

    async def send(self, user_id: str, device_id: str | None, frame: BaseModel) -> bool:
        if device_id is None:
            return False
        connection = self.get(user_id, device_id)
        return await connection.send(frame) if connection is not None else False
