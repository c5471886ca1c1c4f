"""The latest checkpoint of recently stepped threads, kept in memory, so that a run's next
step does not read back (and deserialize) the checkpoint its previous step has just written.

An entry is what this process last wrote for a thread's root namespace: the checkpoint as it
was put, its metadata as stored, and the writes put for it since, kept as the database keeps
them (one per task and index). `CachingPostgresSaver.aget_tuple` serves an entry only inside
`vouched(mark)`, where `mark` is the thread's latest checkpoint id and its number of writes as
read from the database under the thread's lock, so nothing else can move the checkpoint until
the step ends. If anything differs (another process stepped the thread, a write failed half
way, the entry was evicted), the checkpoint is read from the database as usual.

An entry is handed over, not shared: serving it removes it, and the step's own puts make the
next one. A failed put or write forgets the thread.

Inside `deferred_writes()`, the saver does not execute its writes: it adds its statements to
the block's list, for the caller to run in a transaction of its own (the server runs a step's
checkpoint in the pipeline that parks the run and lets its lock go, so the two commit
together). The statements are the ones `AsyncPostgresSaver` runs (`put_statements`,
`put_writes_statements`), serialized on the event loop instead of in a thread.

Values are kept as the step left them: what its next superstep would have seen had the graph
not stopped (plain containers copied, so that later changes in place do not reach them). The
database gives back their serialized form, which can differ in type, not in content: a tuple
comes back as a list, an `Enum` stored inline as its value, a `bytearray` as `bytes`. A value
with a tuple in its plain containers (lists, tuples, dicts) is kept as the serializer gives it
back, so the common case matches exactly (`as_stored`); tuples inside other objects (a message's
`additional_kwargs`, a dataclass) and the other types above are kept as they were made. Graph
code sees those types between supersteps anyway. With `LANGGRAPH_STRICT_MSGPACK` set, a
database read refuses types not registered with the serializer; a kept checkpoint does not.

The mark is the checkpoint id and the number of its writes: a write that replaces one of the
same task and index (the error, interrupt and resume channels are upserted) without a new
checkpoint, by another process, is not seen. Every step of this server that writes also writes
a new checkpoint, so that happens only to a step stopped before its first superstep.
"""

import copy
import json
from collections import OrderedDict
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
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg.types.json import Jsonb

#: Threads whose latest checkpoint a server keeps by default.
DEFAULT_CAPACITY = 256


@dataclass(frozen=True)
class CheckpointMark:
    """A thread's latest root checkpoint as the database has it: its id (None: no checkpoint
    yet) and how many writes are stored for it."""

    thread_id: str
    checkpoint_id: str | None
    writes: int


VOUCHED: ContextVar[CheckpointMark | None] = ContextVar("relaygraph_vouched", default=None)
Statement = tuple[str, Sequence[Any]]


@dataclass
class Deferred:
    """The statements of one thread's root checkpoint writes, collected in order."""

    thread_id: str
    statements: list[Statement] = field(default_factory=list)


DEFERRED: ContextVar[Deferred | None] = ContextVar("relaygraph_deferred", default=None)


@contextmanager
def vouched(mark: CheckpointMark | None) -> Iterator[None]:
    """Within this block, a kept checkpoint that matches `mark` may be served."""
    token = VOUCHED.set(mark)
    try:
        yield
    finally:
        VOUCHED.reset(token)


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


def _deferred_for(config: RunnableConfig) -> list[Statement] | None:
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


@dataclass
class _Entry:
    config: RunnableConfig
    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    parent_config: RunnableConfig | None
    #: (task id, index) -> (task path, channel, value), as the database's primary key keeps them.
    writes: dict[tuple[str, int], tuple[str, str, Any]] = field(default_factory=dict)

    @property
    def checkpoint_id(self) -> str:
        return str(self.config["configurable"]["checkpoint_id"])

    def as_tuple(self) -> CheckpointTuple:
        ordered = sorted(self.writes.items(), key=lambda w: writes_sort_key(w[1][0], *w[0]))
        return CheckpointTuple(
            config=self.config,
            checkpoint=self.checkpoint,
            metadata=self.metadata,
            parent_config=self.parent_config,
            pending_writes=[(task, channel, value) for (task, _), (_, channel, value) in ordered],
        )


class LatestCheckpoints:
    """At most `capacity` threads' latest checkpoints, the least recently written dropped
    first; `hits` and `misses` count the vouched reads."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, thread_id: str, entry: _Entry) -> None:
        self._entries[thread_id] = entry
        self._entries.move_to_end(thread_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def add_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        task_id: str,
        task_path: str,
        writes: Sequence[tuple[str, Any]],
    ) -> None:
        """Mirror the saver's `put_writes`: writes to special channels replace the stored
        ones, the others are kept only if not stored yet."""
        entry = self._entries.get(thread_id)
        if entry is None or entry.checkpoint_id != checkpoint_id:
            return
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        for index, (channel, value) in enumerate(writes):
            key = (task_id, WRITES_IDX_MAP.get(channel, index))
            if replace or key not in entry.writes:
                entry.writes[key] = (task_path, channel, value)

    def take(self, mark: CheckpointMark) -> CheckpointTuple | None:
        """The kept checkpoint if it is the one `mark` names, removed from the cache."""
        entry = self._entries.pop(mark.thread_id, None)
        if (
            entry is None
            or entry.checkpoint_id != mark.checkpoint_id
            or len(entry.writes) != mark.writes
        ):
            self.misses += 1
            return None
        self.hits += 1
        return entry.as_tuple()

    def forget(self, thread_id: str) -> None:
        self._entries.pop(thread_id, None)


def has_plain_tuple(value: Any) -> bool:
    """Whether a tuple is in `value`'s plain containers (not looking inside other objects)."""
    if isinstance(value, tuple):
        return True
    if isinstance(value, list):
        return any(has_plain_tuple(item) for item in value)
    if isinstance(value, dict):
        return any(has_plain_tuple(item) for item in value.values())
    return False


def as_stored(serde: SerializerProtocol, value: Any) -> Any:
    """`value` to keep: as the serializer gives it back if it holds a plain tuple, otherwise
    itself, a plain container copied (a channel may add to its value in place after the
    checkpoint was put: LangGraph applies the other tasks' writes as it stops on an
    interrupt). See the module's docstring."""
    if has_plain_tuple(value):
        return serde.loads_typed(serde.dumps_typed(value))
    return copy.copy(value) if type(value) in (list, dict, set) else value


class CachingPostgresSaver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` that keeps what it writes in `latest` and serves it back to a
    vouched read of the same thread, and that collects its writes instead of running them
    inside `deferred_writes` (see the module's docstring)."""

    def __init__(self, conn: Any, *, latest: LatestCheckpoints) -> None:
        super().__init__(conn)
        self.latest = latest

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        mark = VOUCHED.get()
        configurable = config["configurable"]
        if (
            mark is not None
            and mark.thread_id == configurable["thread_id"]
            and not configurable.get("checkpoint_ns")
            and not get_checkpoint_id(config)
            and (kept := self.latest.take(mark)) is not None
        ):
            return kept
        return await super().aget_tuple(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = str(config["configurable"]["thread_id"])
        deferred = _deferred_for(config)
        try:
            if deferred is None:
                next_config = await super().aput(config, checkpoint, metadata, new_versions)
            else:
                next_config, statements = self.put_statements(
                    config, checkpoint, metadata, new_versions
                )
                deferred.extend(statements)
        except BaseException:
            self.latest.forget(thread_id)
            raise
        if config["configurable"].get("checkpoint_ns"):
            return next_config
        if any(isinstance(v, _DeltaSnapshot) for v in checkpoint["channel_values"].values()):
            self.latest.forget(thread_id)  # stored as a delta: read it back as the saver builds it
            return next_config
        values = {k: as_stored(self.serde, v) for k, v in checkpoint["channel_values"].items()}
        self.latest.put(thread_id, _entry(config, next_config, checkpoint, values, metadata))
        return next_config

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        deferred = _deferred_for(config)
        try:
            if deferred is None:
                await super().aput_writes(config, writes, task_id, task_path)
            else:
                deferred.extend(self.put_writes_statements(config, writes, task_id, task_path))
        except BaseException:
            self.latest.forget(thread_id)
            raise
        if not configurable.get("checkpoint_ns"):
            stored = [(channel, as_stored(self.serde, value)) for channel, value in writes]
            self.latest.add_writes(
                thread_id, str(configurable["checkpoint_id"]), task_id, task_path, stored
            )

    def put_statements(
        self,
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
            (self.UPSERT_CHECKPOINT_BLOBS_SQL, row)
            for row in self._dump_blobs(thread_id, checkpoint_ns, blob_values, versions)
        ]
        stored = {**checkpoint, "channel_values": inline}
        statements.append(
            (
                self.UPSERT_CHECKPOINTS_SQL,
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
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> list[Statement]:
        """What `AsyncPostgresSaver.aput_writes` runs: writes to special channels replace the
        stored ones, the others are inserted if not stored yet."""
        configurable = config["configurable"]
        query = (
            self.UPSERT_CHECKPOINT_WRITES_SQL
            if all(channel in WRITES_IDX_MAP for channel, _ in writes)
            else self.INSERT_CHECKPOINT_WRITES_SQL
        )
        rows = self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        return [(query, row) for row in rows]

    async def adelete_thread(self, thread_id: str) -> None:
        self.latest.forget(str(thread_id))
        await super().adelete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids if not isinstance(thread_ids, str) else ():
            self.latest.forget(str(thread_id))
        await super().aprune(thread_ids, strategy=strategy)


def _entry(
    config: RunnableConfig,
    next_config: RunnableConfig,
    checkpoint: Checkpoint,
    values: dict[str, Any],
    metadata: CheckpointMetadata,
) -> _Entry:
    """The tuple `aget_tuple` would read back: the checkpoint's JSON part and the metadata as
    they come out of `jsonb`, with these channel values."""
    stored = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    parent_id = config["configurable"].get("checkpoint_id")
    return _Entry(
        config=next_config,
        checkpoint={**json.loads(json.dumps(stored)), "channel_values": values},  # type: ignore[typeddict-item]
        metadata=json.loads(json.dumps(get_serializable_checkpoint_metadata(config, metadata))),
        parent_config=(
            {
                "configurable": {
                    "thread_id": config["configurable"]["thread_id"],
                    "checkpoint_ns": config["configurable"].get("checkpoint_ns", ""),
                    "checkpoint_id": parent_id,
                }
            }
            if parent_id
            else None
        ),
    )
