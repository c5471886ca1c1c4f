"""The local agent in process over generated trees (bench.trees): what a run costs as the
folder grows, and how each cost grows.

For each size (100, 1,000, 10,000 files by default) and model (the offline extractor, and
`ChatOpenAI` against the fake OpenAI server with a 128k-token window), in a process of its
own (so peak RSS is that run's): a first run, an unchanged re-run, and a re-run after one
file changed. Per run: model requests, the largest and the total prompt tokens (counted as
the API counts them, `harness.fake_openai.prompt_tokens`), requests refused, device
calls and round trips, wall and CPU seconds, checkpoint bytes written, entity database bytes.
Then the fitted growth of each (the slope of log cost over log size between the smallest and
the largest size: 1 is linear).

    .venv/bin/python -m bench.local_agent [--sizes 100 1000 10000] [--models offline openai]
                                          [--write-docs]
"""

import argparse
import asyncio
import json
import math
import resource
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_openai.chat_models.base import _convert_message_to_dict

from bench.common import write_block
from bench.trees import generate
from device import LocalDevice
from harness.fake_openai import FakeOpenAI, prompt_tokens
from llm import load_chat_model
from nodes.bridge import DeviceCall, DeviceResult
from relaygraph.local_run import default_context, run_local_agent
from tools.catalog import DATA_TYPES

WINDOW = 128_000  # the fake model's context window
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Local agent over generated trees"


@dataclass
class RunCost:
    """What one run of the agent cost."""

    run: str
    status: str
    files_scanned: int
    files_processed: int
    chunks: int
    model_requests: int
    largest_prompt: int
    total_prompt: int
    refused: int
    device_calls: int
    round_trips: int
    wall_s: float
    cpu_s: float
    checkpoint_bytes: int
    entity_bytes: int


class CountingDevice:
    """The in-process device, counting calls and round trips."""

    def __init__(self, inner: LocalDevice) -> None:
        self.inner, self.calls, self.round_trips = inner, 0, 0

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        self.calls += len(calls)
        self.round_trips += 1
        return await self.inner.execute(calls)


class PromptCounter(BaseCallbackHandler):
    """Every chat-model request's prompt tokens, counted as the API counts them."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        tools = (kwargs.get("invocation_params") or {}).get("tools")
        for request in messages:
            body = {"messages": [_convert_message_to_dict(m) for m in request], "tools": tools}
            self.tokens.append(prompt_tokens(body))


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _checkpoint_bytes(state: Path) -> int:
    """Bytes of every checkpoint and pending write stored (not the file: SQLite reuses pages)."""
    if not state.exists():
        return 0
    with sqlite3.connect(state) as db:
        stored = db.execute(
            "SELECT (SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) "
            "FROM checkpoints) + (SELECT coalesce(sum(length(value)), 0) FROM writes)"
        ).fetchone()
    return int(stored[0])


async def _measure(size: int, model_name: str, seed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-local-"))
    tree = work / "tree"
    stats = generate(tree, size, seed)
    state, entities = work / "state.db", work / "entities.db"
    counter = PromptCounter()
    fake = FakeOpenAI(max_prompt_tokens=WINDOW).start() if model_name == "openai" else None
    env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x"} if fake else {}
    model = load_chat_model(env=env).model
    model.callbacks = [counter]
    device = LocalDevice([tree], entities)
    costs: list[RunCost] = []
    try:
        for run in ("first", "unchanged", "one file changed"):
            if run == "one file changed":
                changed = sorted(tree.rglob("*.md"))[len(costs) * 7 % 50]
                changed.write_text(changed.read_text() + "\n- [ ] Call the accountant back\n")
            counting = CountingDevice(device)
            before_tokens, before_state = len(counter.tokens), _checkpoint_bytes(state)
            refused_before = fake.refused if fake else 0
            started, cpu = time.perf_counter(), time.process_time()
            outcome = await run_local_agent(
                context=default_context(tree, DATA_TYPES, [".md", ".txt"]),
                state_url=str(state),
                model=model,
                device=counting,
            )
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            tokens = counter.tokens[before_tokens:]
            report = outcome.report
            costs.append(
                RunCost(
                    run=run,
                    status=report["status"],
                    files_scanned=report["files_scanned"],
                    files_processed=report["files_processed"],
                    chunks=report["chunks"],
                    model_requests=len(tokens),
                    largest_prompt=max(tokens, default=0),
                    total_prompt=sum(tokens),
                    refused=(fake.refused if fake else 0) - refused_before,
                    device_calls=counting.calls,
                    round_trips=counting.round_trips,
                    wall_s=round(wall, 2),
                    cpu_s=round(cpu, 2),
                    checkpoint_bytes=_checkpoint_bytes(state) - before_state,
                    entity_bytes=_bytes(entities),
                )
            )
    finally:
        device.close()
        if fake is not None:
            fake.stop()
    return {
        "size": size,
        "model": model_name,
        "text_bytes": stats.text_bytes,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runs": [asdict(c) for c in costs],
    }


def _in_process(size: int, model: str, seed: int) -> dict[str, Any]:
    """One size and model in a process of its own, for its own peak RSS."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.local_agent", "--one", str(size), model, str(seed)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


COLUMNS = [
    ("files", lambda r, c: f"{r['size']:,}"),
    ("model", lambda r, c: r["model"]),
    ("run", lambda r, c: c["run"]),
    ("status", lambda r, c: c["status"]),
    ("scanned / processed", lambda r, c: f"{c['files_scanned']:,} / {c['files_processed']:,}"),
    ("chunks", lambda r, c: f"{c['chunks']:,}"),
    ("model requests", lambda r, c: f"{c['model_requests']:,}"),
    ("largest prompt", lambda r, c: f"{c['largest_prompt']:,}"),
    ("total prompt", lambda r, c: f"{c['total_prompt']:,}"),
    ("refused", lambda r, c: str(c["refused"])),
    ("device calls / round trips", lambda r, c: f"{c['device_calls']:,} / {c['round_trips']}"),
    ("wall / CPU s", lambda r, c: f"{c['wall_s']} / {c['cpu_s']}"),
    ("checkpoint MB (× text)", lambda r, c: _checkpoint_cell(r, c)),
    ("entity DB MB", lambda r, c: f"{c['entity_bytes'] / 1e6:.2f}"),
    ("peak RSS MiB", lambda r, c: str(r["peak_rss_mib"]) if c["run"] == "first" else ""),
]
GROWN = ["model_requests", "total_prompt", "device_calls", "wall_s", "cpu_s", "checkpoint_bytes"]


def _checkpoint_cell(result: dict[str, Any], cost: dict[str, Any]) -> str:
    ratio = cost["checkpoint_bytes"] / result["text_bytes"] if cost["run"] == "first" else None
    return f"{cost['checkpoint_bytes'] / 1e6:.2f}" + (f" ({ratio:.1f}×)" if ratio else "")


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for result in results:
        for cost in result["runs"]:
            lines.append("| " + " | ".join(cell(result, cost) for _, cell in COLUMNS) + " |")
    return "\n".join(lines)


def growth(results: list[dict[str, Any]]) -> str:
    """The slope of log(cost) over log(files) of the first run, smallest to largest size."""
    lines = ["| model | " + " | ".join(GROWN) + " |", "|---|" + "---|" * len(GROWN)]
    for model in dict.fromkeys(r["model"] for r in results):
        rows = sorted((r for r in results if r["model"] == model), key=lambda r: r["size"])
        if len(rows) < 2:
            continue
        low, high = rows[0], rows[-1]
        spread = math.log(high["size"] / low["size"])
        cells = []
        for key in GROWN:
            a, b = low["runs"][0][key], high["runs"][0][key]
            cells.append(f"{math.log(b / a) / spread:.2f}" if a > 0 and b > 0 else "n/a")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--models", nargs="+", default=["offline", "openai"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("SIZE", "MODEL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    given = list(argv) if argv is not None else sys.argv[1:]
    if args.one:
        size, model, seed = args.one
        print(json.dumps(asyncio.run(_measure(int(size), model, int(seed)))))
        return
    results = []
    for model in args.models:
        for size in args.sizes:
            result = _in_process(size, model, args.seed)
            print(json.dumps(result), flush=True)
            results.append(result)
    text = f"{table(results)}\n\nFitted growth of the first run (1 is linear):\n\n{growth(results)}"
    print(text)
    if args.write_docs:
        command = shlex.join([".venv/bin/python", "-m", "bench.local_agent", *given])
        block = f"- Command: `{command}`\n- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n{text}"
        write_block(DOCS, SECTION, "bench.local_agent", block)


if __name__ == "__main__":
    main()
