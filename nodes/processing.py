"""Processing nodes: one chunk's parts become creates and updates, a pass at a time.

read_parts (one bridge call) -> find_candidates (one bridge call) -> call_model <->
execute_tools (one bridge call per model turn) -> record_pass -> the next pass, or
record_outcome. Every request fits the prompt budget: the chunk was planned to, and a part
denser than planned is split again and its pieces packed into passes.
"""

import json
from typing import Any, Literal

from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from llm.offline import Extracted, extract
from llm.tokens import count_once
from nodes import prompts
from nodes.bridge import DeviceCall, ask_device, call_id
from nodes.chunks import (
    candidates_budget,
    chunk_files,
    files_budget,
    fit_parts,
    owned_text,
    passes,
    read_window,
    top_folder,
)
from nodes.context import AgentContext
from nodes.payloads import GROUP_KIND, payload_message
from nodes.run_data import put_outcome, store_of
from nodes.state import (
    STANDALONE,
    ChunkOutcome,
    FileFailure,
    Part,
    PartText,
    ProcessingState,
    Tally,
)
from nodes.tool_loop import wants_device
from tools.catalog import DEVICE_TOOLS, DataType
from tools.policy import PolicyViolation
from tools.schemas import MAX_FIND_PAGE

UNREADABLE = "could not be read ({error})"
GREW = "changed since the scan (more text than planned); read again on the next run"
SEARCH_FAILED = "Could not look up the existing {data_type}: {error}"
WRITE_FAILED = "{tool}: {error}"
BUDGET_USED = "Chunk {index}: the budget of {steps} model turns was used up before it finished."
FIND_BATCH = 200  # titles per find_records call


def read_parts(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Read every part of the chunk in one device round trip, and pack the texts into passes.
    A part the agent's folders and extensions do not allow is not read (the graph can be
    started with any chunk, through the API): its file fails with the refusal."""
    context = runtime.context
    chunk = state["chunk"]
    scope = f"c{chunk['index']}.read"
    policy, reader = context.policy(), DEVICE_TOOLS["read_file_content"]
    reads: list[tuple[Part, DeviceCall]] = []
    failed: dict[str, str] = {}
    for number, part in enumerate(chunk["parts"]):
        offset, count = read_window(part)
        args = {"path": part["path"], "offset": offset, "max_chars": min(count, 200_000)}
        try:
            policy.check(reader, args)
        except PolicyViolation as exc:
            failed.setdefault(part["path"], str(exc))
            continue
        read_id = call_id(state["run_key"], scope, f"r{number}")
        reads.append((part, DeviceCall(id=read_id, name=reader.name, args=args)))

    results = ask_device([read for _, read in reads])

    texts: list[PartText] = []
    for part, read in reads:
        result = results[read["id"]]
        if not result["ok"]:
            failed.setdefault(part["path"], UNREADABLE.format(error=result.get("error")))
            continue
        value = result.get("result")
        body = value if isinstance(value, dict) else {"content": str(value or "")}
        window = str(body.get("content", ""))
        total = int(body.get("total_chars") or len(window))
        text = owned_text(part, read["args"]["offset"], window, total)
        if part["part"] == part["parts"] and text["end"] < total:
            failed.setdefault(part["path"], GREW)
            continue
        texts.append(text)
    texts = [t for t in texts if t["path"] not in failed]
    budget = files_budget(context.max_prompt_tokens, context.data_types)
    return {
        "pending": passes(fit_parts(texts, budget), budget),
        "current": 0,
        "failed": [FileFailure(path=p, error=e) for p, e in failed.items()],
    }


def route_read(state: ProcessingState) -> Literal["find_candidates", "record_outcome"]:
    """A chunk none of whose parts could be read costs no model call."""
    return "find_candidates" if state.get("pending") else "record_outcome"


def find_candidates(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Look up the existing records the pass's texts may mention (by title, in the group's
    project), in one device round trip, and open the pass's conversation with them."""
    context = runtime.context
    chunk = state["chunk"]
    pass_texts = state["pending"][0]
    scope = f"c{chunk['index']}.p{state.get('current', 0)}"
    project = None if chunk["key"] == STANDALONE else chunk["key"]
    found = Extracted()
    for text in pass_texts:
        extract(text["content"], top_folder(text["path"], text["root"]), found)
    titles = {
        "tasks": found.titles("tasks"),
        "notes": found.titles("notes"),
        "timelines": found.titles("timelines"),
        "projects": sorted({top_folder(t["path"], t["root"]) for t in pass_texts} - {""}),
    }
    finds: list[tuple[DataType, DeviceCall]] = []
    for data_type in context.data_types:
        wanted = titles[data_type]
        if data_type == "projects" and project is not None:
            continue  # the group's project is known
        for batch in range(0, len(wanted), FIND_BATCH):
            args: dict[str, Any] = {
                "type": data_type,
                "titles": wanted[batch : batch + FIND_BATCH],
                "limit": MAX_FIND_PAGE,
            }
            if project is not None:
                args["projectId"] = project
            local = f"find-{data_type}-{batch // FIND_BATCH}"
            finds.append(
                (
                    data_type,
                    DeviceCall(
                        id=call_id(state["run_key"], scope, local), name="find_records", args=args
                    ),
                )
            )

    results = ask_device([call for _, call in finds])

    existing: dict[str, list[dict[str, Any]]] = {t: [] for t in context.data_types}
    more = False
    for data_type, call in finds:
        result = results[call["id"]]
        if not result["ok"]:
            error = SEARCH_FAILED.format(data_type=data_type, error=result.get("error"))
            return _fail_pass(state, error, pass_texts)
        page = result.get("result")
        items = page.get("items", []) if isinstance(page, dict) else []
        existing[data_type].extend(i for i in items if isinstance(i, dict))
        more = more or bool(isinstance(page, dict) and page.get("next_cursor"))
    existing, left_out = _within(
        existing, candidates_budget(context.max_prompt_tokens, context.data_types)
    )
    return {
        "pending": state["pending"][1:],
        "pass_files": list(dict.fromkeys(t["path"] for t in pass_texts)),
        "messages": Overwrite(
            _conversation(state, context, pass_texts, existing, left_out or more)
        ),
        "scope": scope,
        "turns": 0,
        "failure": None,
        "pass_failed": False,
    }


def _within(
    existing: dict[str, list[dict[str, Any]]], budget: int
) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """The candidates that fit `budget` tokens, and whether any were left out. The kinds
    take turns (one record of each at a time, in the device's order), so each gets a share,
    and counting stops at the first record that does not fit: the work is bounded by the
    budget, not by how many records the lookups found."""
    kept: dict[str, list[dict[str, Any]]] = {t: [] for t in existing}
    turns = [(data_type, iter(records)) for data_type, records in existing.items()]
    used = 0
    while turns:
        for turn in list(turns):
            data_type, records = turn
            record = next(records, None)
            if record is None:
                turns.remove(turn)
                continue
            tokens = count_once(json.dumps(record, ensure_ascii=False, default=str))
            if used + tokens > budget:
                return kept, True
            kept[data_type].append(record)
            used += tokens
    return kept, False


def _conversation(
    state: ProcessingState,
    context: AgentContext,
    texts: list[PartText],
    existing: dict[str, list[dict[str, Any]]],
    incomplete: bool,
) -> list[Any]:
    chunk = state["chunk"]
    project_context = (
        prompts.STANDALONE_CONTEXT
        if chunk["key"] == STANDALONE
        else prompts.PROJECT_CONTEXT.format(project_id=chunk["key"])
    )
    system = prompts.PROCESSING_SYSTEM.format(
        data_types=", ".join(context.data_types),
        project_context=project_context,
        user_instructions=prompts.user_instructions(context.prompt_template),
    )
    files = [_file_view(t) for t in texts]
    payload: dict[str, Any] = {
        "kind": GROUP_KIND,
        "project_id": chunk["key"],
        "files": files,
        "existing": existing,
    }
    if incomplete:
        payload["existing_incomplete"] = True
    request = prompts.PROCESSING_REQUEST + (
        " " + prompts.CANDIDATES_INCOMPLETE if incomplete else ""
    )
    return [SystemMessage(system), payload_message(request, payload)]


def _file_view(text: PartText) -> dict[str, Any]:
    """A part as the model reads it: which part of which file, its context, its lines."""
    view: dict[str, Any] = {"path": text["path"], "root": text["root"]}
    if text["parts"] > 1 or text["start"] > 0 or text["end"] < text["total"]:
        view["part"] = prompts.PART_LABEL.format(
            part=text["part"],
            parts=text["parts"],
            start=text["start"],
            end=text["end"],
            total=text["total"],
        )
    if text["context"]:
        view["context_before"] = text["context"]
    view["content"] = text["content"]
    return view


def _fail_pass(state: ProcessingState, error: str, texts: list[PartText]) -> dict[str, Any]:
    """A pass that cannot run: its files are failed (retried next run), nothing is written."""
    files = dict.fromkeys(t["path"] for t in texts)
    return {
        "pending": state["pending"][1:],
        "pass_files": list(files),
        "messages": Overwrite([]),
        "failure": error,
        "pass_failed": True,
        "failed": [FileFailure(path=p, error=error) for p in files],
    }


def route_candidates(state: ProcessingState) -> Literal["call_model", "record_pass"]:
    """A pass whose lookup failed creates nothing: it goes straight to its record."""
    return "record_pass" if state.get("pass_failed") else "call_model"


async def route_model_output(
    state: ProcessingState, runtime: Runtime[AgentContext]
) -> Literal["execute_tools", "record_pass"]:
    """Tool calls within the budget go to the device; anything else ends the pass."""
    if state.get("failure"):
        return "record_pass"
    if wants_device(state, runtime.context.max_processing_steps):
        return "execute_tools"
    return "record_pass"


def record_pass(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Count what the pass created and updated, from the tool results; a pass with a failed
    write, a model failure or an unfinished budget fails its files (retried next run)."""
    messages = state.get("messages", [])
    names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, AIMessage):
            names.update({c["id"] or "": c["name"] for c in message.tool_calls})
    tally = Tally(created={}, updated={}, matched=0, refused_calls=0, errors=[], summary="")
    write_errors: list[str] = []
    for message in messages:
        if not isinstance(message, ToolMessage):
            continue
        tool = DEVICE_TOOLS.get(names.get(message.tool_call_id, message.name or ""))
        if message.status == "error":
            if message.artifact is None:
                tally["refused_calls"] += 1
            elif tool is not None and tool.effect != "read":
                write_errors.append(WRITE_FAILED.format(tool=tool.name, error=message.text))
            continue
        if tool is None or tool.data_type is None or tool.effect == "read":
            continue
        if tool.effect == "create" and _is_existing(message):
            tally["matched"] += 1
            continue
        counts = tally["created"] if tool.effect == "create" else tally["updated"]
        counts[tool.data_type] = counts.get(tool.data_type, 0) + 1
    errors = list(write_errors)
    if failure := state.get("failure"):
        errors.append(failure)
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage) and (last.tool_calls or last.invalid_tool_calls):
        errors.append(
            BUDGET_USED.format(
                index=state["chunk"]["index"], steps=runtime.context.max_processing_steps
            )
        )
    tally["errors"] = errors
    tally["summary"] = last.text if isinstance(last, AIMessage) else ""
    update: dict[str, Any] = {"tallies": [tally], "current": state.get("current", 0) + 1}
    if errors and not state.get("pass_failed"):
        files = dict.fromkeys(state.get("pass_files", []))
        update["failed"] = [FileFailure(path=p, error=errors[0]) for p in files]
    return update


def _is_existing(message: ToolMessage) -> bool:
    try:
        row = json.loads(message.text)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and row.get("existing") is True


def route_pass(state: ProcessingState) -> Literal["find_candidates", "record_outcome"]:
    """On to the next pass while there is one."""
    return "find_candidates" if state.get("pending") else "record_outcome"


async def record_outcome(state: ProcessingState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The chunk's outcome, put in the store for `finalize`: per file whether it failed, and
    the passes' counts added up."""
    chunk = state["chunk"]
    created: dict[str, int] = {}
    updated: dict[str, int] = {}
    tallies = state.get("tallies", [])
    for tally in tallies:
        for counts, into in ((tally["created"], created), (tally["updated"], updated)):
            for key, value in counts.items():
                into[key] = into.get(key, 0) + value
    failed = list({f["path"]: f for f in state.get("failed", [])}.values())
    outcome = ChunkOutcome(
        key=chunk["key"],
        index=chunk["index"],
        files=chunk_files(chunk),
        failed=failed,
        created=created,
        updated=updated,
        matched=sum(t["matched"] for t in tallies),
        refused_calls=sum(t["refused_calls"] for t in tallies),
        errors=_errors(tallies, failed),
        summary=" ".join(t["summary"] for t in tallies if t["summary"]),
        model_calls=state.get("model_calls", 0),
    )
    finished = sum(1 for p in chunk["parts"] if p["part"] == p["parts"])
    await put_outcome(store_of(runtime), state["run_key"], outcome)
    get_stream_writer()({"event": "chunk_done", "data": _progress(outcome, finished)})
    return {"chunks_done": 1}


def _errors(tallies: list[Tally], failed: list[FileFailure]) -> list[str]:
    """The passes' errors, then the files that failed for a reason of their own (a read)."""
    errors = [e for t in tallies for e in t["errors"]]
    seen = set(errors)
    return errors + [f"{f['path']}: {f['error']}" for f in failed if f["error"] not in seen]


def _progress(outcome: ChunkOutcome, finished: int) -> dict[str, Any]:
    """A `chunk_done` event: the files whose last part was in the chunk, and its counts."""
    return {
        "chunk": outcome["index"],
        "files_finished": finished,
        "files": len(outcome["files"]),
        "failed": len(outcome["failed"]),
        "created": sum(outcome["created"].values()),
        "updated": sum(outcome["updated"].values()),
        "model_calls": outcome["model_calls"],
    }
