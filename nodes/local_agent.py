"""Local-agent nodes around the subgraphs: start the run, plan the chunks, fan them out in
waves, finalize the report with each file's outcome."""

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send

from nodes.chunks import PLANNING_CHARS_PER_TOKEN, files_budget, plan_chunks
from nodes.context import AgentContext
from nodes.run_data import forget_earlier_runs, get_outcomes, get_wave, put_waves, store_of
from nodes.state import (
    ChunkOutcome,
    FileFailure,
    LocalAgentInput,
    LocalAgentState,
    ProcessingInput,
    RunReport,
    RunStatus,
)


async def begin(state: LocalAgentInput, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Pin the run's key (the prefix of its device call ids) and its start time, and delete
    what the thread's earlier runs left in the store."""
    await forget_earlier_runs(store_of(runtime))
    return {
        "run_key": uuid.uuid4().hex[:12],
        "started_at": datetime.now(UTC).isoformat(),
        "modified_since": state.get("modified_since"),
        "retry_files": list(state.get("retry_files") or []),
        # a new run on the same thread starts with no chunks or triage error
        "groups": [],
        "files_scanned": 0,
        "chunks": 0,
        "wave_number": 0,
        "wave": [],
        "chunks_done": Overwrite(0),
        "scan_round": 0,
        "pending_pages": [],
        "notices": [],
        "triage_error": None,
    }


async def plan(state: LocalAgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Cut the groups into chunks that each fit one model request (from file sizes), put
    them in the store in waves of `parallel_chunks`, and say how many on the custom stream
    (`chunks_planned`). The manifest, the groups and the projects leave the state here, and
    the plan never enters it: a checkpoint (every device round trip writes one; on SQLite,
    whole) holds the wave under way, not the folder."""
    scanned = len(state.get("manifest") or [])
    dropped = {"manifest": [], "groups": [], "projects": [], "files_scanned": scanned}
    if state.get("triage_error"):
        return {**dropped, "wave": []}
    context = runtime.context
    budget = files_budget(context.max_prompt_tokens, context.data_types)
    part_chars = max(1_000, budget * PLANNING_CHARS_PER_TOKEN)
    groups = state.get("groups") or []
    chunks = plan_chunks(groups, state.get("manifest", []), part_chars=part_chars)
    size = max(1, context.parallel_chunks)
    waves = [chunks[start : start + size] for start in range(0, len(chunks), size)]
    await put_waves(store_of(runtime), state["run_key"], waves)
    files = sum(len(g["files"]) for g in groups)
    planned = {"chunks": len(chunks), "files": files}
    get_stream_writer()({"event": "chunks_planned", "data": planned})
    first = waves[0] if waves else []
    return {**dropped, "chunks": len(chunks), "wave": first}


async def next_wave(state: LocalAgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The chunks of the next wave, read from the store (none after the last)."""
    number = state.get("wave_number", 0) + 1
    wave = await get_wave(store_of(runtime), state["run_key"], number)
    return {"wave_number": number, "wave": wave}


def route_chunks(state: LocalAgentState) -> list[Send] | Literal["finalize"]:
    """One `Send` to `processing` per chunk of the wave: at most `parallel_chunks` at once,
    so a device batch and the model requests in flight stay bounded however large the
    folder; no chunk left goes to finalize."""
    wave = state.get("wave") or []
    if not wave:
        return "finalize"
    return [
        Send("processing", ProcessingInput(run_key=state["run_key"], chunk=chunk)) for chunk in wave
    ]


async def finalize(state: LocalAgentState, runtime: Runtime[AgentContext]) -> LocalAgentState:
    """The run's report, from the chunks' outcomes in the store. A file is processed only
    when every chunk holding a part of it succeeded; the others are listed as failed and
    retried next run. The watermark moves to the start time unless the run failed as a
    whole."""
    store, chunks = store_of(runtime), state.get("chunks", 0)
    outcomes = await get_outcomes(store, state["run_key"], chunks) if chunks else []
    failures = _failures(outcomes)
    touched = {path for outcome in outcomes for path in outcome["files"]}
    processed = touched - set(failures)
    triage_error = state.get("triage_error")
    errors = [triage_error] if triage_error else []
    errors += [e for o in outcomes for e in o["errors"]]
    wrote = any(o["created"] or o["updated"] for o in outcomes)
    status = _status(triage_error, bool(processed) or wrote, failures)
    return {
        "report": RunReport(
            status=status,
            files_scanned=state.get("files_scanned", 0),
            files_processed=len(processed),
            chunks=len(outcomes),
            created=_total(o["created"] for o in outcomes),
            updated=_total(o["updated"] for o in outcomes),
            errors=[*errors, *state.get("notices", [])],
            failed_files=[FileFailure(path=p, error=e) for p, e in sorted(failures.items())],
            retried=list(state.get("retry_files") or []),
            watermark=(state["started_at"] if status != "error" else state.get("modified_since")),
            outcomes=outcomes,
        )
    }


def _failures(outcomes: list[ChunkOutcome]) -> dict[str, str]:
    failures: dict[str, str] = {}
    for outcome in outcomes:
        for failure in outcome["failed"]:
            failures.setdefault(failure["path"], failure["error"])
    return failures


def _status(triage_error: str | None, worked: bool, failures: dict[str, str]) -> RunStatus:
    if triage_error:
        return "error"
    if not failures:
        return "success"
    return "partial" if worked else "error"


def _total(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total
