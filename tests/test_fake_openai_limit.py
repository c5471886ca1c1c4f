"""The fake OpenAI server's context window: prompts are counted with the real tokenizer and
refused over `max_prompt_tokens` as the real API refuses them (400, `context_length_exceeded`).
"""

import json
from collections.abc import Iterator

import openai
import pytest
import tiktoken
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from harness.fake_openai import (
    ENCODING,
    MALFORMED_TOOL_CALL,
    FakeOpenAI,
    prompt_tokens,
)

LIMIT = 200
SHORT = "Summarize the folder."
LONG = "The kickoff meeting went over the launch plan in detail. " * 100


@tool
def create_task(title: str, state: str) -> str:
    """Create a task with a title and a state."""
    return title


def tokens(text: str) -> int:
    return len(tiktoken.get_encoding(ENCODING).encode_ordinary(text))


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(max_prompt_tokens=LIMIT) as fake:
        yield fake


@pytest.fixture
def model(server: FakeOpenAI) -> ChatOpenAI:
    return client(server)


def client(server: FakeOpenAI) -> ChatOpenAI:
    """The real client, without retries, so a refusal reaches the test as it was sent."""
    return ChatOpenAI(
        model="fake-gpt", base_url=server.base_url, api_key=SecretStr("test"), max_retries=0
    )


def test_a_message_counts_its_text_and_overhead() -> None:
    body = {"messages": [{"role": "user", "content": SHORT}]}
    assert prompt_tokens(body) == tokens(SHORT) + 4 + 3


def test_text_blocks_count_as_string_content() -> None:
    blocks = [{"type": "text", "text": "Summarize"}, {"type": "text", "text": " the folder."}]
    as_blocks = prompt_tokens({"messages": [{"role": "user", "content": blocks}]})
    assert as_blocks == tokens("Summarize") + tokens(" the folder.") + 4 + 3


def test_tool_calls_results_and_tools_are_counted() -> None:
    arguments = json.dumps({"title": "Send the invoice", "state": "ToDo"})
    tools = [{"type": "function", "function": {"name": "create_task", "parameters": {}}}]
    body = {
        "messages": [
            {"role": "user", "content": SHORT, "name": "alice"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "create_task", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "content": "created", "tool_call_id": "call_1"},
        ],
        "tools": tools,
    }
    expected = (
        tokens(SHORT)
        + tokens("alice")
        + tokens("create_task")
        + tokens(arguments)
        + tokens("created")
        + tokens("call_1")
        + tokens(json.dumps(tools))
        + 3 * 4
        + 3
    )
    assert prompt_tokens(body) == expected


def test_a_prompt_under_the_limit_is_answered_and_counted(
    server: FakeOpenAI, model: ChatOpenAI
) -> None:
    answer = model.invoke([HumanMessage(SHORT)])

    assert isinstance(answer, AIMessage)
    assert server.prompt_tokens == [tokens(SHORT) + 4 + 3]
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == server.prompt_tokens[0]
    assert server.refused == 0


def test_a_prompt_over_the_limit_is_refused_like_the_real_api(
    server: FakeOpenAI, model: ChatOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        model.invoke([HumanMessage(LONG)])

    counted = tokens(LONG) + 4 + 3
    assert counted > LIMIT
    assert refused.value.status_code == 400
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "messages"
    assert f"maximum context length is {LIMIT} tokens" in refused.value.message
    assert f"resulted in {counted} tokens" in refused.value.message
    assert server.prompt_tokens == [counted]
    assert server.refused == 1


def test_counts_are_kept_in_request_order_refused_ones_included(
    server: FakeOpenAI, model: ChatOpenAI
) -> None:
    with_tools = model.bind_tools([create_task])
    with_tools.invoke([HumanMessage(SHORT)])
    with pytest.raises(openai.BadRequestError):
        model.invoke([HumanMessage(LONG)])
    model.invoke([HumanMessage(SHORT)])

    first, second, third = server.prompt_tokens
    assert first == prompt_tokens(server.requests[0]) > third == tokens(SHORT) + 4 + 3
    assert second > LIMIT
    assert server.calls == 3
    assert server.refused == 1


def test_a_refused_prompt_uses_no_fault(server: FakeOpenAI, model: ChatOpenAI) -> None:
    fault = server.inject(MALFORMED_TOOL_CALL, when="any")
    with pytest.raises(openai.BadRequestError):
        model.invoke([HumanMessage(LONG)])

    assert server.pending_faults() == [fault]


def test_without_a_limit_nothing_is_refused() -> None:
    with FakeOpenAI() as server:
        client(server).invoke([HumanMessage(LONG)])

        assert server.prompt_tokens == [tokens(LONG) + 4 + 3]
        assert server.refused == 0
