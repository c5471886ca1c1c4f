"""Argument schemas of the device tools, with the names and fields the Electron client knows.

Field names are the client's (camelCase ids). Flags the server owns (`isAiSuggested`,
`isApproved`, a comment's `author`) are not in the model-facing schemas: the bridge adds
them (`tools.catalog.DeviceTool.device_args`), so a model cannot forget or forge them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TaskState = Literal["ToDo", "In Progress", "Completed"]
RecordType = Literal["tasks", "notes", "timelines", "projects"]

#: Page sizes: no device result nears the protocol's frame limit (4 MiB), at any data size.
SCAN_PAGE = 2_000
LIST_PAGE = 100
MAX_LIST_PAGE = 500
MAX_FIND_PAGE = 200


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Paged(_Args):
    """A page of a listing: pass the previous result's `next_cursor` to get the next one."""

    cursor: str | None = Field(
        default=None, description="The `next_cursor` of the previous page; omit for the first."
    )
    limit: int = Field(default=LIST_PAGE, ge=1, le=MAX_LIST_PAGE, description="Items per page.")


# ── File system ────────────────────────────────────────────────────────────────


class ListDirectory(_Paged):
    """List the entries of one folder on the device (not recursive), a page at a time."""

    path: str = Field(description="Absolute path of a folder inside the agent's directories.")


class GetFileMetadata(_Args):
    """Size, creation and modification time of one file."""

    path: str = Field(description="Absolute path of a file inside the agent's directories.")


class ReadFileContent(_Args):
    """Read part of a text file: `max_chars` characters from `offset`. The result says the
    file's `total_chars` and whether text is left after this part (`truncated`)."""

    path: str = Field(description="Absolute path of a file inside the agent's directories.")
    offset: int = Field(default=0, ge=0, description="Characters to skip from the start.")
    max_chars: int = Field(
        default=20_000, ge=1, le=200_000, description="Read at most this many characters."
    )


class ScanDirectory(_Args):
    """The tree under a folder, a page at a time in path order, filtered by extension and
    modification time. Pass the result's `next_cursor` back for the next page."""

    path: str = Field(description="Absolute path of a folder inside the agent's directories.")
    extensions: list[str] = Field(
        default_factory=list,
        description="Keep only files with these extensions (for example '.md'); empty keeps all.",
    )
    modified_since: str | None = Field(
        default=None, description="ISO 8601 time; keep only files modified after it."
    )
    cursor: str | None = Field(
        default=None, description="The `next_cursor` of the previous page; omit for the first."
    )
    limit: int = Field(default=SCAN_PAGE, ge=1, le=5_000, description="Files per page.")


class FindRecords(_Args):
    """Search existing records of one type by exact titles and/or title words: use it
    before creating, to update what exists. Results are paged and bounded."""

    type: RecordType = Field(description="Which records: tasks, notes, timelines or projects.")
    titles: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="Exact titles (project names) to match, ignoring case.",
    )
    query: str | None = Field(
        default=None, description="Words that must all appear in the title, ignoring case."
    )
    projectId: str | None = Field(default=None, description="Only records of this project.")
    cursor: str | None = Field(default=None, description="The previous page's `next_cursor`.")
    limit: int = Field(default=50, ge=1, le=MAX_FIND_PAGE, description="Records per page.")


# ── Projects ──────────────────────────────────────────────────────────────────


class ListProjects(_Paged):
    """Projects that are not archived, a page at a time."""


class ListAllProjects(_Paged):
    """Every project, archived ones included, a page at a time."""


class GetProject(_Args):
    """One project by id."""

    projectId: str


class CreateProject(_Args):
    """Create a project (only when no existing project matches)."""

    name: str = Field(min_length=1)
    description: str = ""


class UpdateProject(_Args):
    """Change a project's fields; omitted fields stay as they are."""

    projectId: str
    name: str | None = None
    description: str | None = None
    status: Literal["active", "archived"] | None = None


# ── Tasks ─────────────────────────────────────────────────────────────────────


class ListTasks(_Paged):
    """Tasks, optionally of one project, a page at a time."""

    projectId: str | None = None


class CreateTask(_Args):
    """Create a task (only when no existing task matches)."""

    title: str = Field(min_length=1)
    description: str = ""
    state: TaskState = "ToDo"
    projectId: str | None = None
    dueDate: str | None = Field(default=None, description="ISO date, YYYY-MM-DD.")
    assignees: list[str] = Field(default_factory=list)


class UpdateTask(_Args):
    """Change a task's fields; omitted fields stay as they are."""

    taskId: str
    title: str | None = None
    description: str | None = None
    state: TaskState | None = None
    dueDate: str | None = None
    assignees: list[str] | None = None


class AddTaskComment(_Args):
    """Add a comment to a task."""

    taskId: str
    content: str = Field(min_length=1)


# ── Notes ─────────────────────────────────────────────────────────────────────


class ListNotes(_Paged):
    """Notes, optionally of one project, a page at a time."""

    projectId: str | None = None


class GetNote(_Args):
    """One note with its full content."""

    noteId: str


class CreateNote(_Args):
    """Create a note (only when no existing note matches)."""

    title: str = Field(min_length=1)
    content: str = ""
    projectId: str | None = None


class UpdateNote(_Args):
    """Replace a note's title or content (merge the old content in yourself)."""

    noteId: str
    title: str | None = None
    content: str | None = None


# ── Timelines ─────────────────────────────────────────────────────────────────


class ListTimelines(_Paged):
    """Timeline entries (milestones, deadlines), optionally of one project, a page at a time."""

    projectId: str | None = None


class CreateTimeline(_Args):
    """Create a timeline entry (only when no existing entry matches)."""

    title: str = Field(min_length=1)
    date: str = Field(description="ISO date, YYYY-MM-DD.")
    description: str = ""
    projectId: str | None = None


class UpdateTimeline(_Args):
    """Change a timeline entry; omitted fields stay as they are."""

    timelineId: str
    title: str | None = None
    date: str | None = None
    description: str | None = None
    completed: bool | None = None
