"""Checkpointers, LangGraph's store and the application store: SQLite (default),
Postgres, memory (tests)."""

from checkpoints.factory import (
    StorageError,
    open_checkpointer,
    open_checkpointers,
    open_graph_store,
    storage_kind,
)
from checkpoints.store import AppStore, Database, open_database, open_store

__all__ = [
    "AppStore",
    "Database",
    "StorageError",
    "open_checkpointer",
    "open_checkpointers",
    "open_database",
    "open_graph_store",
    "open_store",
    "storage_kind",
]
