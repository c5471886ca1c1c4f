"""Argument schemas of the device tools, with the names and fields the Electron client knows.

Field names are the client's (camelCase ids). Flags the server owns (`isAiSuggested`,
`isApproved`, a comment's `author`) are not in the model-facing schemas: the bridge adds
them (`tools.catalog.DeviceTool.device_args`), so a model cannot forget or forge them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TaskState = Literal["ToDo", "In Progress", "Completed"]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ── File system ────────────────────────────────────────────────────────────────


class ListDirectory(_Args):
    """List the entries of one folder on the device (not recursive)."""

    path: str = Field(description="Absolute path of a folder inside the agent's directories.")


class GetFileMetadata(_Args):
    """Size, creation and modification time of one file."""

    path: str = Field(description="Absolute path of a file inside the agent's directories.")


class ReadFileContent(_Args):
    """Read a text file's content."""

    path: str = Field(description="Absolute path of a file inside the agent's directories.")
    max_chars: int = Field(
        default=20_000, ge=1, le=200_000, description="Read at most this many characters."
    )


class ScanDirectory(_Args):
    """The whole tree under a folder in one call, filtered by extension and modification time."""

    path: str = Field(description="Absolute path of a folder inside the agent's directories.")
    extensions: list[str] = Field(
        default_factory=list,
        description="Keep only files with these extensions (for example '.md'); empty keeps all.",
    )
    modified_since: str | None = Field(
        default=None, description="ISO 8601 time; keep only files modified after it."
    )


# ── Projects ──────────────────────────────────────────────────────────────────


class ListProjects(_Args):
    """Projects that are not archived."""


class ListAllProjects(_Args):
    """Every project, archived ones included."""


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


class ListTasks(_Args):
    """Tasks, optionally of one project."""

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


class ListNotes(_Args):
    """Notes, optionally of one project."""

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


class ListTimelines(_Args):
    """Timeline entries (milestones, deadlines), optionally of one project."""

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
