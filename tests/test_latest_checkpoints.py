"""The checkpoints a server keeps in memory (`checkpoints.kept`, `.caching_saver`), on Postgres.

A kept checkpoint is served only to a read vouched for by the thread's latest checkpoint as
the database has it (read with the run, by the server's own statement), and it must be
exactly what the database would have given back. Whenever the database has moved on (another
process stepped the thread, or stored a write for its checkpoint), the read goes to the
database."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict, cast

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.pregel import Pregel
from langgraph.types import Command, Durability, interrupt

from checkpoints import Database, open_checkpointers, open_database
from checkpoints.caching_saver import CachingPostgresSaver
from checkpoints.deferred import deferred_writes
from checkpoints.kept import CheckpointMark, LatestCheckpoints, vouched
from harness.records import agentic_run
from server.storage import bridge

USER = "ana"
QUESTIONS = 3


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    asked: int


async def model(state: State) -> State:
    return {"messages": [AIMessage(content=f"turn {len(state['messages'])}", id=None)]}


async def ask(state: State) -> State:
    answer = interrupt({"question": len(state["messages"])})
    return {"messages": [HumanMessage(content=str(answer))], "asked": state.get("asked", 0) + 1}


async def after_ask(state: State) -> str:
    return END if state.get("asked", 0) >= QUESTIONS else "model"


def question_loop(saver: AsyncPostgresSaver) -> Pregel[Any, Any, Any, Any]:
    """model -> ask (interrupts) -> model ..., until three questions are answered."""
    builder = StateGraph(State)
    builder.add_node("model", model)
    builder.add_node("ask", ask)
    builder.add_edge(START, "model")
    builder.add_edge("model", "ask")
    builder.add_conditional_edges("ask", after_ask, ["model", END])
    return cast(Pregel[Any, Any, Any, Any], builder.compile(checkpointer=saver))


@dataclass
class Process:
    """One server process's savers, with its own kept checkpoints."""

    saver: CachingPostgresSaver
    graph: Pregel[Any, Any, Any, Any]

    @property
    def latest(self) -> LatestCheckpoints:
        return self.saver.latest

    async def step(
        self, config: RunnableConfig, payload: Any, durability: Durability = "exit"
    ) -> None:
        await self.graph.ainvoke(payload, config, durability=durability)


@dataclass
class Setting:
    db: Database
    here: Process
    elsewhere: Process
    config: RunnableConfig
    run_id: str

    async def mark(self) -> CheckpointMark:
        """The thread's latest checkpoint as the server's step reads it, with the run."""
        read = bridge.claim_and_read(self.db.kind, self.run_id, marks=True)
        execution = read.read(await self.db.results(*read.statements))
        assert execution is not None and execution.checkpoint is not None
        return execution.checkpoint

    async def from_database(self) -> CheckpointTuple:
        found = await AsyncPostgresSaver.aget_tuple(self.here.saver, self.config)
        assert found is not None
        return found


async def process(stack: AsyncExitStack, url: str) -> Process:
    (saver,) = await stack.enter_async_context(open_checkpointers(url, count=1, keep_latest=4))
    assert isinstance(saver, CachingPostgresSaver)
    return Process(saver, question_loop(saver))


@pytest.fixture
async def setting(postgres_url: str) -> AsyncIterator[Setting]:
    async with AsyncExitStack() as stack:
        here = await process(stack, postgres_url)
        elsewhere = await process(stack, postgres_url)
        db = await stack.enter_async_context(open_database(postgres_url))
        run = await agentic_run(db, user_id=USER)
        config: RunnableConfig = {"configurable": {"thread_id": run.thread_id}}
        yield Setting(db, here, elsewhere, config, run.run_id)


def same(kept: CheckpointTuple, stored: CheckpointTuple) -> None:
    assert kept.config == stored.config
    assert kept.checkpoint == stored.checkpoint
    assert kept.metadata == stored.metadata
    assert kept.parent_config == stored.parent_config
    assert kept.pending_writes == stored.pending_writes


@pytest.mark.parametrize(
    ("durability", "deferred"), [("exit", False), ("sync", False), ("exit", True)]
)
async def test_a_kept_checkpoint_is_what_the_database_gives_back(
    setting: Setting, durability: Durability, deferred: bool
) -> None:
    """Kept and stored tuples are the same, the stored one written by the saver itself or,
    `deferred`, by the statements it gave instead (run here after the step)."""
    here = setting.here

    async def step(payload: Any) -> None:
        with deferred_writes(str(setting.config["configurable"]["thread_id"]), deferred) as writes:
            await here.step(setting.config, payload, durability)
        if deferred:
            assert writes and (await setting.mark()).checkpoint_id == before.checkpoint_id
            await setting.db.execute(*writes)

    before = await setting.mark()
    await step({"messages": [HumanMessage(content="hi")]})
    for answer in ("yes", "no"):
        stored = await setting.from_database()
        assert stored.pending_writes  # the interrupt, at least
        with vouched(before := await setting.mark()):
            kept = await here.saver.aget_tuple(setting.config)
        assert kept is not None
        same(kept, stored)
        await step(Command(resume=answer))
    assert here.latest.hits == 2 and here.latest.misses == 0


async def test_a_vouched_step_reads_nothing_back(
    setting: Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = setting.here
    await here.step(setting.config, {"messages": [HumanMessage(content="hi")]})
    reads: list[RunnableConfig] = []
    original = AsyncPostgresSaver.aget_tuple

    async def counted(saver: AsyncPostgresSaver, config: RunnableConfig) -> Any:
        reads.append(config)
        return await original(saver, config)

    monkeypatch.setattr(AsyncPostgresSaver, "aget_tuple", counted)
    with vouched(await setting.mark()):
        await here.step(setting.config, Command(resume="yes"))
    assert reads == []
    await here.step(setting.config, Command(resume="no"))  # not vouched: read back
    assert len(reads) == 1
    values = (await here.graph.aget_state(setting.config)).values
    assert [m.content for m in values["messages"]] == [
        "hi",
        "turn 1",
        "yes",
        "turn 3",
        "no",
        "turn 5",
    ]


async def test_a_thread_stepped_by_another_process_is_read_from_the_database(
    setting: Setting,
) -> None:
    here, elsewhere = setting.here, setting.elsewhere
    await here.step(setting.config, {"messages": [HumanMessage(content="hi")]})
    await elsewhere.step(setting.config, Command(resume="from elsewhere"))

    with vouched(await setting.mark()):
        found = await here.saver.aget_tuple(setting.config)
    assert found is not None
    same(found, await setting.from_database())
    assert found.checkpoint["channel_values"]["messages"][-2].content == "from elsewhere"
    assert (here.latest.hits, here.latest.misses) == (0, 1)


async def test_a_write_stored_by_another_process_is_read_from_the_database(
    setting: Setting,
) -> None:
    here, elsewhere = setting.here, setting.elsewhere
    await here.step(setting.config, {"messages": [HumanMessage(content="hi")]})
    latest = await setting.from_database()
    await elsewhere.saver.aput_writes(latest.config, [("asked", 7)], task_id="another-task")

    with vouched(await setting.mark()):
        found = await here.saver.aget_tuple(setting.config)
    assert found is not None
    assert ("another-task", "asked", 7) in found.pending_writes
    assert (here.latest.hits, here.latest.misses) == (0, 1)


async def test_an_unvouched_or_mismatched_read_goes_to_the_database(setting: Setting) -> None:
    here = setting.here
    await here.step(setting.config, {"messages": [HumanMessage(content="hi")]})
    mark = await setting.mark()

    assert await here.saver.aget_tuple(setting.config) is not None  # no vouch
    other = CheckpointMark(mark.thread_id, mark.checkpoint_id, mark.writes + 1)
    with vouched(other):
        assert await here.saver.aget_tuple(setting.config) is not None
    assert (here.latest.hits, here.latest.misses) == (0, 1)
    with vouched(mark):  # the mismatched read took the entry: nothing is kept any more
        assert await here.saver.aget_tuple(setting.config) is not None
    assert (here.latest.hits, here.latest.misses) == (0, 2)


async def test_a_failed_write_forgets_the_thread(
    setting: Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = setting.here
    await here.step(setting.config, {"messages": [HumanMessage(content="hi")]})
    thread_id = str(setting.config["configurable"]["thread_id"])
    assert len(here.latest) == 1

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise OSError("the connection broke")

    monkeypatch.setattr(AsyncPostgresSaver, "aput_writes", failing)
    latest = await setting.from_database()
    with pytest.raises(OSError):
        await here.saver.aput_writes(latest.config, [("asked", 1)], task_id="t")
    assert len(here.latest) == 0
    with vouched(CheckpointMark(thread_id, latest.config["configurable"]["checkpoint_id"], 1)):
        assert await here.saver.aget_tuple(setting.config) is not None
    assert here.latest.misses == 1


async def test_the_least_recently_written_thread_is_dropped_first(setting: Setting) -> None:
    here = setting.here
    for index in range(here.latest.capacity + 1):
        config: RunnableConfig = {"configurable": {"thread_id": f"t{index}"}}
        await here.step(config, {"messages": [HumanMessage(content="hi")]})
    assert len(here.latest) == here.latest.capacity
    first = await here.saver.aget_tuple({"configurable": {"thread_id": "t0"}})
    assert first is not None
    with vouched(CheckpointMark("t0", first.config["configurable"]["checkpoint_id"], 1)):
        assert await here.saver.aget_tuple({"configurable": {"thread_id": "t0"}}) is not None
    assert here.latest.misses == 1


async def test_only_the_deferred_threads_root_checkpoint_waits(setting: Setting) -> None:
    """Inside `deferred_writes(thread)`, another thread's checkpoint is written at once."""
    here = setting.here
    other: RunnableConfig = {"configurable": {"thread_id": "another-thread"}}
    with deferred_writes(str(setting.config["configurable"]["thread_id"])) as writes:
        await here.step(other, {"messages": [HumanMessage(content="hi")]})
        assert writes == []
        await here.step(setting.config, {"messages": [HumanMessage(content="hi")]})
        assert writes
    assert await AsyncPostgresSaver.aget_tuple(here.saver, other) is not None
    assert await AsyncPostgresSaver.aget_tuple(here.saver, setting.config) is None  # not run
