"""What a run is executed with: its graph config (thread, checkpoint metadata, the
assistant's and the run's configurable values), its context, its command."""

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from pydantic import TypeAdapter

from graphs import RECURSION_LIMIT
from nodes.context import AgentContext
from server.records import Assistant, Json, Run

#: The checkpoint metadata key that names the run that wrote a checkpoint.
RUN_ID_KEY = "relaygraph_run_id"
CONTEXT = TypeAdapter(AgentContext)


def run_config(run: Run, assistant: Assistant) -> RunnableConfig:
    """The graph config of a run: its thread, its id in checkpoint metadata, the assistant's
    configurable values under the run's."""
    configurable = {
        **(assistant.config or {}).get("configurable", {}),
        **(run.kwargs.get("config") or {}).get("configurable", {}),
        "thread_id": run.thread_id,
    }
    return {
        "configurable": configurable,
        "metadata": {RUN_ID_KEY: run.run_id, "assistant_id": run.assistant_id},
        "recursion_limit": RECURSION_LIMIT,
    }


def agent_context(assistant_context: Json | None, run_context: Json | None) -> AgentContext:
    """The assistant's context, overridden by the run's; raises `ValidationError`."""
    return CONTEXT.validate_python({**(assistant_context or {}), **(run_context or {})})


def stored_context(context: Json, under: Json | None = None) -> Json:
    """`context` as it is stored: each field it gives as validated (paths and extensions
    normalised), checked over the context `under` it (the assistant's, for a run's); raises
    `ValidationError`."""
    validated = agent_context(under, context)
    return {k: getattr(validated, k, v) for k, v in context.items()}


def command_fields(command: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a run's `command` that `langgraph.types.Command` takes."""
    return {k: command[k] for k in ("resume", "update", "goto") if command.get(k) is not None}
