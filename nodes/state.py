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


class Part(TypedDict):
    """Part `part` of `parts` of one file, planned from its size: characters from `offset`."""

    path: str
    root: str
    part: int
    parts: int
    offset: int
    length: int


class Chunk(TypedDict):
    """Parts of one group's files that fit one model request; `index` is its number in the run."""

    key: str
    index: int
    parts: list[Part]


class PartText(TypedDict):
    """What the model reads of a part: the lines it owns and the context before them."""

    path: str
    root: str
    part: int
    parts: int
    start: int  # characters [start, end) of `total`
    end: int
    total: int
    context: str  # the end of the previous part, for reading only
    content: str


class FileFailure(TypedDict):
    """A file that was not processed this run, and why; it is retried on the next run."""

    path: str
    error: str


class Tally(TypedDict):
    """What one pass over a chunk did, counted from the tool results."""

    created: dict[str, int]
    updated: dict[str, int]
    matched: int  # creates the device answered with an existing record
    refused_calls: int
    errors: list[str]
    summary: str


class ChunkOutcome(TypedDict):
    """What processing one chunk did; a file counts as processed only with every part ok."""

    key: str
    index: int
    files: list[str]
    failed: list[FileFailure]
    created: dict[str, int]
    updated: dict[str, int]
    matched: int
    refused_calls: int
    errors: list[str]
    summary: str
    model_calls: int


class RunReport(TypedDict):
    """The end of a local-agent run: what the caller shows and stores."""

    status: RunStatus
    files_scanned: int
    files_processed: int
    chunks: int
    created: dict[str, int]
    updated: dict[str, int]
    errors: list[str]
    failed_files: list[FileFailure]  # retried next run, changed or not
    retried: list[str]  # files of earlier runs this run retried (they leave the ledger)
    watermark: str | None  # the "modified since" to use next time
    outcomes: list[ChunkOutcome]


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
    """What a caller passes: the watermark of the last successful run, and the files that
    earlier runs could not process (retried whether or not they changed)."""

    modified_since: str | None
    retry_files: list[str]


class ScanPage(TypedDict):
    """Where a paged listing stands: the call's arguments and the cursor of its next page."""

    name: str
    args: dict[str, Any]
    cursor: str | None


class TriageState(TypedDict, total=False):
    """Scan and grouping: the manifest in, the groups out."""

    run_key: str
    modified_since: str | None
    retry_files: list[str]
    scan_round: int
    pending_pages: list[ScanPage]
    manifest: list[FileEntry]
    projects: list[dict[str, Any]]
    groups: list[Group]
    triage_error: str | None
    notices: list[str]  # work cut or left for later, said so in the report


class LocalAgentState(TriageState, total=False):
    """The whole run: triage results, the wave of chunks under way, the report. The plan
    and the chunks' outcomes are in the store (`nodes.run_data`), not here."""

    started_at: str
    files_scanned: int  # the manifest's length: the manifest leaves the state at `plan`
    chunks: int  # planned
    wave_number: int  # the wave under way, of at most `parallel_chunks` chunks
    wave: list[Chunk]  # its chunks
    chunks_done: Annotated[int, operator.add]
    report: RunReport


class LocalAgentOutput(TypedDict):
    """What a finished run returns."""

    report: RunReport


class ProcessingInput(TypedDict):
    """One chunk, sent by the local agent with `Send`."""

    run_key: str
    chunk: Chunk


class ProcessingState(ProcessingInput, total=False):
    """The reads of one chunk, then a tool loop per pass over the texts that fit."""

    # the passes not begun: a pass's texts leave here as its conversation (which holds them)
    # begins
    pending: list[list[PartText]]
    current: int  # the pass under way
    pass_files: list[str]  # the files of the pass under way
    failed: Annotated[list[FileFailure], operator.add]
    pass_failed: bool
    scope: str
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int
    model_calls: Annotated[int, operator.add]
    failure: str | None
    tallies: Annotated[list[Tally], operator.add]
    chunks_done: Annotated[int, operator.add]


class ProcessingOutput(TypedDict):
    """Only a count flows back (the outcome is in the store), so parallel chunks never
    write the same key."""

    chunks_done: Annotated[int, operator.add]


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
    model_calls: Annotated[int, operator.add]
    failure: str | None
    outcome: LoopOutcome


class AgenticOutput(TypedDict):
    """What a finished loop returns."""

    outcome: LoopOutcome
