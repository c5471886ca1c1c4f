"""Local-agent nodes around the subgraphs: start the run, fan out the groups, finalize."""

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.types import Overwrite, Send

from nodes.state import (
    GroupOutcome,
    LocalAgentInput,
    LocalAgentState,
    ProcessingInput,
    RunReport,
    RunStatus,
)


def begin(state: LocalAgentInput) -> dict[str, Any]:
    """Pin the run's key (the prefix of its device call ids) and its start time."""
    return {
        "run_key": uuid.uuid4().hex[:12],
        "started_at": datetime.now(UTC).isoformat(),
        "modified_since": state.get("modified_since"),
        # a new run on the same thread starts with no outcomes, groups or triage error
        "outcomes": Overwrite([]),
        "groups": [],
        "triage_error": None,
    }


def route_groups(state: LocalAgentState) -> list[Send] | Literal["finalize"]:
    """One `Send` to `processing` per group; nothing to process goes straight to finalize."""
    groups = state.get("groups") or []
    if state.get("triage_error") or not groups:
        return "finalize"
    return [
        Send(
            "processing",
            ProcessingInput(
                run_key=state["run_key"],
                group_index=index,
                group=group,
                projects=state.get("projects", []),
            ),
        )
        for index, group in enumerate(groups)
    ]


def finalize(state: LocalAgentState) -> LocalAgentState:
    """The run's report; the watermark moves to the start time only on success or partial."""
    outcomes = sorted(state.get("outcomes", []), key=lambda o: o["key"])
    triage_error = state.get("triage_error")
    errors = [triage_error] if triage_error else []
    errors += [e for o in outcomes for e in o["errors"]]
    status = _status(state, outcomes)
    return {
        "report": RunReport(
            status=status,
            files_scanned=len(state.get("manifest", [])),
            files_processed=sum(o["files_read"] for o in outcomes),
            created=_total(o["created"] for o in outcomes),
            updated=_total(o["updated"] for o in outcomes),
            errors=errors,
            watermark=(state["started_at"] if status != "error" else state.get("modified_since")),
            groups=outcomes,
        )
    }


def _status(state: LocalAgentState, outcomes: list[GroupOutcome]) -> RunStatus:
    if state.get("triage_error"):
        return "error"
    failed = [o for o in outcomes if o["errors"]]
    if not failed:
        return "success"
    worked = any(o["files_read"] or o["created"] or o["updated"] for o in outcomes)
    return "partial" if worked else "error"


def _total(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total
