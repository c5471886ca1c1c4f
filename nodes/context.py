"""Run parameters of the device agents (`context_schema`): an assistant's `context`."""

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from langgraph.runtime import Runtime

from tools.catalog import COMMENT_AUTHOR, DATA_TYPES
from tools.policy import PathPolicy


@dataclass(kw_only=True)
class AgentContext:
    """What one agent may touch and how it works: directories, data types, budgets."""

    directory_paths: list[str] = field(
        default_factory=list,
        metadata={"description": "Absolute folders on the device the agent may read."},
    )
    data_types: list[str] = field(
        default_factory=lambda: list(DATA_TYPES),
        metadata={"description": "Entity types to extract: tasks, projects, notes, timelines."},
    )
    file_extensions: list[str] = field(
        default_factory=lambda: [".md", ".txt"],
        metadata={"description": "Only files with these extensions are scanned and read."},
    )
    prompt_template: str | None = field(
        default=None, metadata={"description": "Extra instructions from the user."}
    )
    device_id: str | None = field(
        default=None, metadata={"description": "The device that runs this agent's tools."}
    )
    comment_author: str = COMMENT_AUTHOR
    max_processing_steps: int = field(
        default=6, metadata={"description": "Model turns with tools per group, then a summary."}
    )
    max_step_turns: int = field(
        default=4, metadata={"description": "Agentic loop: model turns with tools per step."}
    )
    max_prompt_tokens: int = field(
        default=96_000,
        metadata={
            "description": "Prompt tokens one model request may hold (sized for a 128k-token "
            "model, with 32k left for the answer); work is chunked to fit."
        },
    )
    parallel_chunks: int = field(
        default=8,
        metadata={
            "description": "Chunks processed at once: a wave's device calls go out as one "
            "batch and its model requests run side by side; the next wave starts when it ends."
        },
    )
    triage_chunk_size: int = field(
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
