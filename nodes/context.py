"""Run parameters of the device agents (`context_schema`): an assistant's `context`.

Validated where a context arrives from outside (the server's API, `server/run_config.py`):
the bounds below refuse what validates as JSON but could not work, so an assistant that
cannot run is never created.
"""

import posixpath
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

from langgraph.runtime import Runtime
from pydantic import AfterValidator, Field

from nodes.chunks import MIN_PROMPT_TOKENS
from tools.catalog import COMMENT_AUTHOR, DATA_TYPES, DataType
from tools.policy import PathPolicy, normalize_extension

MAX_PATH = 4096
EMPTY_PATH = "A directory path cannot be empty."
PATH_TOO_LONG = f"A directory path is at most {MAX_PATH} characters."
WINDOWS_PATH = (
    "{path!r} is a Windows path; this server checks device paths as POSIX absolute paths "
    "(/Users/me/Notes)."
)
WINDOWS_FORM = re.compile(r"^([A-Za-z]:|\\\\)")  # C:\Users, C:/Users, \\server\share
RELATIVE_DIRECTORY = "{path!r} is not an absolute path (it must start with /)."
WHOLE_DISK = "{path!r} is the root of the file system: the agent could read every file."
BAD_EXTENSION = "{ext!r} is not a file extension such as .md (a dot and 1 to 16 letters or digits)."


def device_directory(path: str) -> str:
    """A folder on the device, normalised (`/a/b/../c` is `/a/c`), refused when it is not an
    absolute POSIX path below the root."""
    if not path.strip():
        raise ValueError(EMPTY_PATH)
    if len(path) > MAX_PATH:
        raise ValueError(PATH_TOO_LONG)
    if WINDOWS_FORM.match(path):
        raise ValueError(WINDOWS_PATH.format(path=path))
    if not path.startswith("/"):
        raise ValueError(RELATIVE_DIRECTORY.format(path=path))
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal == "/":
        raise ValueError(WHOLE_DISK.format(path=path))
    return normal


def file_extension(ext: str) -> str:
    """`md`, `.MD` and `.md` all mean `.md`; anything else that is not one is refused."""
    normal = normalize_extension(ext)
    name = normal[1:]
    if not 1 <= len(name) <= 16 or not all(
        c.isascii() and (c.isalnum() or c in "_+-") for c in name
    ):
        raise ValueError(BAD_EXTENSION.format(ext=ext))
    return normal


DirectoryPath = Annotated[str, AfterValidator(device_directory)]
Extension = Annotated[str, AfterValidator(file_extension)]
#: A model-turn budget: at least one turn, at most what a run could ever use.
Turns = Annotated[int, Field(ge=1, le=10_000)]


@dataclass(kw_only=True)
class AgentContext:
    """What one agent may touch and how it works: directories, data types, budgets."""

    directory_paths: Annotated[list[DirectoryPath], Field(max_length=100)] = field(
        default_factory=list,
        metadata={"description": "Absolute folders on the device the agent may read."},
    )
    data_types: Annotated[list[DataType], Field(min_length=1)] = field(
        default_factory=lambda: list(DATA_TYPES),
        metadata={"description": "Entity types to extract: tasks, projects, notes, timelines."},
    )
    file_extensions: Annotated[list[Extension], Field(min_length=1, max_length=100)] = field(
        default_factory=lambda: [".md", ".txt"],
        metadata={"description": "Only files with these extensions are scanned and read."},
    )
    prompt_template: Annotated[str | None, Field(max_length=20_000)] = field(
        default=None, metadata={"description": "Extra instructions from the user."}
    )
    device_id: Annotated[str | None, Field(min_length=1, max_length=200)] = field(
        default=None, metadata={"description": "The device that runs this agent's tools."}
    )
    comment_author: Annotated[str, Field(min_length=1, max_length=200)] = COMMENT_AUTHOR
    max_processing_steps: Turns = field(
        default=6, metadata={"description": "Model turns with tools per group, then a summary."}
    )
    max_step_turns: Turns = field(
        default=4, metadata={"description": "Agentic loop: model turns with tools per step."}
    )
    max_prompt_tokens: Annotated[int, Field(ge=MIN_PROMPT_TOKENS, le=10_000_000)] = field(
        default=96_000,
        metadata={
            "description": "Prompt tokens one model request may hold (sized for a 128k-token "
            "model, with 32k left for the answer); work is chunked to fit."
        },
    )
    parallel_chunks: Annotated[int, Field(ge=1, le=64)] = field(
        default=8,
        metadata={
            "description": "Chunks processed at once: a wave's device calls go out as one "
            "batch and its model requests run side by side; the next wave starts when it ends."
        },
    )
    triage_chunk_size: Annotated[int, Field(ge=1, le=10_000)] = field(
        default=150, metadata={"description": "Manifest entries per triage model call."}
    )

    def policy(self) -> PathPolicy:
        return PathPolicy.build(self.directory_paths, self.file_extensions)


StateT_contra = TypeVar("StateT_contra", contravariant=True)


class AgentNode(Protocol[StateT_contra]):
    """A node built around a model: `node(state, runtime=...)` returns a state update."""

    def __call__(
        self, state: StateT_contra, *, runtime: Runtime[AgentContext]
    ) -> Awaitable[dict[str, Any]]: ...
