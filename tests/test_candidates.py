"""The existing records a processing pass shows the model: they fit the candidates' budget,
each kind gets its share, and the work of choosing them is bounded by the budget, never by
how many records the lookups found (a title shared by hundreds of projects is found hundreds
of times)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest

import llm.tokens
from nodes.processing import _within


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The texts the tokenizer is asked to encode (through the real counter)."""
    seen: list[str] = []
    real = llm.tokens._ENCODER

    def counting(text: str) -> int:
        seen.append(text)
        return real(text) if real is not None else llm.tokens.estimate_tokens(text)

    monkeypatch.setattr(llm.tokens, "_ENCODER", counting)
    monkeypatch.setattr(llm.tokens, "_COUNTED", {})
    yield seen


def found(kind: str, count: int, project: str = "p") -> list[dict[str, Any]]:
    return [
        {"id": f"{kind}-{n}", "title": f"Send the invoice {n}", "projectId": f"{project}{n % 97}"}
        for n in range(count)
    ]


def tokens(records: list[dict[str, Any]]) -> int:
    text = (json.dumps(r, ensure_ascii=False, default=str) for r in records)
    return sum(llm.tokens.count_tokens(t) for t in text)


def test_candidates_are_counted_only_until_the_budget_is_spent(encoded: list[str]) -> None:
    existing = {kind: found(kind, 2_000) for kind in ("tasks", "notes", "timelines")}

    kept, left_out = _within(existing, budget=1_000)
    counted = len(encoded)

    assert left_out
    shown = [r for records in kept.values() for r in records]
    assert counted == len(shown) + 1, "one count past the budget, none of the other 5,9xx"
    assert tokens(shown) <= 1_000
    sizes = [len(records) for records in kept.values()]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) > 0, "the kinds take turns"


def test_everything_found_is_shown_when_it_fits(encoded: list[str]) -> None:
    existing = {"tasks": found("tasks", 5), "notes": [], "timelines": found("timelines", 2)}

    kept, left_out = _within(existing, budget=10_000)

    assert not left_out
    assert kept == existing


def test_a_record_found_again_is_not_counted_again(encoded: list[str]) -> None:
    existing = {"tasks": found("tasks", 50)}
    first, _ = _within(existing, budget=100_000)
    counted = len(encoded)

    again, _ = _within({"tasks": list(reversed(existing["tasks"]))}, budget=100_000)

    assert counted == 50 and len(encoded) == counted
    assert len(again["tasks"]) == len(first["tasks"]) == 50
