"""API keys, device tokens, and device presence (shared by every server process)."""

import hashlib
import secrets

from checkpoints import Database
from checkpoints.clock import now
from checkpoints.database import Transaction
from device.protocol import make_device_token

INSERT_KEY = "INSERT INTO api_keys (key_hash, user_id, created_at) VALUES (?, ?, ?)"
SELECT_KEY = "SELECT user_id FROM api_keys WHERE key_hash = ?"
UPSERT_DEVICE = (
    "INSERT INTO devices (user_id, device_id, token_hash, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = excluded.token_hash"
)
SELECT_DEVICE = "SELECT user_id, device_id FROM devices WHERE token_hash = ?"
SET_ONLINE = "UPDATE devices SET online_until = ? WHERE user_id = ? AND device_id = ?"
ONLINE_DEVICES = (
    "SELECT device_id FROM devices WHERE user_id = ? AND online_until IS NOT NULL "
    "AND online_until > ? ORDER BY device_id"
)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_api_key(db: Database, *, user_id: str) -> str:
    """A new API key for the user (only its hash is stored)."""
    key = "rgk_" + secrets.token_urlsafe(32)
    await db.execute((INSERT_KEY, (_hash(key), user_id, now())))
    return key


async def user_for_key(db: Database, key: str) -> str | None:
    rows = await db.fetch(SELECT_KEY, _hash(key))
    return str(rows[0]["user_id"]) if rows else None


async def add_device(db: Database, *, user_id: str, device_id: str) -> str:
    """A new token for the device (an existing device gets a new token; the old one stops
    working)."""
    token = make_device_token(device_id, secrets.token_urlsafe(32))
    await db.execute((UPSERT_DEVICE, (user_id, device_id, _hash(token), now())))
    return token


async def device_for_token(db: Database, token: str) -> tuple[str, str] | None:
    """(user id, device id) of a device token."""
    rows = await db.fetch(SELECT_DEVICE, _hash(token))
    return (str(rows[0]["user_id"]), str(rows[0]["device_id"])) if rows else None


async def set_online(db: Database, *, user_id: str, device_id: str, until: str | None) -> None:
    """The device is present until `until` (None: gone), renewed by the process holding its
    socket."""
    await db.execute((SET_ONLINE, (until, user_id, device_id)))


async def online_devices(tx: Transaction, *, user_id: str, at: str) -> list[str]:
    """The user's devices present at `at`, in id order."""
    return [str(r["device_id"]) for r in await tx.fetch(ONLINE_DEVICES, user_id, at)]
