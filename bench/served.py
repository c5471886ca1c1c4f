"""The local agent's first run over a generated tree (bench.trees) through real processes:
`relaygraph serve` and `relaygraph device`, driven with the official LangGraph SDK, on
SQLite and Postgres, as a user runs it. The offline extractor is the model.

Per size and backend, on a fresh server database and device: the run's status and report,
wall seconds, the device calls the device ran (its `call_results` table), and the server
process's CPU seconds over the run (from `/proc`), so the server's CPU per device call; the
ratio is that against the smallest size on the same backend: 1.00x means the server's cost
per call does not grow with the folder.

    .venv/bin/python -m bench.served [--sizes 1000 10000] [--backends sqlite postgres]
                                     [--write-docs]
"""

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph_sdk import get_client

from bench.common import databases, preamble, write_block
from bench.trees import generate
from harness.processes import DeviceProcess, ServerProcess

USER, DEVICE = "bench", "bench-device"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Local agent through the server"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Served:
    backend: str
    size: int
    status: str
    files_scanned: int
    files_processed: int
    created: int
    device_calls: int
    wall_s: float
    server_cpu_s: float

    @property
    def cpu_ms_per_call(self) -> float:
        return self.server_cpu_s / max(self.device_calls, 1) * 1e3


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def device_calls(entities: Path) -> int:
    with sqlite3.connect(f"file:{entities}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM call_results").fetchone()[0])


async def first_run(server: ServerProcess, key: str, root: Path) -> dict[str, Any]:
    client = get_client(url=server.url, api_key=key, timeout=3600)
    context: dict[str, Any] = {"directory_paths": [str(root)], "device_id": DEVICE}
    assistant = await client.assistants.create(graph_id="local_agent", context=context)
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], assistant["assistant_id"], input={})
    values = await client.runs.join(thread["thread_id"], run["run_id"])
    assert isinstance(values, dict), values
    return values


def measure(backend: str, url: str, size: int) -> Served:
    with tempfile.TemporaryDirectory(prefix="bench-served-") as work:
        workdir = Path(work)
        root = workdir / "tree"
        generate(root, files=size, seed=size)
        server = ServerProcess(database_url=url, workdir=workdir).start()
        device: DeviceProcess | None = None
        try:
            key = server.api_key(USER)
            token = server.device_token(USER, DEVICE)
            entities = workdir / "entities.db"
            device = DeviceProcess(
                server=server.url, token=token, root=root, db=entities, workdir=workdir
            ).start()
            assert server.process is not None
            cpu_before, started = cpu_seconds(server.process.pid), time.perf_counter()
            values = asyncio.run(first_run(server, key, root))
            wall = time.perf_counter() - started
            cpu = cpu_seconds(server.process.pid) - cpu_before
            report = values.get("report") or {}
            if not report:
                raise AssertionError(f"no report: {values}\n{server.log()[-4000:]}")
            return Served(
                backend=backend,
                size=size,
                status=str(report["status"]),
                files_scanned=int(report["files_scanned"]),
                files_processed=int(report["files_processed"]),
                created=sum(report["created"].values()),
                device_calls=device_calls(entities),
                wall_s=wall,
                server_cpu_s=cpu,
            )
        finally:
            if device is not None:
                device.stop()
            server.stop()


def table(results: Sequence[Served]) -> str:
    lines = [
        "| backend | files | status | scanned / processed | created | device calls | wall s "
        "| server CPU s | server CPU ms per call | ratio per call |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    smallest = {r.backend: r for r in sorted(results, key=lambda r: -r.size)}
    for r in results:
        ratio = r.cpu_ms_per_call / smallest[r.backend].cpu_ms_per_call
        lines.append(
            f"| {r.backend} | {r.size:,} | {r.status} | {r.files_scanned:,} / "
            f"{r.files_processed:,} | {r.created:,} | {r.device_calls:,} | {r.wall_s:.1f} "
            f"| {r.server_cpu_s:.1f} | {r.cpu_ms_per_call:.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.served", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    results: list[Served] = []
    with databases(args.backends) as urls:
        for backend in args.backends:
            for size in args.sizes:
                result = measure(backend, urls[backend](), size)
                print(result, flush=True)
                results.append(result)
    runs = "one first run per size and backend, each on a fresh database and device"
    given = list(argv) if argv is not None else sys.argv[1:]
    block = "\n".join([*preamble("bench.served", given, runs), "", table(results)])
    print(f"\n{block}")
    if args.write_docs:
        write_block(DOCS, SECTION, "bench.served", block)


if __name__ == "__main__":
    main()
