"""A deterministic stand-in for a model: rules over file text behind the chat-model interface.

- triage: a file goes to the existing project named like its top folder, else `standalone`;
- processing: checklists and TODO lines become tasks, lines with an ISO date become
  timeline entries, headed sections become notes, top folders become projects;
- planning (agentic loop): one step per line, or per `;` / "then" clause, of the task;
- update-first: an existing record with the same title in the same project is updated when it
  differs and left alone when it does not, so a second pass over the same files changes nothing.

It is stateless: every call recomputes its answer from the messages, like a model would.
"""

import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from nodes.payloads import GROUP_KIND, TRIAGE_KIND, find_payload
from nodes.prompts import TURNS_LEFT_OUT

OFFLINE_NOTICE = "Offline extractor (no model configured)"
#: How the note that stands in for left-out turns begins: those calls are done.
TURNS_LEFT_OUT_START = TURNS_LEFT_OUT.split("{")[0][:40]

_CHECKBOX = re.compile(r"^\s*[-*+]\s+\[([ xX/~-])\]\s+(?P<title>.+?)\s*$")
_TODO = re.compile(r"^\s*(?:[-*+]\s+)?(?P<tag>TODO|FIXME|DOING|DONE)\b[:\s-]*(?P<title>.+?)\s*$")
_DATE = re.compile(r"\b(?P<date>\d{4}-\d{2}-\d{2})\b")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
_CLAUSES = re.compile(r";|,?\s+then\s+", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")

_CHECKBOX_STATE = {
    " ": "ToDo",
    "x": "Completed",
    "X": "Completed",
    "/": "In Progress",
    "~": "In Progress",
    "-": "In Progress",
}
_TAG_STATE = {"TODO": "ToDo", "FIXME": "ToDo", "DOING": "In Progress", "DONE": "Completed"}


@dataclass
class Extracted:
    """What the rules found in one group's files, by (title, top folder): one title is one
    record per project, as the device's duplicate rule (title and project) has it."""

    tasks: dict[tuple[str, str], str] = field(default_factory=dict)  # -> state
    timelines: dict[tuple[str, str], str] = field(default_factory=dict)  # -> date
    notes: dict[tuple[str, str], str] = field(default_factory=dict)  # -> content

    def titles(self, kind: str) -> list[str]:
        """The distinct titles of one kind (`tasks`, `timelines`, `notes`), sorted."""
        found: dict[tuple[str, str], str] = getattr(self, kind)
        return sorted({title for title, _ in found})


def extract(text: str, folder: str, into: Extracted) -> None:
    """Apply the rules to one file's text; the first occurrence of a title in a folder wins."""
    heading: str | None = None
    prose: list[str] = []

    def close_section() -> None:
        if heading and prose:
            into.notes.setdefault((heading, folder), "\n".join(prose).strip())

    for line in text.splitlines():
        if match := _HEADING.match(line):
            close_section()
            heading, prose = match["title"], []
        elif match := _CHECKBOX.match(line):
            into.tasks.setdefault((match["title"], folder), _CHECKBOX_STATE[match.group(1)])
        elif match := _TODO.match(line):
            into.tasks.setdefault((match["title"], folder), _TAG_STATE[match["tag"]])
        elif match := _DATE.search(line):
            title = _BULLET.sub("", line.replace(match["date"], "")).strip(" :-–—\t")
            if title:
                into.timelines.setdefault((title, folder), match["date"])
        elif line.strip():
            prose.append(_BULLET.sub("", line).strip())
    close_section()


class ToolBindingChatModel(BaseChatModel):
    """A chat model that binds tools as `ChatOpenAI` does (in OpenAI format, as the `tools`
    keyword). The base of every stand-in for a model: a subclass answers in `respond`, which
    the sync and the async path both call directly (no hop to a thread)."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def respond(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        """The answer to a conversation, given the names of the tools bound."""
        raise NotImplementedError

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages, kwargs)

    def _result(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        names = {t["function"]["name"] for t in kwargs.get("tools") or []}
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, names))])


class OfflineExtractor(ToolBindingChatModel):
    """Rules instead of a model; answers with the same tool calls a model would make."""

    @property
    def _llm_type(self) -> str:
        return "relaygraph-offline"

    def respond(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        return answer(messages, tool_names)


def answer(messages: Sequence[BaseMessage], tool_names: set[str]) -> AIMessage:
    """The offline answer to a conversation, given the names of the tools it may call."""
    if "TriageAnswer" in tool_names and (triage := find_payload(messages, TRIAGE_KIND)):
        return _triage_answer(triage)
    if "Plan" in tool_names:
        return _plan_answer(messages)
    group = find_payload(messages, GROUP_KIND)
    if group is None or not tool_names:
        return AIMessage(content=f"{OFFLINE_NOTICE}: nothing more to do.")
    return _processing_answer(group, messages, tool_names)


def _triage_answer(payload: dict[str, Any]) -> AIMessage:
    by_name = {str(p.get("name", "")).casefold(): str(p["id"]) for p in payload["projects"]}
    groups: dict[str, list[str]] = {}
    for entry in payload["files"]:
        key = by_name.get(_top_folder(entry["path"], entry["root"]).casefold(), "standalone")
        groups.setdefault(key, []).append(entry["path"])
    args = {"groups": [{"project_id": k, "files": v} for k, v in groups.items()]}
    return AIMessage(
        content="", tool_calls=[ToolCall(name="TriageAnswer", args=args, id="offline-triage")]
    )


def _plan_answer(messages: Sequence[BaseMessage]) -> AIMessage:
    """One step per line of the task, or per `;` / "then" clause of a one-line task."""
    task = next((m.text for m in reversed(messages) if m.type == "human"), "")
    task = task.removeprefix("Task:").strip()
    lines = [line.strip(" -*\t") for line in task.splitlines() if line.strip(" -*\t")]
    if len(lines) == 1:
        lines = [p.strip() for p in _CLAUSES.split(lines[0]) if p.strip()]
    call = ToolCall(name="Plan", args={"steps": lines}, id="offline-plan")
    return AIMessage(content="", tool_calls=[call])


def _top_folder(path: str, root: str) -> str:
    relative = posixpath.relpath(path, root)
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else ""


def _processing_answer(
    group: dict[str, Any], messages: Sequence[BaseMessage], tool_names: set[str]
) -> AIMessage:
    if any(m.type == "human" and m.text.startswith(TURNS_LEFT_OUT_START) for m in messages):
        return AIMessage(content=f"{OFFLINE_NOTICE}: earlier calls are done; nothing more.")
    turns = [m for m in messages if isinstance(m, AIMessage)]
    last_calls = {c["name"] for c in turns[-1].tool_calls} if turns else set()
    if turns and last_calls - {"create_project"}:
        return AIMessage(content=f"{OFFLINE_NOTICE}: {_summary(turns)}")

    found = Extracted()
    for file in group["files"]:
        if "content" in file:
            extract(file["content"], _top_folder(file["path"], file["root"]), found)
    existing = group.get("existing", {})
    projects = {str(p["name"]).casefold(): str(p["id"]) for p in existing.get("projects", [])}
    projects.update(_created_projects(messages))

    folders = {
        folder for table in (found.tasks, found.timelines, found.notes) for _, folder in table
    } - {""}
    missing = sorted(f for f in folders if f.casefold() not in projects)
    if (
        not turns
        and group["project_id"] == "standalone"
        and missing
        and ("create_project" in tool_names)
    ):
        calls = [_call("create_project", {"name": name}, f"p{i}") for i, name in enumerate(missing)]
        return AIMessage(content="", tool_calls=calls)

    def project_for(folder: str) -> dict[str, str]:
        if group["project_id"] != "standalone":
            return {"projectId": group["project_id"]}
        pid = projects.get(folder.casefold()) if folder else None
        return {"projectId": pid} if pid else {}

    calls = _entity_calls(found, existing, tool_names, project_for)
    if not calls:
        return AIMessage(content=f"{OFFLINE_NOTICE}: everything is up to date.")
    return AIMessage(content="", tool_calls=calls)


def _entity_calls(
    found: Extracted,
    existing: dict[str, list[dict[str, Any]]],
    tool_names: set[str],
    project_for: Callable[[str], dict[str, str]],
) -> list[ToolCall]:
    """Create what has no record of its title in its project, update what differs. A record
    of the same title in another project is another record: it is left alone."""
    calls: list[ToolCall] = []
    kinds = (
        ("tasks", "task", "state", found.tasks),
        ("timelines", "timeline", "date", found.timelines),
        ("notes", "note", "content", found.notes),
    )
    for kind, tool, field_name, items in kinds:
        if f"create_{tool}" not in tool_names:
            continue
        known = {
            (str(r.get("title", "")).casefold(), r.get("projectId")): r
            for r in existing.get(kind, [])
        }
        for (title, folder), value in items.items():
            project = project_for(folder)
            row = known.get((title.casefold(), project.get("projectId")))
            suffix = f"{tool[0]}{len(calls)}"
            if row is None:
                args = {"title": title, field_name: value, **project}
                calls.append(_call(f"create_{tool}", args, suffix))
            elif row.get(field_name) != value and f"update_{tool}" in tool_names:
                args = {f"{tool}Id": row["id"], field_name: value}
                calls.append(_call(f"update_{tool}", args, suffix))
    return calls


def _created_projects(messages: Sequence[BaseMessage]) -> dict[str, str]:
    """Projects made earlier in this conversation, by name. Tool messages are matched to
    their calls by id: the OpenAI wire format does not carry a tool message's name."""
    called = {
        c["id"]: c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls
    }
    created: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, ToolMessage):
            continue
        if called.get(message.tool_call_id, message.name) == "create_project":
            if message.status == "error" or not isinstance(message.content, str):
                continue
            try:
                row = json.loads(message.content)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row and "name" in row:
                created[str(row["name"]).casefold()] = str(row["id"])
    return created


def _summary(turns: Sequence[AIMessage]) -> str:
    counts: dict[str, int] = {}
    for turn in turns:
        for call in turn.tool_calls:
            counts[call["name"]] = counts.get(call["name"], 0) + 1
    return ", ".join(f"{n} x {name}" for name, n in sorted(counts.items())) or "no changes"


def _call(name: str, args: dict[str, Any], suffix: str) -> ToolCall:
    return ToolCall(name=name, args=args, id=f"offline-{name}-{suffix}")
