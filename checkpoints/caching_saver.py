"""The server's Postgres saver: `AsyncPostgresSaver` with the latest checkpoints kept in
memory (`checkpoints.kept`) and its writes deferred on request (`checkpoints.deferred`)."""

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot

from checkpoints.deferred import deferred_for, put_statements, put_writes_statements
from checkpoints.kept import VOUCHED, LatestCheckpoints, as_stored, entry_of


class CachingPostgresSaver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` that keeps what it writes in `latest` and serves it back to a
    vouched read of the same thread (`checkpoints.kept.vouched`), and that collects its
    writes instead of running them inside `checkpoints.deferred.deferred_writes`."""

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
        deferred = deferred_for(config)
        try:
            if deferred is None:
                next_config = await super().aput(config, checkpoint, metadata, new_versions)
            else:
                next_config, statements = put_statements(
                    self, config, checkpoint, metadata, new_versions
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
        self.latest.put(thread_id, entry_of(config, next_config, checkpoint, values, metadata))
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
        deferred = deferred_for(config)
        try:
            if deferred is None:
                await super().aput_writes(config, writes, task_id, task_path)
            else:
                deferred.extend(put_writes_statements(self, config, writes, task_id, task_path))
        except BaseException:
            self.latest.forget(thread_id)
            raise
        if not configurable.get("checkpoint_ns"):
            stored = [(channel, as_stored(self.serde, value)) for channel, value in writes]
            self.latest.add_writes(
                thread_id, str(configurable["checkpoint_id"]), task_id, task_path, stored
            )

    async def adelete_thread(self, thread_id: str) -> None:
        self.latest.forget(str(thread_id))
        await super().adelete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids if not isinstance(thread_ids, str) else ():
            self.latest.forget(str(thread_id))
        await super().aprune(thread_ids, strategy=strategy)
