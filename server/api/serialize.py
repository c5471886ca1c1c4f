"""Graph values as JSON: messages, pydantic models, dataclasses, interrupts."""

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.types import Interrupt, StateSnapshot
from pydantic import BaseModel


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of `value`."""
    if isinstance(value, BaseMessage):
        return value.model_dump(mode="json")
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Interrupt):
        return {"value": jsonable(value.value), "id": value.id}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def thread_state(snapshot: StateSnapshot, thread_id: str) -> dict[str, Any]:
    """A `StateSnapshot` in the LangGraph server's ThreadState shape."""
    configurable = (snapshot.config or {}).get("configurable", {})
    parent = (snapshot.parent_config or {}).get("configurable", {})
    return {
        "values": jsonable(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": {
            "thread_id": thread_id,
            "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": configurable.get("checkpoint_id"),
        },
        "metadata": jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": (
            {
                "thread_id": thread_id,
                "checkpoint_ns": parent.get("checkpoint_ns", ""),
                "checkpoint_id": parent.get("checkpoint_id"),
            }
            if parent
            else None
        ),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "error": str(task.error) if task.error else None,
                "interrupts": jsonable(task.interrupts),
                "state": None,
            }
            for task in snapshot.tasks
        ],
        "interrupts": jsonable(list(snapshot.interrupts)),
    }


def empty_state(thread_id: str) -> dict[str, Any]:
    """The state of a thread that has not run yet."""
    return {
        "values": {},
        "next": [],
        "checkpoint": None,
        "metadata": {},
        "created_at": None,
        "parent_checkpoint": None,
        "tasks": [],
        "interrupts": [],
    }
