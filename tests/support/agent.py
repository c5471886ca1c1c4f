"""Helpers to run the local agent in-process on a checkpointer with a recording device."""

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolCall
from langgraph.pregel import Pregel

from checkpoints import open_checkpointer, open_graph_store
from device import LocalDevice
from graphs import local_agent
from nodes.bridge import DeviceCall, DeviceResult
from nodes.context import AgentContext
from nodes.payloads import GROUP_KIND, TRIAGE_KIND, find_payload
from relaygraph import runner


@dataclass
class RecordingDevice:
    """The real in-process device, recording every batch it is handed."""

    inner: LocalDevice
    batches: list[list[DeviceCall]] = field(default_factory=list)
    before: Callable[[Sequence[DeviceCall]], Any] | None = None

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        self.batches.append(list(calls))
        if self.before is not None:
            await self.before(calls)
        return await self.inner.execute(calls)

    def calls(self, name: str | None = None) -> list[DeviceCall]:
        return [c for b in self.batches for c in b if name is None or c["name"] == name]


@asynccontextmanager
async def agent_graph(storage_url: str, model: BaseChatModel) -> AsyncIterator[Pregel]:
    """The local agent compiled with the checkpointer and the store `storage_url` names."""
    async with open_checkpointer(storage_url) as saver, open_graph_store(storage_url) as store:
        yield local_agent.build(model).copy(update={"checkpointer": saver, "store": store})


async def run_agent(
    graph: Pregel, context: AgentContext, device: runner.Device, since: str | None = None
) -> dict[str, Any]:
    return await runner.start(
        graph,
        thread_id=str(uuid.uuid4()),
        graph_input={"modified_since": since},
        context=context,
        device=device,
    )


def triage_payload(messages: Sequence[BaseMessage]) -> dict[str, Any]:
    payload = find_payload(messages, TRIAGE_KIND)
    assert payload is not None, "the model was not given a triage manifest"
    return payload


def group_payload(messages: Sequence[BaseMessage]) -> dict[str, Any]:
    payload = find_payload(messages, GROUP_KIND)
    assert payload is not None, "the model was not given a processing group"
    return payload


def triage_call(groups: dict[str, list[str]]) -> AIMessage:
    """A structured triage answer, as a model gives it (a `TriageAnswer` tool call)."""
    args = {"groups": [{"project_id": k, "files": v} for k, v in groups.items()]}
    return AIMessage(
        content="",
        tool_calls=[ToolCall(name="TriageAnswer", args=args, id=f"tri-{uuid.uuid4().hex[:6]}")],
    )


def tool_turn(*calls: tuple[str, dict[str, Any]]) -> AIMessage:
    """One model turn with parallel tool calls."""
    return AIMessage(
        content="",
        tool_calls=[
            ToolCall(name=n, args=a, id=f"c{i}-{uuid.uuid4().hex[:6]}")
            for i, (n, a) in enumerate(calls)
        ],
    )


def tool_results(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The tool messages of a conversation as plain dicts (name, status, content)."""
    return [
        {"name": m.name, "status": m.status, "content": m.content}  # type: ignore[attr-defined]
        for m in messages
        if m.type == "tool"
    ]


def loads(content: Any) -> Any:
    return json.loads(content) if isinstance(content, str) else content
