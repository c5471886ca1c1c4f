"""Drive a graph to its end, answering its device interrupts with a device in this process.

The order is the bridge's: the graph runs until it returns with an interrupt (the pause is
checkpointed by then, `durability="sync"`), and only then are the calls handed to the
device (invariant 3); the answers resume the graph, keyed by interrupt id. The local agent
runs with `durability="exit"` (`relaygraph run`): the checkpoint is written as the graph
returns, as the server's default does; a process killed between two round trips redoes the
steps since the last one, model calls included, and no device call, since every device
call's id was checkpointed with the pause that sent it.
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command, Durability, StateSnapshot

from graphs import RECURSION_LIMIT
from nodes.bridge import DeviceCall, DeviceResult, is_device_request

UNKNOWN_THREAD = "No run is stored for thread {thread_id}; there is nothing to resume."
NOT_A_DEVICE_CALL = "The run is waiting for something other than a device call: {value!r}"

Update = Callable[[tuple[str, ...], dict[str, Any]], None]
Progress = Callable[[dict[str, Any]], None]


class Device(Protocol):
    """Anything that executes a batch of device calls and answers by call id."""

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]: ...


class UnknownThread(LookupError):
    """Resuming a thread that has no checkpoint (invariant 8)."""


class NotADeviceInterrupt(RuntimeError):
    """The graph paused for something a device cannot answer (a human approval, say)."""


def thread_config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": RECURSION_LIMIT}


async def start(
    graph: Pregel[Any, Any, Any, Any],
    *,
    thread_id: str,
    graph_input: dict[str, Any],
    context: Any,
    device: Device,
    on_update: Update | None = None,
    on_progress: Progress | None = None,
    durability: Durability = "sync",
) -> dict[str, Any]:
    """Run a new thread to its end; returns the final state values. `on_update` sees each
    node's update, `on_progress` each event of the graphs' custom stream."""
    return await _drive(
        graph, thread_id, graph_input, context, device, on_update, on_progress, durability
    )


async def resume(
    graph: Pregel[Any, Any, Any, Any],
    *,
    thread_id: str,
    context: Any,
    device: Device,
    on_update: Update | None = None,
    on_progress: Progress | None = None,
    durability: Durability = "sync",
) -> dict[str, Any]:
    """Continue a stored thread from its last checkpoint: redeliver pending calls, or
    re-run the step that was under way when the process died."""
    snapshot = await graph.aget_state(thread_config(thread_id))
    if not snapshot.values and not snapshot.next:
        raise UnknownThread(UNKNOWN_THREAD.format(thread_id=thread_id))
    if not snapshot.next:
        return dict(snapshot.values)
    payload = await answer_interrupts(snapshot, device)
    return await _drive(
        graph, thread_id, payload, context, device, on_update, on_progress, durability
    )


async def answer_interrupts(snapshot: StateSnapshot, device: Device) -> Command | None:
    """The resume command for every pending device interrupt (None: nothing is pending)."""
    interrupts = snapshot.interrupts
    if not interrupts:
        return None
    for pending in interrupts:
        if not is_device_request(pending.value):
            raise NotADeviceInterrupt(NOT_A_DEVICE_CALL.format(value=pending.value))
    calls = [call for pending in interrupts for call in pending.value["calls"]]
    results = await device.execute(calls)
    return Command(
        resume={
            pending.id: {call["id"]: results[call["id"]] for call in pending.value["calls"]}
            for pending in interrupts
        }
    )


async def _drive(
    graph: Pregel[Any, Any, Any, Any],
    thread_id: str,
    payload: Any,
    context: Any,
    device: Device,
    on_update: Update | None,
    on_progress: Progress | None,
    durability: Durability,
) -> dict[str, Any]:
    config = thread_config(thread_id)
    while True:
        async for chunk in graph.astream(
            payload,
            config,
            context=context,
            durability=durability,
            stream_mode=["updates", "custom"],
            subgraphs=True,
        ):
            namespace, mode, data = cast(tuple[tuple[str, ...], str, dict[str, Any]], chunk)
            if mode == "updates" and on_update is not None:
                on_update(namespace, data)
            elif mode == "custom" and on_progress is not None:
                on_progress(data)
        snapshot = await graph.aget_state(config)
        if not snapshot.next:
            return dict(snapshot.values)
        payload = await answer_interrupts(snapshot, device)
