"""An agentic-loop run in its own process, for kill-and-resume tests.

    python -m tests.support.loop_process --workspace DIR --entities DB --state URL \
        --thread ID --log FILE --marker FILE [--resume] [--hold-device TITLE | --hold-model N]

The model is `tests.support.loop_brain` (stateless, so a new process answers the same way);
every model call appends its step number to `FILE.model`; every device execution (not a
replay) appends its call id to the log. A hold blocks forever at that point for SIGKILL.
"""

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from checkpoints import open_checkpointer
from device import LocalDevice
from graphs import agentic_loop
from nodes.bridge import DeviceCall, DeviceResult
from nodes.context import AgentContext
from relaygraph import runner
from tests.support import loop_brain
from tests.support.scripted import ScriptedChatModel


def hold(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--workspace", "--entities", "--log", "--marker"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--thread", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hold-device")
    parser.add_argument("--hold-model", type=int, default=0)
    args = parser.parse_args()
    with args.log.open("a") as log, Path(f"{args.log}.model").open("a") as model_log:
        run(args, log, model_log)


def run(args: argparse.Namespace, log: Any, model_log: Any) -> None:
    """Start or resume the loop; print its outcome as JSON."""

    def append(handle: Any, line: str) -> None:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def brain(messages: list[Any], names: set[str]) -> Any:
        number = loop_brain.step_number(messages)
        append(model_log, str(number or "plan"))
        if number is not None and number == args.hold_model:
            hold(args.marker)
        return loop_brain.answer(messages, names)

    local = LocalDevice(
        [args.workspace],
        args.entities,
        on_call=lambda call, result, replayed: replayed or append(log, call["id"]),
    )

    class Device:
        async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
            for call in calls:
                if args.hold_device and call["args"].get("title") == args.hold_device:
                    await asyncio.to_thread(hold, args.marker)
            return await local.execute(calls)

    async def drive() -> dict[str, Any]:
        model = ScriptedChatModel(script=[brain] * 50)
        context = AgentContext(directory_paths=[str(args.workspace)], data_types=["tasks"])
        async with open_checkpointer(args.state) as saver:
            graph = agentic_loop.build(model).copy(update={"checkpointer": saver})
            if args.resume:
                return await runner.resume(
                    graph, thread_id=args.thread, context=context, device=Device()
                )
            return await runner.start(
                graph,
                thread_id=args.thread,
                context=context,
                device=Device(),
                graph_input={"task": "three tasks"},
            )

    print(json.dumps(asyncio.run(drive())["outcome"]))


if __name__ == "__main__":
    main()
