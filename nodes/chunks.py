"""Chunks: a group's files cut into pieces that each fit one model request.

The plan is made from the scan's file sizes before anything is read (a file of `size` bytes
holds at most `size` characters). A file larger than one chunk is split into parts; every
line belongs to the part it starts in, and a part also carries the end of the previous one
as context, so nothing is cut silently and nothing is extracted twice. Once read, a part
whose text is denser than planned is split again by its real token count (`fit_parts`).
"""

import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

from llm.tokens import count_once, count_tokens
from nodes import prompts
from nodes.state import Chunk, FileEntry, Group, Part, PartText
from tools.catalog import DATA_TYPES, tools_for_data_types

#: Of what a request may hold after the prompt and the tool specs: the file texts, the
#: existing records matched to them, and the rest for the model's calls and their results.
FILES_SHARE = 0.35
CANDIDATES_SHARE = 0.15
#: Characters per token assumed when planning from sizes (real text has 3 to 4; the read
#: parts are counted again, and a denser one is split further).
PLANNING_CHARS_PER_TOKEN = 2
#: At most this many parts in one chunk, however small the files.
MAX_PARTS_PER_CHUNK = 60
#: How far a part's window reaches past its boundaries to find whole lines, and how much of
#: the previous part it shows as context.
OVERLAP_CHARS = 1_000
#: The smallest budget that holds the prompt, the tool specs and some text.
MIN_PROMPT_TOKENS = 8_000


@cache
def fixed_tokens(data_types: tuple[str, ...] = DATA_TYPES) -> int:
    """What every processing request holds before any file: the prompt and the tool specs."""
    specs = [t.openai_spec for t in tools_for_data_types(data_types)]
    return count_tokens(json.dumps(specs)) + count_tokens(prompts.PROCESSING_SYSTEM) + 200


def files_budget(max_prompt_tokens: int, data_types: Sequence[str]) -> int:
    """Tokens of file text one request may carry."""
    room = max(max_prompt_tokens, MIN_PROMPT_TOKENS) - fixed_tokens(tuple(data_types))
    return max(500, int(room * FILES_SHARE))


def candidates_budget(max_prompt_tokens: int, data_types: Sequence[str]) -> int:
    """Tokens of matched existing records one request may carry."""
    room = max(max_prompt_tokens, MIN_PROMPT_TOKENS) - fixed_tokens(tuple(data_types))
    return max(200, int(room * CANDIDATES_SHARE))


def plan_chunks(
    groups: Iterable[Group], manifest: Sequence[FileEntry], *, part_chars: int
) -> list[Chunk]:
    """Each group's files, in path order, packed into chunks of at most `part_chars`
    characters (by size); a larger file becomes parts of its own."""
    entries = {e["path"]: e for e in manifest}
    chunks: list[Chunk] = []
    for group in groups:
        current: list[Part] = []
        used = 0
        for path in sorted(group["files"]):
            entry = entries.get(path)
            size = max(entry["size"] if entry else 0, 1)
            root = entry["root"] if entry else posixpath.dirname(path)
            for part in _parts(path, root, size, part_chars):
                if current and (
                    used + part["length"] > part_chars or len(current) >= MAX_PARTS_PER_CHUNK
                ):
                    chunks.append(Chunk(key=group["key"], index=len(chunks), parts=current))
                    current, used = [], 0
                current.append(part)
                used += part["length"]
        if current:
            chunks.append(Chunk(key=group["key"], index=len(chunks), parts=current))
    return chunks


def _parts(path: str, root: str, size: int, part_chars: int) -> list[Part]:
    count = max(1, -(-size // part_chars))
    if count == 1:  # a file that grew since the scan is read whole up to the window
        return [Part(path=path, root=root, part=1, parts=1, offset=0, length=size)]
    return [
        Part(
            path=path, root=root, part=k + 1, parts=count, offset=k * part_chars, length=part_chars
        )
        for k in range(count)
    ]


def read_window(part: Part) -> tuple[int, int]:
    """The characters to read for a part: (offset, count), reaching past both ends."""
    start = max(0, part["offset"] - OVERLAP_CHARS)
    return start, part["offset"] + part["length"] + OVERLAP_CHARS - start


def owned_text(part: Part, window_start: int, window: str, total: int) -> PartText:
    """The lines a part owns (those that start inside it) and the context before them."""
    start = 0 if part["part"] == 1 else _line_start(window, window_start, part["offset"])
    last = part["part"] == part["parts"]
    end = total if last else _line_start(window, window_start, part["offset"] + part["length"])
    end = min(end, window_start + len(window))
    context_from = max(window_start, start - OVERLAP_CHARS)
    return PartText(
        path=part["path"],
        root=part["root"],
        part=part["part"],
        parts=part["parts"],
        start=start,
        end=end,
        total=total,
        context=window[context_from - window_start : start - window_start],
        content=window[start - window_start : end - window_start],
    )


def _line_start(window: str, window_start: int, boundary: int) -> int:
    """The first line start at or after `boundary`, looked for within the overlap; the
    boundary itself when a line is longer than that."""
    at = boundary - window_start
    if at <= 0:
        return window_start
    if at >= len(window):
        return window_start + len(window)
    if window[at - 1] == "\n":
        return boundary
    newline = window.find("\n", at, at + OVERLAP_CHARS)
    return boundary if newline < 0 else window_start + newline + 1


def fit_parts(texts: Sequence[PartText], budget: int) -> list[PartText]:
    """The texts, with any whose real token count is over `budget` split into pieces that
    fit (at line starts where it can), so every piece fits one request."""
    fitted: list[PartText] = []
    for text in texts:
        fitted.extend(_split_to_fit(text, budget))
    return fitted


def _split_to_fit(text: PartText, budget: int) -> list[PartText]:
    tokens = count_once(text["content"])
    if tokens <= budget or len(text["content"]) < 2:
        return [text]
    content = text["content"]
    cut = max(1, int(len(content) * budget / tokens * 0.9))
    newline = content.rfind("\n", cut // 2, cut)
    cut = newline + 1 if newline > 0 else cut
    head = PartText(**{**text, "end": text["start"] + cut, "content": content[:cut]})
    tail = PartText(
        **{
            **text,
            "start": text["start"] + cut,
            "context": content[max(0, cut - OVERLAP_CHARS) : cut],
            "content": content[cut:],
        }
    )
    return [head, *_split_to_fit(tail, budget)]


def passes(texts: Sequence[PartText], budget: int) -> list[list[PartText]]:
    """The texts packed, in order, into passes whose file text fits `budget` tokens."""
    packed: list[list[PartText]] = []
    used = 0
    for text in texts:
        tokens = count_once(text["content"]) + count_once(text["context"]) + 60
        if packed and used + tokens <= budget:
            packed[-1].append(text)
            used += tokens
        else:
            packed.append([text])
            used = tokens
    return packed


def top_folder(path: str, root: str) -> str:
    """The first folder under the agent's directory, or "" for a file at its top."""
    parts = posixpath.relpath(path, root).split("/")
    return parts[0] if len(parts) > 1 else ""


def chunk_files(chunk: Chunk) -> list[str]:
    """The distinct files a chunk touches, in order."""
    return list(dict.fromkeys(p["path"] for p in chunk["parts"]))


def by_path(texts: Iterable[PartText]) -> Mapping[str, list[PartText]]:
    grouped: dict[str, list[PartText]] = {}
    for text in texts:
        grouped.setdefault(text["path"], []).append(text)
    return grouped
