"""Inside `deferred_writes()`, the saver does not execute its writes: it adds its statements to
the block's list, for the caller to run in a transaction of its own (the server runs a step's
checkpoint in the pipeline that parks the run and lets its lock go, so the two commit
together). The statements are the ones `AsyncPostgresSaver` runs (`put_statements`,
`put_writes_statements`), serialized on the event loop instead of in a thread.

`put_statements` and `put_writes_statements` re-implement `AsyncPostgresSaver.aput` and
`aput_writes` with that class's own statements and helpers (`_dump_blobs`, `_dump_writes`),
as the version pinned in pyproject.toml has them; `tests/test_latest_checkpoints.py` compares
what they store with what the saver itself stores.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg.types.json import Jsonb

from checkpoints.sql import Statement


@dataclass
class Deferred:
    """The statements of one thread's root checkpoint writes, collected in order."""

    thread_id: str
    statements: list[Statement] = field(default_factory=list)


DEFERRED: ContextVar[Deferred | None] = ContextVar("relaygraph_deferred", default=None)


@contextmanager
def deferred_writes(thread_id: str, active: bool = True) -> Iterator[list[Statement]]:
    """Within this block (if `active`), the writes of `thread_id`'s root checkpoint are
    collected in the list it gives, not executed: the caller must run them, in order. Other
    threads' and subgraphs' checkpoints are written as usual (a subgraph may read its own back
    within the step)."""
    deferred = Deferred(thread_id)
    if not active:
        yield deferred.statements
        return
    token = DEFERRED.set(deferred)
    try:
        yield deferred.statements
    finally:
        DEFERRED.reset(token)


def deferred_for(config: RunnableConfig) -> list[Statement] | None:
    """Where this write goes if it is deferred: the root checkpoint of the deferred thread."""
    deferred = DEFERRED.get()
    configurable = config["configurable"]
    if (
        deferred is None
        or configurable.get("checkpoint_ns")
        or str(configurable["thread_id"]) != deferred.thread_id
    ):
        return None
    return deferred.statements


def put_statements(
    saver: AsyncPostgresSaver,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> tuple[RunnableConfig, list[Statement]]:
    """What `AsyncPostgresSaver.aput` runs: the new blobs, then the checkpoint row, with
    primitive channel values inline and the others (and delta snapshots) in blobs."""
    configurable = config["configurable"]
    thread_id, checkpoint_ns = configurable["thread_id"], configurable["checkpoint_ns"]
    inline = dict(checkpoint["channel_values"])
    blob_values: dict[str, Any] = {}
    for channel, value in checkpoint["channel_values"].items():
        if isinstance(value, _DeltaSnapshot):
            blob_values[channel] = inline.pop(channel)
            inline[channel] = True
        elif value is not None and not isinstance(value, str | int | float | bool):
            blob_values[channel] = inline.pop(channel)
    versions = {k: v for k, v in new_versions.items() if k in blob_values}
    statements: list[Statement] = [
        (saver.UPSERT_CHECKPOINT_BLOBS_SQL, row)
        for row in saver._dump_blobs(thread_id, checkpoint_ns, blob_values, versions)
    ]
    stored = {**checkpoint, "channel_values": inline}
    statements.append(
        (
            saver.UPSERT_CHECKPOINTS_SQL,
            (
                thread_id,
                checkpoint_ns,
                checkpoint["id"],
                configurable.get("checkpoint_id"),
                Jsonb(stored),
                Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
            ),
        )
    )
    next_config: RunnableConfig = {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint["id"],
        }
    }
    return next_config, statements


def put_writes_statements(
    saver: AsyncPostgresSaver,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> list[Statement]:
    """What `AsyncPostgresSaver.aput_writes` runs: writes to special channels replace the
    stored ones, the others are inserted if not stored yet."""
    configurable = config["configurable"]
    query = (
        saver.UPSERT_CHECKPOINT_WRITES_SQL
        if all(channel in WRITES_IDX_MAP for channel, _ in writes)
        else saver.INSERT_CHECKPOINT_WRITES_SQL
    )
    rows = saver._dump_writes(
        configurable["thread_id"],
        configurable["checkpoint_ns"],
        configurable["checkpoint_id"],
        task_id,
        task_path,
        writes,
    )
    return [(query, row) for row in rows]
