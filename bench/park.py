"""Parking a run on a batch of device calls, and handing the batch to its device, at 1,000,
10,000 and 50,000 calls.

Three things are timed, each as the server does it, on a fresh database per size:

- `park`: a step's end with a new batch. The thread's lock is taken (`ThreadLocks.take`), then
  `server.storage.bridge.park` builds the statements and `Lease.release` runs them as it lets
  the lock go (on Postgres in one pipeline with the unlock), as `RunManager._store_park` does.
- `park after resume`: the next batch of the same size, parked by the step that consumed the
  first (`resumed`: the first batch's calls are closed and their answers dropped in the same
  transaction).
- `redeliver`: what `device_hello` does in the database for a device that missed the batch:
  `bridge.for_device`, then `bridge.mark_pushed` of every call sent.

The ratio is each size's median time per call over the median time per call at the smallest
size, measured in the same process: 1.00x means the cost grows linearly with the batch.

    .venv/bin/python -m bench.park [--sizes 1000 10000 50000] [--repeats 3]
                                   [--backends sqlite postgres]

Postgres: `DATABASE_URL` if set, else a throwaway cluster (harness.postgres). It prints a
Markdown block for docs/benchmarks.md ("Storing answers").
"""

import argparse
import asyncio
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.common import databases, preamble
from checkpoints import Database, open_database
from harness.records import agentic_run
from server.locks import ThreadLocks
from server.records import Run
from server.storage import accounts, bridge, runs

USER, DEVICE = "bench", "bench-device"
STEPS = ("park", "park after resume", "redeliver")


@dataclass(frozen=True)
class Measurement:
    backend: str
    step: str
    size: int
    samples: list[float]  # seconds, one per run
    refused: str | None = None  # the database's error, if it refused the step

    @property
    def per_call_us(self) -> float:
        return statistics.median(self.samples) / self.size * 1e6


def batch(run: Run, interrupt: str, size: int) -> list[tuple[str, str, str, Any]]:
    """`size` create calls, as a chunk's interrupt carries them (interrupt id, call id, name,
    args); call ids are as long as the bridge's (run key / scope / tool-call id)."""
    return [
        (
            interrupt,
            f"{run.run_id}/processing:{interrupt}/call_{n:06d}",
            "create_task",
            {"title": f"Task {n} of {interrupt}", "project_id": "p-1", "notes": "from a file"},
        )
        for n in range(size)
    ]


async def park(db: Database, locks: ThreadLocks, run: Run, calls: Any, *, resumed: bool) -> float:
    """Seconds to park the run on `calls` as a step's end does; raises if not parked."""
    lease = await locks.take(run.thread_id)
    started = time.perf_counter()
    query = bridge.park(
        db.kind, run=run, calls=calls, device_id=DEVICE, pushed=False, resumed=resumed
    )
    results = await lease.release(*query.statements)
    elapsed = time.perf_counter() - started
    assert query.read(results), "the run was not parked"
    return elapsed


async def redeliver(db: Database, size: int) -> float:
    """Seconds to read the device's pending calls and mark them pushed, as its hello does."""
    started = time.perf_counter()
    pending = await bridge.for_device(db, user_id=USER, device_id=DEVICE)
    await bridge.mark_pushed(db, [call.call_id for call in pending])
    elapsed = time.perf_counter() - started
    assert len(pending) == size, (len(pending), size)
    return elapsed


async def measure(url: str, size: int) -> dict[str, float | str]:
    """On a fresh database: each step's seconds for a batch of `size`, or the error text of
    the database that refused it (the steps after it are not run)."""
    timed: dict[str, float | str] = {}
    async with open_database(url) as db:
        locks = ThreadLocks(db)
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        run = await agentic_run(db, user_id=USER, device_id=DEVICE)
        assert await runs.start(db, run)
        try:
            timed["park"] = await park(db, locks, run, batch(run, "i1", size), resumed=False)
            second = batch(run, "i2", size)
            timed["park after resume"] = await park(db, locks, run, second, resumed=True)
            timed["redeliver"] = await redeliver(db, size)
        except (psycopg.Error, sqlite3.Error) as exc:
            timed[STEPS[len(timed)]] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return timed


def table(results: Sequence[Measurement]) -> str:
    smallest = min(r.size for r in results)
    lines = [
        f"| backend | step | calls | s (median) | µs per call | ratio per call to {smallest:,} |",
        "|---|---|--:|--:|--:|--:|",
    ]
    base = {(r.backend, r.step): r for r in results if r.size == smallest and not r.refused}
    for r in results:
        if r.refused:
            lines.append(f"| {r.backend} | {r.step} | {r.size:,} | refused: {r.refused} | | |")
            continue
        first = base.get((r.backend, r.step))
        ratio = f"{r.per_call_us / first.per_call_us:.2f}x" if first else ""
        median = statistics.median(r.samples)
        lines.append(
            f"| {r.backend} | {r.step} | {r.size:,} | {median:.3f} | {r.per_call_us:.1f} "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def report(results: Sequence[Measurement], args: argparse.Namespace) -> str:
    runs = f"{args.repeats} per size, each on a fresh database, sizes interleaved"
    return "\n".join([*preamble("bench.park", args.argv, runs), "", table(results)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.park",
        description="Time parking a run on a batch of device calls at several batch sizes.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=3, help="runs per size")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


async def run(args: argparse.Namespace, urls: dict[str, Callable[[], str]]) -> str:
    pooled: dict[tuple[str, str, int], list[float]] = {}
    refused: dict[tuple[str, str, int], str] = {}
    for backend in args.backends:
        for _ in range(args.repeats):
            for size in args.sizes:  # sizes interleaved: the machine's load is shared
                for step, value in (await measure(urls[backend](), size)).items():
                    key = (backend, step, size)
                    if isinstance(value, str):
                        refused[key] = value
                    else:
                        pooled.setdefault(key, []).append(value)
                    print(f"{backend} {step} {size}: {value}", flush=True)
    keys = sorted(
        {*pooled, *refused},
        key=lambda k: (args.backends.index(k[0]), STEPS.index(k[1]), k[2]),
    )
    results = [Measurement(*k, pooled.get(k, []), refused.get(k)) for k in keys]
    block = report(results, args)
    print(f"\n{block}")
    return block


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with databases(args.backends) as urls:
        asyncio.run(run(args, urls))


if __name__ == "__main__":
    main()
