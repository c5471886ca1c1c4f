"""Assistants: a graph id with its config, context and metadata, per user."""

import json
import uuid
from typing import Any

from checkpoints import Database
from checkpoints.clock import now
from checkpoints.database import Transaction
from server.records import Assistant, Json
from server.storage.columns import loads, matches

COLUMNS = (
    "assistant_id, graph_id, name, description, config, context, metadata, version, "
    "created_at, updated_at"
)
INSERT = (
    "INSERT INTO assistants (assistant_id, user_id, graph_id, name, description, config, "
    "context, metadata, version, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (assistant_id) DO NOTHING"
)
SELECT = f"SELECT {COLUMNS} FROM assistants WHERE assistant_id = ? AND user_id = ?"
UPDATE = (
    "UPDATE assistants SET graph_id = ?, name = ?, description = ?, config = ?, context = ?, "
    "metadata = ?, version = version + 1, updated_at = ? WHERE assistant_id = ? AND user_id = ?"
)
DELETE = "DELETE FROM assistants WHERE assistant_id = ? AND user_id = ?"
SEARCH = f"SELECT {COLUMNS} FROM assistants WHERE user_id = ? ORDER BY created_at"
SEARCH_GRAPH = (
    f"SELECT {COLUMNS} FROM assistants WHERE user_id = ? AND graph_id = ? ORDER BY created_at"
)


class AssistantOfAnotherUser(Exception):
    """The id is taken by another user's assistant."""


async def create(
    db: Database,
    *,
    user_id: str,
    graph_id: str,
    assistant_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    config: Json | None = None,
    context: Json | None = None,
    metadata: Json | None = None,
) -> tuple[Assistant, bool]:
    """(the assistant, whether it was created); an existing id of this user's is returned
    as it is. Raises `AssistantOfAnotherUser`."""
    assistant_id = assistant_id or str(uuid.uuid4())
    stamp = now()
    created = await db.execute(
        (
            INSERT,
            (
                assistant_id,
                user_id,
                graph_id,
                name or graph_id,
                description,
                json.dumps(config or {}),
                json.dumps(context or {}),
                json.dumps(metadata or {}),
                stamp,
                stamp,
            ),
        )
    )
    found = await get(db, user_id=user_id, assistant_id=assistant_id)
    if found is None:
        raise AssistantOfAnotherUser(assistant_id)
    return found, bool(created)


async def get(tx: Transaction, *, user_id: str, assistant_id: str) -> Assistant | None:
    rows = await tx.fetch(SELECT, assistant_id, user_id)
    return decode(rows[0]) if rows else None


async def update(
    db: Database, *, user_id: str, assistant_id: str, changes: Json
) -> Assistant | None:
    """The assistant with `changes` (None values left out; metadata merged), its version one
    higher; None if it does not exist."""
    current = await get(db, user_id=user_id, assistant_id=assistant_id)
    if current is None:
        return None
    given = {k: v for k, v in changes.items() if v is not None}
    metadata = {**current.metadata, **given.get("metadata", {})}
    await db.execute(
        (
            UPDATE,
            (
                given.get("graph_id", current.graph_id),
                given.get("name", current.name),
                given.get("description", current.description),
                json.dumps(given.get("config", current.config)),
                json.dumps(given.get("context", current.context)),
                json.dumps(metadata),
                now(),
                assistant_id,
                user_id,
            ),
        )
    )
    return await get(db, user_id=user_id, assistant_id=assistant_id)


async def delete(db: Database, *, user_id: str, assistant_id: str) -> bool:
    return bool(await db.execute((DELETE, (assistant_id, user_id))))


async def search(
    db: Database,
    *,
    user_id: str,
    graph_id: str | None,
    metadata: Json | None,
    limit: int,
    offset: int,
) -> list[Assistant]:
    if graph_id:
        rows = await db.fetch(SEARCH_GRAPH, user_id, graph_id)
    else:
        rows = await db.fetch(SEARCH, user_id)
    found = [a for a in map(decode, rows) if matches(a.metadata, metadata)]
    return found[offset : offset + limit]


def decode(row: dict[str, Any], prefix: str = "") -> Assistant:
    """An assistant from its columns (`prefix`: as aliased in a join)."""
    return Assistant(
        assistant_id=str(row[f"{prefix}assistant_id"]),
        graph_id=str(row[f"{prefix}graph_id"]),
        name=str(row[f"{prefix}name"]),
        description=row[f"{prefix}description"],
        config=loads(row[f"{prefix}config"]),
        context=loads(row[f"{prefix}context"]),
        metadata=loads(row[f"{prefix}metadata"]),
        version=int(row[f"{prefix}version"]),
        created_at=str(row[f"{prefix}created_at"]),
        updated_at=str(row[f"{prefix}updated_at"]),
    )
