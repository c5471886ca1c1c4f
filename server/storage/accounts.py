"""API keys, device tokens, and device presence (shared by every server process)."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from checkpoints import Database
from checkpoints.clock import iso, now, utcnow
from checkpoints.database import Transaction
from device.protocol import make_device_token

INSERT_KEY = "INSERT INTO api_keys (key_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)"
#: The user of a key that has not expired. Params: the key's hash, the time now.
SELECT_KEY = (
    "SELECT user_id FROM api_keys WHERE key_hash = ? AND (expires_at IS NULL OR expires_at > ?)"
)
#: Keys by their id (the first `KEY_ID_LENGTH` characters of the hash), one user's or all
#: (NULL). Params: the user twice.
LIST_KEYS = (
    "SELECT substr(key_hash, 1, 12) AS key_id, user_id, created_at, expires_at FROM api_keys "
    "WHERE (CAST(? AS TEXT) IS NULL OR user_id = ?) ORDER BY user_id, created_at"
)
DELETE_KEY = "DELETE FROM api_keys WHERE substr(key_hash, 1, 12) = ?"
LIST_DEVICES = (
    "SELECT user_id, device_id, created_at, online_until FROM devices "
    "WHERE (CAST(? AS TEXT) IS NULL OR user_id = ?) ORDER BY user_id, device_id"
)
DELETE_DEVICE = "DELETE FROM devices WHERE user_id = ? AND device_id = ?"
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


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed: its id (never the key), owner and validity."""

    key_id: str
    user_id: str
    created_at: str
    expires_at: str | None


@dataclass(frozen=True)
class Device:
    """A device as listed: owner, id, when its token was issued, presence."""

    user_id: str
    device_id: str
    created_at: str
    online_until: str | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_api_key(db: Database, *, user_id: str, expires_in: timedelta | None = None) -> str:
    """A new API key for the user (only its hash is stored), valid for `expires_in` (None:
    until revoked)."""
    key = "rgk_" + secrets.token_urlsafe(32)
    expires_at = iso(utcnow() + expires_in) if expires_in is not None else None
    await db.execute((INSERT_KEY, (_hash(key), user_id, now(), expires_at)))
    return key


async def user_for_key(db: Database, key: str) -> str | None:
    """The user of a key that exists and has not expired."""
    rows = await db.fetch(SELECT_KEY, _hash(key), now())
    return str(rows[0]["user_id"]) if rows else None


def key_id(key: str) -> str:
    """The id a key is listed and revoked by (the start of its hash; not secret)."""
    return _hash(key)[:12]


async def list_keys(db: Database, *, user_id: str | None = None) -> list[ApiKey]:
    return [ApiKey(**row) for row in await db.fetch(LIST_KEYS, user_id, user_id)]


async def revoke_key(db: Database, key_id: str) -> bool:
    """Delete the key; whether there was one. It stops working at once, on every process."""
    return await db.run(DELETE_KEY, key_id) > 0


async def list_devices(db: Database, *, user_id: str | None = None) -> list[Device]:
    return [Device(**row) for row in await db.fetch(LIST_DEVICES, user_id, user_id)]


async def revoke_device(db: Database, *, user_id: str, device_id: str) -> bool:
    """Delete the device's token; whether there was one. Its next hello is refused (4401)."""
    return await db.run(DELETE_DEVICE, user_id, device_id) > 0


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
