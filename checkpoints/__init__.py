"""Checkpointers and the application store: SQLite (default), Postgres, memory (tests)."""

from checkpoints.factory import StorageError, open_checkpointer, storage_kind
from checkpoints.store import AppStore, open_store

__all__ = ["AppStore", "StorageError", "open_checkpointer", "open_store", "storage_kind"]
