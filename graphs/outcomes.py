"""What the server reads from a graph's final values: the run's status, counts and error.

The local agent ends with a `report`, the agentic loop with an `outcome`; a graph with
neither (a subgraph run on its own) ends as a success with no counts."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: The graph whose runs carry progress from one to the next: its input takes the folder's
#: watermark (`modified_since`) and the files to retry, its `report` moves them on.
PROGRESS_GRAPH = "local_agent"

Status = Literal["success", "partial", "error"]
#: A report's status as the run's; anything else is an error.
_REPORTED: Mapping[Any, Status] = {"success": "success", "partial": "partial", "error": "error"}
#: The agentic loop's outcome status as the run's; anything else is an error.
_LOOP: Mapping[str, Status] = {"completed": "success", "partial": "partial"}


@dataclass(frozen=True)
class RunOutcome:
    """How a finished run ended, for its run record."""

    status: Status = "success"
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def outcome_of(values: Mapping[str, Any]) -> RunOutcome:
    """The outcome a graph's final values report."""
    report = values.get("report")
    if isinstance(report, Mapping):
        counts = {
            "created": report.get("created", {}),
            "updated": report.get("updated", {}),
            "files_processed": report.get("files_processed", 0),
        }
        errors = report.get("errors") or []
        return RunOutcome(
            _REPORTED.get(report.get("status", "success"), "error"),
            counts,
            "; ".join(errors) or None,
        )
    outcome = values.get("outcome")
    if isinstance(outcome, Mapping):
        counts = {k: outcome.get(k) for k in ("total", "completed", "adapted", "failed")}
        status = _LOOP.get(str(outcome.get("status")), "error")
        return RunOutcome(status, counts, outcome.get("error"))
    return RunOutcome()


def progress_report(graph_id: str, values: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The report whose watermark and retry ledger the next run of this graph starts from."""
    report = values.get("report")
    return report if graph_id == PROGRESS_GRAPH and isinstance(report, Mapping) else None
