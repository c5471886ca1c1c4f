"""Storage: checkpointers and LangGraph's store (`factory`), the application database and
its migrations (`database`, `migrations`), `relaygraph run`'s store (`run_store`), and the
server's Postgres saver (`caching_saver`, over `kept` and `deferred`). SQLite by default,
Postgres in production, memory in unit tests."""

from checkpoints.database import Database, open_database
from checkpoints.factory import (
    StorageError,
    open_checkpointer,
    open_checkpointers,
    open_graph_store,
    storage_kind,
)
from checkpoints.run_store import AppStore, open_store

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
