"""Storing one device answer, with 100, 1,000 and 10,000 calls of its run open.

What is timed is what the server does with one `tool_result` before anything else: the
statements that store the answer and say whether it was the run's last missing one
(`server.storage.bridge.store_answer`: SQLite, and Postgres when no run slot is free), and on
Postgres also the pipeline a free slot uses (`ThreadLocks.try_take` over the bridge's
`store_answer_and_try_lock` and `claim_after_answer`: store, try the thread's lock, claim the
run if its answers are all in). Each measurement parks
a run on `size` calls, on a fresh database, then stores answers one after another, never the
last one (the run does not resume; nothing else runs). The first answers of each run are not
timed. Each size's median is compared with the median at 100 open calls, measured in the same
process, so the ratio says how the cost grows with the run's open calls (1.0: not at all).

    .venv/bin/python -m bench.answers [--sizes 100 1000 10000] [--answers 80] [--repeats 3]
                                      [--backends sqlite postgres]

Postgres: `DATABASE_URL` if set (the tables of every measurement go to it), else a throwaway
cluster (harness.postgres) that is stopped at the end. It prints a Markdown block for
docs/benchmarks.md ("Storing answers").
"""

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.common import databases, preamble
from checkpoints import Database, open_database
from harness.records import agentic_run, parked
from server.locks import ThreadLocks
from server.storage import accounts, bridge
from server.storage.bridge import DeviceAnswer

USER, DEVICE = "bench", "bench-device"
#: Calls parked per statement list: a Postgres statement takes at most 65,535 parameters, and
#: one park of N calls binds 11 per call, so larger batches are parked in parts (not timed).
PARK_PART = 2_000
WARMUP = 9

Store = Callable[[str], Awaitable[object]]


@dataclass(frozen=True)
class Measurement:
    backend: str
    path: str
    size: int
    samples: list[float]  # seconds per answer

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000


async def park_on(db: Database, size: int) -> list[str]:
    """A new run parked on `size` open calls (in parts of `PARK_PART`); their ids."""
    run = await agentic_run(db, user_id=USER, device_id=DEVICE)
    calls = [f"{run.run_id}/call-{n:05d}" for n in range(size)]
    for start in range(0, size, PARK_PART):
        part = calls[start : start + PARK_PART]
        assert await parked(
            db,
            run=run,
            calls=[("i1", c, "create_task", {"title": c}) for c in part],
            device_id=DEVICE,
        )
    return calls


def answer_to(call_id: str) -> DeviceAnswer:
    return DeviceAnswer(USER, DEVICE, call_id, True, {"id": call_id})


def stores(db: Database) -> dict[str, Store]:
    """The ways a server stores an answer on this backend, by name."""

    async def stored(call_id: str) -> object:
        return await bridge.store_answer(db, answer_to(call_id))

    if db.kind != "postgres":
        return {"store_answer": stored}
    locks = ThreadLocks(db)

    async def pipelined(call_id: str) -> object:
        answer = answer_to(call_id)
        claim = bridge.claim_after_answer(answer, marks=False)
        lease, rows = await locks.try_take(
            bridge.store_answer_and_try_lock(answer), *claim.statements
        )
        if lease is not None:
            await lease.release()
        return rows

    return {"store_answer": stored, "pipelined": pipelined}


async def measure(url: str, size: int, *, answers: int) -> list[Measurement]:
    """On a fresh database: for each way of storing, a run parked on `size` calls and the
    time of each of its `answers` timed answers."""
    async with open_database(url) as db:
        await accounts.add_device(db, user_id=USER, device_id=DEVICE)
        measured = []
        for path, store in stores(db).items():
            calls = await park_on(db, size)
            samples = []
            for n, call_id in enumerate(calls[: WARMUP + answers]):
                started = time.perf_counter()
                await store(call_id)
                if n >= WARMUP:
                    samples.append(time.perf_counter() - started)
            measured.append(Measurement(db.kind, path, size, samples))
        return measured


def table(results: Sequence[Measurement]) -> str:
    """backend | path | open calls | ms per answer | ratio to the smallest size."""
    lines = [
        "| backend | how | open calls | ms per answer (median) | ratio to 100 |",
        "|---|---|--:|--:|--:|",
    ]
    smallest = min(r.size for r in results)
    base = {(r.backend, r.path): r.median_ms for r in results if r.size == smallest}
    for r in results:
        ratio = r.median_ms / base[(r.backend, r.path)]
        lines.append(f"| {r.backend} | {r.path} | {r.size:,} | {r.median_ms:.3f} | {ratio:.2f}x |")
    return "\n".join(lines)


def report(results: Sequence[Measurement], args: argparse.Namespace) -> str:
    runs = (
        f"{args.answers} answers timed per run after {WARMUP} untimed, {args.repeats} runs per "
        "size and way, each on a fresh database"
    )
    return "\n".join([*preamble("bench.answers", args.argv, runs), "", table(results)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.answers",
        description="Time storing one device answer at several numbers of open calls.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--answers", type=int, default=80, help="timed answers per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size and way")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    args = parser.parse_args(argv)
    if WARMUP + args.answers >= min(args.sizes):
        parser.error("--answers must leave the last call of the smallest size unanswered")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


async def run(args: argparse.Namespace, urls: dict[str, Callable[[], str]]) -> str:
    pooled: dict[tuple[str, str, int], list[float]] = {}
    for backend in args.backends:
        for _ in range(args.repeats):
            for size in args.sizes:  # sizes interleaved: the machine's load is shared
                for m in await measure(urls[backend](), size, answers=args.answers):
                    pooled.setdefault((m.backend, m.path, m.size), []).extend(m.samples)
                    print(f"{m.backend} {m.path} {m.size}: {m.median_ms:.3f} ms", flush=True)
    results = [Measurement(b, p, s, samples) for (b, p, s), samples in pooled.items()]
    results.sort(key=lambda r: (args.backends.index(r.backend), r.path, r.size))
    block = report(results, args)
    print(f"\n{block}")
    return block


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with databases(args.backends) as urls:
        asyncio.run(run(args, urls))


if __name__ == "__main__":
    main()
