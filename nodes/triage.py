"""Triage nodes: one batched scan through the bridge, then the model groups the manifest."""

import asyncio
import json
import posixpath
import re
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, Literal, TypeVar

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.config import get_config
from langgraph.runtime import Runtime
from pydantic import ValidationError

from llm.errors import REFUSED_REQUEST
from llm.tokens import count_request, count_tokens
from nodes import prompts
from nodes.bridge import DeviceCall, ask_device, call_id, device_tool
from nodes.context import AgentContext, AgentNode
from nodes.payloads import TRIAGE_KIND, payload_message
from nodes.state import STANDALONE, FileEntry, Group, ScanPage, TriageAnswer, TriageState
from tools.policy import PathPolicy, PolicyViolation, normalize_extension
from tools.schemas import MAX_LIST_PAGE, SCAN_PAGE

TRIAGE_ATTEMPTS = 3
NO_DIRECTORIES = "The agent has no directories configured."
SCAN_FAILED = "Could not scan {path}: {error}"
PROJECTS_FAILED = "Could not list the existing projects: {error}"
TRIAGE_FAILED = "The model gave no valid grouping of the files after {attempts} attempts: {error}"
UNKNOWN_FILES = "the answer names files that are not in the manifest: {paths}"
UNKNOWN_PROJECTS = "the answer names projects that do not exist: {ids}"
NO_ANSWER = "the answer did not call {tool}"
TOO_MANY_PAGES = "The device's listings did not end after {rounds} pages."
STUCK_CURSOR = "The device gave {name} the same cursor twice."
RETRIES_LEFT = "{count} files to retry are left for the next run (at most 1,000 a run)."
#: Files from earlier runs retried in one run; the rest wait for the next.
RETRY_LIMIT = 1_000
MAX_SCAN_ROUNDS = 1_000


#: Of what a triage request may hold after its prompt: the files, and the projects.
FILES_SHARE = 0.6
PROJECTS_SHARE = 0.3
ENTRY_OVERHEAD = 12  # the JSON keys and quotes around one manifest entry
TRIAGE_CONCURRENCY = 4
TRIAGE_TOOL_SPEC = convert_to_openai_tool(TriageAnswer)
T = TypeVar("T")


class InvalidTriage(ValueError):
    """A grouping that names files or projects the manifest does not have."""


INVALID_ANSWER = (OutputParserException, ValidationError, InvalidTriage)


def run_key_of(state: TriageState) -> str:
    """The run's key; a subgraph started on its own (in Studio) falls back to its thread id."""
    return state.get("run_key") or str(get_config()["configurable"].get("thread_id", "run"))


def scan_device(state: TriageState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """One round of the paged scan, in one device round trip: the first page of every
    folder and of the projects (with the metadata of the files to retry), then the next
    page of each listing that has more, until none has."""
    context = runtime.context
    if not context.directory_paths:
        return {"triage_error": NO_DIRECTORIES, "manifest": [], "projects": []}
    run_key = run_key_of(state)
    policy = context.policy()
    round_number = state.get("scan_round", 0)
    retry: list[str] = []
    taken: list[str] = []
    if round_number == 0:
        try:
            pages = _first_pages(context, state.get("modified_since"), policy)
        except PolicyViolation as exc:
            return {"triage_error": str(exc), "manifest": [], "projects": []}
        taken = list(state.get("retry_files") or [])[:RETRY_LIMIT]
        retry = [p for p in taken if policy.inside(p)]
    else:
        pages = state.get("pending_pages", [])
    if round_number >= MAX_SCAN_ROUNDS:
        return {"triage_error": TOO_MANY_PAGES.format(rounds=round_number), "groups": []}
    calls = [
        DeviceCall(
            id=call_id(run_key, "triage", f"r{round_number}.{index}"),
            name=page["name"],
            args={**page["args"], **({"cursor": page["cursor"]} if page["cursor"] else {})},
        )
        for index, page in enumerate(pages)
    ]
    metadata = [
        DeviceCall(
            id=call_id(run_key, "triage", f"retry{index}"),
            name="get_file_metadata",
            args={"path": path},
        )
        for index, path in enumerate(retry)
    ]

    results = ask_device([*calls, *metadata])

    manifest = list(state.get("manifest", [])) if round_number else []
    projects = list(state.get("projects", [])) if round_number else []
    pending: list[ScanPage] = []
    for page, call in zip(pages, calls, strict=True):
        result = results[call["id"]]
        if not result["ok"]:
            if page["name"] == "scan_directory":
                error = SCAN_FAILED.format(path=page["args"]["path"], error=result.get("error"))
            else:
                error = PROJECTS_FAILED.format(error=result.get("error"))
            return {"triage_error": error, "manifest": manifest, "projects": projects}
        items, next_cursor = _page(
            result.get("result"), "files" if page["name"] == "scan_directory" else "items"
        )
        if page["name"] == "scan_directory":
            manifest.extend(_manifest_entries(page["args"]["path"], items, policy))
        else:
            projects.extend(p for p in items if isinstance(p, dict) and "id" in p)
        if next_cursor is not None:
            if next_cursor == page["cursor"]:
                return {"triage_error": STUCK_CURSOR.format(name=page["name"]), "groups": []}
            pending.append(ScanPage(name=page["name"], args=page["args"], cursor=next_cursor))
    notices = list(state.get("notices", [])) if round_number else []
    if len(state.get("retry_files") or []) > RETRY_LIMIT and round_number == 0:
        notices.append(RETRIES_LEFT.format(count=len(state.get("retry_files") or []) - RETRY_LIMIT))
    known = {e["path"] for e in manifest}
    for call in metadata:
        result = results[call["id"]]
        path = posixpath.normpath(call["args"]["path"])
        body = result.get("result")
        if result["ok"] and isinstance(body, dict) and path not in known:
            manifest.append(
                FileEntry(
                    path=path,
                    root=_root_of(path, context.directory_paths),
                    size=int(body.get("size") or 0),
                    modified=str(body.get("modified") or ""),
                )
            )
            known.add(path)
    return {
        "manifest": _unique(manifest),
        "projects": projects,
        "pending_pages": pending,
        "scan_round": round_number + 1,
        **({"retry_files": taken} if round_number == 0 else {}),
        "triage_error": None,
        "notices": notices,
        "run_key": run_key,
    }


def _first_pages(
    context: AgentContext, modified_since: str | None, policy: PathPolicy
) -> list[ScanPage]:
    pages = []
    for path in context.directory_paths:
        args = device_tool("scan_directory").validate(
            {
                "path": path,
                "extensions": [normalize_extension(e) for e in context.file_extensions],
                "modified_since": modified_since,
                "limit": SCAN_PAGE,
            }
        )
        policy.check(device_tool("scan_directory"), args)
        pages.append(ScanPage(name="scan_directory", args=args, cursor=None))
    pages.append(ScanPage(name="list_all_projects", args={"limit": MAX_LIST_PAGE}, cursor=None))
    return pages


def _page(result: Any, key: str) -> tuple[list[Any], str | None]:
    """A page's items and the cursor of the next page (a bare list is one whole page)."""
    if isinstance(result, list):
        return result, None
    if not isinstance(result, dict):
        return [], None
    items = result.get(key)
    cursor = result.get("next_cursor")
    return (items if isinstance(items, list) else []), (cursor if isinstance(cursor, str) else None)


def _unique(manifest: list[FileEntry]) -> list[FileEntry]:
    return list({e["path"]: e for e in manifest}.values())


def _root_of(path: str, roots: list[str]) -> str:
    matches = [r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")]
    return max(matches, key=len) if matches else posixpath.dirname(path)


def _manifest_entries(root: str, files: list[Any], policy: PathPolicy) -> list[FileEntry]:
    entries = []
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue
        if not policy.allows_file(item["path"]):  # a device may not widen what the agent sees
            continue
        entries.append(
            FileEntry(
                path=posixpath.normpath(item["path"]),
                root=root,
                size=int(item.get("size") or 0),
                modified=str(item.get("modified") or ""),
            )
        )
    return entries


def route_manifest(state: TriageState) -> Literal["scan_device", "group_files", "__end__"]:
    """Scan on while a listing has pages left; group only when the scan found files (an
    empty manifest costs no model call)."""
    if state.get("triage_error"):
        return "__end__"
    if state.get("pending_pages"):
        return "scan_device"
    return "group_files" if state.get("manifest") else "__end__"


def group_files_node(
    model: BaseChatModel,
) -> AgentNode[TriageState]:
    """The model node that groups the manifest, one structured call per chunk."""
    structured = model.with_structured_output(TriageAnswer, method="function_calling")

    async def group_files(state: TriageState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        """Group the manifest into existing projects or `standalone`, chunk by chunk; every
        chunk's request (files and the projects most like them) fits the prompt budget."""
        context = runtime.context
        manifest = state.get("manifest", [])
        projects = state.get("projects", [])
        project_ids = {str(p["id"]) for p in projects}
        system = SystemMessage(
            prompts.TRIAGE_SYSTEM.format(
                tool_name=TriageAnswer.__name__,
                user_instructions=prompts.user_instructions(context.prompt_template),
            )
        )
        room = context.max_prompt_tokens - count_request([system], [TRIAGE_TOOL_SPEC]) - 200
        chunks = _manifest_chunks(manifest, context.triage_chunk_size, int(room * FILES_SHARE))
        inputs = []
        for number, chunk in enumerate(chunks, start=1):
            shown, hidden = _projects_for(chunk, projects, int(room * PROJECTS_SHARE))
            payload: dict[str, Any] = {
                "kind": TRIAGE_KIND,
                "projects": shown,
                "files": [{"path": e["path"], "root": e["root"]} for e in chunk],
            }
            text = prompts.TRIAGE_REQUEST.format(chunk=number, chunks=len(chunks))
            if hidden:
                text += " " + prompts.TRIAGE_PROJECTS_LEFT_OUT.format(count=hidden)
            inputs.append({"messages": [system, payload_message(text, payload)]})
        checked = [
            _with_feedback(
                structured | RunnableLambda(partial(_checked, chunk=chunk, project_ids=project_ids))
            )
            for chunk in chunks
        ]
        limit = asyncio.Semaphore(TRIAGE_CONCURRENCY)
        answers = await asyncio.gather(
            *(
                _bounded(limit, step.ainvoke(item))
                for step, item in zip(checked, inputs, strict=True)
            ),
            return_exceptions=True,
        )
        grouped: dict[str, list[str]] = {}
        for answer in answers:
            if isinstance(answer, INVALID_ANSWER + REFUSED_REQUEST):
                assert isinstance(answer, Exception)
                error = TRIAGE_FAILED.format(attempts=TRIAGE_ATTEMPTS, error=_short(answer))
                return {"triage_error": error, "groups": []}
            if isinstance(answer, BaseException):
                raise answer
            for key, paths in answer.items():
                grouped.setdefault(key, []).extend(paths)
        groups = [Group(key=key, files=paths) for key, paths in grouped.items() if paths]
        return {"groups": groups}

    return group_files


async def _bounded(limit: asyncio.Semaphore, work: Awaitable[T]) -> T:
    async with limit:
        return await work


def _manifest_chunks(
    manifest: Sequence[FileEntry], max_entries: int, budget: int
) -> list[list[FileEntry]]:
    """The manifest in path order, cut into chunks of at most `max_entries` files whose
    entries fit `budget` tokens."""
    chunks: list[list[FileEntry]] = []
    used = 0
    for entry in sorted(manifest, key=lambda e: e["path"]):
        tokens = count_tokens(entry["path"]) + count_tokens(entry["root"]) + ENTRY_OVERHEAD
        if not chunks or len(chunks[-1]) >= max(1, max_entries) or used + tokens > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(entry)
        used += tokens
    return chunks


def _projects_for(
    chunk: Sequence[FileEntry], projects: Sequence[dict[str, Any]], budget: int
) -> tuple[list[dict[str, Any]], int]:
    """The projects to show beside a chunk, within `budget` tokens: those whose names share
    words with the chunk's paths first; and how many were left out."""
    words = {w for e in chunk for w in _words(posixpath.relpath(e["path"], e["root"]))}
    ranked = sorted(projects, key=lambda p: -len(_words(str(p.get("name", ""))) & words))
    shown: list[dict[str, Any]] = []
    used = 0
    for project in ranked:
        view = {"id": project["id"], "name": project.get("name", "")}
        tokens = count_tokens(json.dumps(view, ensure_ascii=False)) + 2
        if used + tokens > budget:
            break
        shown.append(view)
        used += tokens
    return shown, len(projects) - len(shown)


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^\w]+", text.casefold()) if len(w) > 2}


def _with_feedback(
    attempt: Runnable[list[BaseMessage], dict[str, list[str]]],
) -> Runnable[dict[str, Any], dict[str, list[str]]]:
    """Retry an invalid answer, telling the model what was wrong with the last one."""

    def conversation(inputs: dict[str, Any]) -> list[BaseMessage]:
        messages = list(inputs["messages"])
        if (error := inputs.get("last_error")) is not None:
            retry = prompts.TRIAGE_RETRY.format(
                error=_short(error), tool_name=TriageAnswer.__name__
            )
            messages.append(HumanMessage(retry))
        return messages

    once = RunnableLambda(conversation) | attempt
    return once.with_fallbacks(
        [once] * (TRIAGE_ATTEMPTS - 1),
        exceptions_to_handle=INVALID_ANSWER,
        exception_key="last_error",
    )


def _checked(
    answer: TriageAnswer | None, chunk: Sequence[FileEntry], project_ids: set[str]
) -> dict[str, list[str]]:
    """The answer as {group key: paths}; files it left out go to `standalone`."""
    if answer is None:
        raise InvalidTriage(NO_ANSWER.format(tool=TriageAnswer.__name__))
    wanted = [e["path"] for e in chunk]
    known = set(wanted)
    placed: dict[str, str] = {}
    unknown_files: list[str] = []
    unknown_projects: list[str] = []
    for group in answer.groups:
        key = group.project_id if group.project_id in project_ids else group.project_id.lower()
        if key != STANDALONE and key not in project_ids:
            unknown_projects.append(group.project_id)
        for path in group.files:
            normal = posixpath.normpath(path)
            if normal not in known:
                unknown_files.append(path)
            else:
                placed.setdefault(normal, key)
    if unknown_projects:
        raise InvalidTriage(UNKNOWN_PROJECTS.format(ids=json.dumps(unknown_projects[:5])))
    if unknown_files:
        raise InvalidTriage(UNKNOWN_FILES.format(paths=json.dumps(unknown_files[:5])))
    result: dict[str, list[str]] = {}
    for path in wanted:
        result.setdefault(placed.get(path, STANDALONE), []).append(path)
    return result


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]
