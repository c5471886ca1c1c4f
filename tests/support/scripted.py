"""Scripted chat models for graph tests: each call answers with the next scripted message."""

from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from llm.offline import ToolBindingChatModel

Answer = AIMessage | Callable[[list[BaseMessage], set[str]], AIMessage]


class ScriptedChatModel(ToolBindingChatModel):
    """Answers from a script; records every call's messages and bound tool names.

    A script entry is an `AIMessage`, or a function of (messages, tool names) for answers
    that depend on what the graph sent (for example ids the device made up).
    """

    script: list[Any] = Field(default_factory=list)
    calls: list[tuple[list[BaseMessage], set[str]]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def respond(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        self.calls.append((list(messages), tool_names))
        if not self.script:
            raise AssertionError(f"the script ran out at call {len(self.calls)}")
        entry = self.script.pop(0)
        message: AIMessage = entry(list(messages), tool_names) if callable(entry) else entry
        return message
