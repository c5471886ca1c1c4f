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


# ── Agentic loop ──────────────────────────────────────────────────────────────

DEFAULT_MAX_STEPS = 10
StepStatus = Literal["completed", "adapted", "failed"]
LoopStatus = Literal["completed", "partial", "failed"]


class Plan(BaseModel):
    """The task broken into steps, in the order to carry them out."""

    steps: list[str] = Field(description="Each step one concrete instruction.")


class StepVerdict(BaseModel):
    """How the step went: call this once the step is done or cannot be done."""

    success: bool = Field(description="Whether the step reached its goal.")
    result: str = Field(description="What was done, in a sentence or two.")
    error: str = Field(default="", description="Why it failed, when it did.")


class StepRecord(TypedDict):
    """One finished step of the plan."""

    number: int
    description: str
    status: StepStatus
    result: str
    error: str | None
    duration_ms: int


class LoopOutcome(TypedDict):
    """The end of an agentic loop run."""

    status: LoopStatus
    summary: str
    total: int
    completed: int
    adapted: int
    failed: int
    truncated: bool
    error: str | None
    steps: list[StepRecord]
    duration_ms: int


class AgenticInput(TypedDict, total=False):
    """A task and how many steps it may take (default 10)."""

    task: str
    max_steps: int


class AgenticState(AgenticInput, total=False):
    """Plan, progress through it, and the tool loop of the step under way."""

    run_key: str
    started_at: str
    plan: list[str]
    truncated: bool
    plan_error: str | None
    current: int  # index of the step under way
    steps: Annotated[list[StepRecord], operator.add]
    attempt: Literal["execute", "adapt"]
    step_started: str
    step_error: str | None  # why the first attempt failed, while it is being adapted
    scope: str
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int
    failure: str | None
    outcome: LoopOutcome


class AgenticOutput(TypedDict):
    """What a finished loop returns."""

    outcome: LoopOutcome
