"""The JSON documents the graphs hand the model: a triage manifest and a processing group.

Each is a text block of its own in a `HumanMessage`, tagged with `kind`, so a model reads it
as JSON and the offline extractor can find it without parsing prose.
"""

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage

TRIAGE_KIND = "relaygraph.triage"
GROUP_KIND = "relaygraph.group"


def payload_message(request: str, payload: dict[str, Any]) -> HumanMessage:
    """A human message with an instruction line and the payload as its own JSON block."""
    return HumanMessage(
        content=[
            {"type": "text", "text": request},
            {"type": "text", "text": json.dumps(payload, ensure_ascii=False)},
        ]
    )


def find_payload(messages: Sequence[AnyMessage | BaseMessage], kind: str) -> dict[str, Any] | None:
    """The first payload of `kind` in `messages`, or None."""
    for message in messages:
        if not isinstance(message, HumanMessage) or isinstance(message.content, str):
            continue
        for block in message.content:
            text = block.get("text") if isinstance(block, dict) else block
            if not isinstance(text, str) or not text.startswith("{"):
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and data.get("kind") == kind:
                return data
    return None
