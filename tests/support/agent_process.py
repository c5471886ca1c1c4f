"""A local-agent run in its own process, for kill-and-resume tests.

    python -m tests.support.agent_process --workspace DIR --entities DB --state URL \
        --log FILE [--hold-device TOOL | --hold-model N] --marker FILE

It runs `relaygraph.local_run.run_local_agent` with the offline extractor and the real
in-process device. With a hold, it writes the marker file and blocks forever at that point
(the test then kills it with SIGKILL): `--hold-device TOOL` before the device executes the
first call of TOOL, `--hold-model N` inside the N-th model call. Every call the device
really executes (not a replay) is appended to the log with its id, flushed and fsynced.
"""

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage

from device import LocalDevice
from llm.offline import OfflineExtractor
from nodes.bridge import DeviceCall, DeviceResult
from relaygraph.local_run import default_context, run_local_agent


def block_forever(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(1)


class HoldingModel(OfflineExtractor):
    """The offline extractor, except that its N-th call never returns."""

    hold_at: int = 0
    marker: str = ""
    count: int = 0

    def respond(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        self.count += 1
        if self.count == self.hold_at:
            block_forever(Path(self.marker))
        return super().respond(messages, tool_names)


class HoldingDevice:
    """The real device; blocks before executing the first call of one tool."""

    def __init__(self, inner: LocalDevice, hold_tool: str | None, marker: Path) -> None:
        self.inner, self.hold_tool, self.marker = inner, hold_tool, marker

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        results: dict[str, DeviceResult] = {}
        for call in calls:
            if call["name"] == self.hold_tool:
                await asyncio.to_thread(block_forever, self.marker)
            results[call["id"]] = await asyncio.to_thread(self.inner.execute_one, call)
        return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--entities", type=Path, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--marker", type=Path, required=True)
    parser.add_argument("--hold-device")
    parser.add_argument("--hold-model", type=int, default=0)
    args = parser.parse_args()

    log = args.log.open("a")

    def record(call: DeviceCall, result: DeviceResult, replayed: bool) -> None:
        if not replayed:
            log.write(f"{call['id']}\n")
            log.flush()
            os.fsync(log.fileno())

    local = LocalDevice([args.workspace], args.entities, on_call=record)
    device = HoldingDevice(local, args.hold_device, args.marker)
    model = HoldingModel(hold_at=args.hold_model, marker=str(args.marker))
    context = default_context(
        args.workspace, ["tasks", "projects", "notes", "timelines"], [".md", ".txt"]
    )
    outcome = asyncio.run(
        run_local_agent(context=context, state_url=args.state, model=model, device=device)
    )
    print(json.dumps({"resumed": outcome.resumed, "report": outcome.report}))


if __name__ == "__main__":
    main()
