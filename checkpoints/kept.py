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
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

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


@contextmanager
def vouched(mark: CheckpointMark | None) -> Iterator[None]:
    """Within this block, a kept checkpoint that matches `mark` may be served."""
    token = VOUCHED.set(mark)
    try:
        yield
    finally:
        VOUCHED.reset(token)


@dataclass
class Entry:
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
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, thread_id: str, entry: Entry) -> None:
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


def entry_of(
    config: RunnableConfig,
    next_config: RunnableConfig,
    checkpoint: Checkpoint,
    values: dict[str, Any],
    metadata: CheckpointMetadata,
) -> Entry:
    """The tuple `aget_tuple` would read back: the checkpoint's JSON part and the metadata as
    they come out of `jsonb`, with these channel values."""
    stored = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    parent_id = config["configurable"].get("checkpoint_id")
    return Entry(
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
