"""Triage nodes: one batched scan through the bridge, then the model groups the manifest."""

import json
import posixpath
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.config import get_config
from langgraph.runtime import Runtime
from pydantic import ValidationError

from nodes import prompts
from nodes.bridge import DeviceCall, ask_device, call_id, device_tool
from nodes.context import AgentContext, AgentNode
from nodes.payloads import TRIAGE_KIND, payload_message
from nodes.state import STANDALONE, FileEntry, Group, TriageAnswer, TriageState
from tools.policy import PolicyViolation, normalize_extension

TRIAGE_ATTEMPTS = 3
NO_DIRECTORIES = "The agent has no directories configured."
SCAN_FAILED = "Could not scan {path}: {error}"
PROJECTS_FAILED = "Could not list the existing projects: {error}"
TRIAGE_FAILED = "The model gave no valid grouping of the files after {attempts} attempts: {error}"
UNKNOWN_FILES = "the answer names files that are not in the manifest: {paths}"
UNKNOWN_PROJECTS = "the answer names projects that do not exist: {ids}"
NO_ANSWER = "the answer did not call {tool}"


class InvalidTriage(ValueError):
    """A grouping that names files or projects the manifest does not have."""


INVALID_ANSWER = (OutputParserException, ValidationError, InvalidTriage)


def run_key_of(state: TriageState) -> str:
    """The run's key; a subgraph started on its own (in Studio) falls back to its thread id."""
    return state.get("run_key") or str(get_config()["configurable"].get("thread_id", "run"))


def scan_device(state: TriageState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Scan every configured folder and list the existing projects, in one device round trip."""
    context = runtime.context
    if not context.directory_paths:
        return {"triage_error": NO_DIRECTORIES, "manifest": [], "projects": []}
    run_key = run_key_of(state)
    policy = context.policy()
    scans: list[DeviceCall] = []
    for index, path in enumerate(context.directory_paths):
        args = device_tool("scan_directory").validate(
            {
                "path": path,
                "extensions": [normalize_extension(e) for e in context.file_extensions],
                "modified_since": state.get("modified_since"),
            }
        )
        try:
            policy.check(device_tool("scan_directory"), args)
        except PolicyViolation as exc:
            return {"triage_error": str(exc), "manifest": [], "projects": []}
        scans.append(
            DeviceCall(
                id=call_id(run_key, "triage", f"scan{index}"), name="scan_directory", args=args
            )
        )
    projects_call = DeviceCall(
        id=call_id(run_key, "triage", "projects"), name="list_all_projects", args={}
    )

    results = ask_device([*scans, projects_call])

    manifest: list[FileEntry] = []
    for scan in scans:
        result = results[scan["id"]]
        if not result["ok"]:
            error = SCAN_FAILED.format(path=scan["args"]["path"], error=result.get("error"))
            return {"triage_error": error, "manifest": [], "projects": []}
        manifest.extend(_manifest_entries(scan["args"]["path"], result.get("result"), policy))
    listed = results[projects_call["id"]]
    if not listed["ok"]:
        error = PROJECTS_FAILED.format(error=listed.get("error"))
        return {"triage_error": error, "manifest": manifest, "projects": []}
    projects = [p for p in listed.get("result") or [] if isinstance(p, dict) and "id" in p]
    return {"manifest": manifest, "projects": projects, "triage_error": None, "run_key": run_key}


def _manifest_entries(root: str, result: Any, policy: Any) -> list[FileEntry]:
    files = result.get("files", []) if isinstance(result, dict) else []
    entries = []
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue
        if not policy.inside(item["path"]):  # a device may not widen what the agent sees
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


def route_manifest(state: TriageState) -> Literal["group_files", "__end__"]:
    """Group only when the scan found files; an empty manifest costs no model call."""
    if state.get("triage_error") or not state.get("manifest"):
        return "__end__"
    return "group_files"


def group_files_node(
    model: BaseChatModel,
) -> AgentNode[TriageState]:
    """The model node that groups the manifest, one structured call per chunk."""
    structured = model.with_structured_output(TriageAnswer, method="function_calling")

    async def group_files(state: TriageState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        """Group the manifest into existing projects or `standalone`, chunk by chunk."""
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
        size = max(1, context.triage_chunk_size)
        chunks = [manifest[i : i + size] for i in range(0, len(manifest), size)]
        grouped: dict[str, list[str]] = {}
        for number, chunk in enumerate(chunks, start=1):
            payload = {
                "kind": TRIAGE_KIND,
                "projects": [{"id": p["id"], "name": p.get("name", "")} for p in projects],
                "files": [{"path": e["path"], "root": e["root"]} for e in chunk],
            }
            request = payload_message(
                prompts.TRIAGE_REQUEST.format(chunk=number, chunks=len(chunks)), payload
            )
            checked = _with_feedback(
                structured | RunnableLambda(partial(_checked, chunk=chunk, project_ids=project_ids))
            )
            try:
                answer: dict[str, list[str]] = await checked.ainvoke(
                    {"messages": [system, request]}
                )
            except INVALID_ANSWER as exc:
                error = TRIAGE_FAILED.format(attempts=TRIAGE_ATTEMPTS, error=_short(exc))
                return {"triage_error": error, "groups": []}
            for key, paths in answer.items():
                grouped.setdefault(key, []).extend(paths)
        groups = [Group(key=key, files=paths) for key, paths in grouped.items() if paths]
        return {"groups": groups}

    return group_files


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
