"""State types of the local agent and its `triage` and `processing` subgraphs."""

import operator
from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

STANDALONE = "standalone"

RunStatus = Literal["success", "partial", "error"]


class FileEntry(TypedDict):
    """One file of the scan manifest."""

    path: str
    root: str
    size: int
    modified: str


class Group(TypedDict):
    """Files the model put together: an existing project's id, or `standalone`."""

    key: str
    files: list[str]


class GroupOutcome(TypedDict):
    """What processing one group did, counted from the tool results."""

    key: str
    files_read: int
    created: dict[str, int]
    updated: dict[str, int]
    refused_calls: int
    errors: list[str]
    summary: str


class RunReport(TypedDict):
    """The end of a local-agent run: what the caller shows and stores."""

    status: RunStatus
    files_scanned: int
    files_processed: int
    created: dict[str, int]
    updated: dict[str, int]
    errors: list[str]
    watermark: str | None  # the "modified since" to use next time
    groups: list[GroupOutcome]


# ── Structured answers ─────────────────────────────────────────────────────────


class FileGroup(BaseModel):
    """Files that belong together."""

    project_id: str = Field(
        description='The id of the existing project these files belong to, or "standalone".'
    )
    files: list[str] = Field(description="Paths exactly as they appear in the manifest.")


class TriageAnswer(BaseModel):
    """The manifest's files grouped by the existing project they belong to."""

    groups: list[FileGroup] = Field(description="Every manifest file in exactly one group.")


# ── Graph states ──────────────────────────────────────────────────────────────


class LocalAgentInput(TypedDict, total=False):
    """What a caller passes: the watermark of the last successful run, if any."""

    modified_since: str | None


class TriageState(TypedDict, total=False):
    """Scan and grouping: the manifest in, the groups out."""

    run_key: str
    modified_since: str | None
    manifest: list[FileEntry]
    projects: list[dict[str, Any]]
    groups: list[Group]
    triage_error: str | None


class LocalAgentState(TriageState, total=False):
    """The whole run: triage results, one outcome per processed group, the report."""

    started_at: str
    outcomes: Annotated[list[GroupOutcome], operator.add]
    report: RunReport


class LocalAgentOutput(TypedDict):
    """What a finished run returns."""

    report: RunReport


class ProcessingInput(TypedDict):
    """One group, sent by the local agent with `Send`."""

    run_key: str
    group_index: int
    group: Group
    projects: list[dict[str, Any]]


class ProcessingState(ProcessingInput, total=False):
    """The tool loop over one group."""

    scope: str
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int
    files_read: int
    errors: Annotated[list[str], operator.add]
    outcomes: Annotated[list[GroupOutcome], operator.add]


class ProcessingOutput(TypedDict):
    """Only the outcome flows back, so parallel groups never write the same key."""

    outcomes: Annotated[list[GroupOutcome], operator.add]
