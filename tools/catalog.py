"""The device tool catalog: names, schemas, effects, and which data types enable which tools."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel

from tools import schemas as s

Effect = Literal["read", "create", "update"]
DataType = Literal["tasks", "projects", "notes", "timelines"]
DATA_TYPES: tuple[DataType, ...] = ("tasks", "projects", "notes", "timelines")

#: Author of task comments written by agents, as the desktop app shows it.
COMMENT_AUTHOR = "Adiuva"
#: Flags every agent-created entity carries until the user approves it.
AI_SUGGESTED_FLAGS: Mapping[str, int] = {"isAiSuggested": 1, "isApproved": 0}
#: Server-owned on every create: a record of the same type, project and title (a project:
#: name), ignoring case, is returned with `"existing": true` instead of made again, so two
#: chunks processed at once never create the same record twice.
ON_DUPLICATE: Mapping[str, str] = {"onDuplicate": "return_existing"}


@dataclass(frozen=True)
class DeviceTool:
    """One tool the device executes: its schema, what it does to the data, and its data type."""

    name: str
    schema: type[BaseModel]
    effect: Effect
    data_type: DataType | None = None  # None: a file-system tool
    path_kind: Literal["file", "folder"] | None = None  # file-system tools: what `path` names

    @property
    def description(self) -> str:
        return (self.schema.__doc__ or self.name).strip()

    @cached_property
    def openai_spec(self) -> dict[str, Any]:
        """The tool as the model sees it (OpenAI function format, accepted by `bind_tools`).

        Built once per tool (a schema export costs a fraction of a millisecond, and the
        tool loop binds every tool on every turn); treat it as read-only."""
        parameters = self.schema.model_json_schema()
        parameters.pop("title", None)
        parameters.pop("description", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments checked against the schema (raises `pydantic.ValidationError`)."""
        return self.schema.model_validate(dict(args)).model_dump(exclude_none=True)

    def device_args(self, args: Mapping[str, Any], *, comment_author: str) -> dict[str, Any]:
        """Validated arguments plus the fields the server owns."""
        checked = self.validate(args)
        if self.effect == "create":
            checked.update(AI_SUGGESTED_FLAGS)
            checked.update(ON_DUPLICATE)
        if self.name == "add_task_comment":
            checked["author"] = comment_author
        return checked


def _tool(
    name: str,
    schema: type[BaseModel],
    effect: Effect,
    data_type: DataType | None = None,
    path_kind: Literal["file", "folder"] | None = None,
) -> DeviceTool:
    return DeviceTool(name, schema, effect, data_type, path_kind)


FILE_SYSTEM_TOOLS: tuple[DeviceTool, ...] = (
    _tool("list_directory", s.ListDirectory, "read", path_kind="folder"),
    _tool("get_file_metadata", s.GetFileMetadata, "read", path_kind="file"),
    _tool("read_file_content", s.ReadFileContent, "read", path_kind="file"),
    _tool("scan_directory", s.ScanDirectory, "read", path_kind="folder"),
)

#: The record search every data type enables (update-first without listing everything).
FIND_RECORDS = _tool("find_records", s.FindRecords, "read")

ENTITY_TOOLS: tuple[DeviceTool, ...] = (
    _tool("list_projects", s.ListProjects, "read", "projects"),
    _tool("list_all_projects", s.ListAllProjects, "read", "projects"),
    _tool("get_project", s.GetProject, "read", "projects"),
    _tool("create_project", s.CreateProject, "create", "projects"),
    _tool("update_project", s.UpdateProject, "update", "projects"),
    _tool("list_tasks", s.ListTasks, "read", "tasks"),
    _tool("create_task", s.CreateTask, "create", "tasks"),
    _tool("update_task", s.UpdateTask, "update", "tasks"),
    _tool("add_task_comment", s.AddTaskComment, "update", "tasks"),
    _tool("list_notes", s.ListNotes, "read", "notes"),
    _tool("get_note", s.GetNote, "read", "notes"),
    _tool("create_note", s.CreateNote, "create", "notes"),
    _tool("update_note", s.UpdateNote, "update", "notes"),
    _tool("list_timelines", s.ListTimelines, "read", "timelines"),
    _tool("create_timeline", s.CreateTimeline, "create", "timelines"),
    _tool("update_timeline", s.UpdateTimeline, "update", "timelines"),
)

DEVICE_TOOLS: Mapping[str, DeviceTool] = {
    t.name: t for t in (*FILE_SYSTEM_TOOLS, FIND_RECORDS, *ENTITY_TOOLS)
}


def tools_for_data_types(data_types: Iterable[str]) -> list[DeviceTool]:
    """Tools the processing model may call: the file readers plus each data type's tools.

    `scan_directory` stays with triage; the model never walks folders itself.
    """
    wanted = set(data_types)
    unknown = wanted - set(DATA_TYPES)
    if unknown:
        raise ValueError(f"unknown data types: {', '.join(sorted(unknown))}")
    readers = [t for t in FILE_SYSTEM_TOOLS if t.name != "scan_directory"]
    search = [FIND_RECORDS] if wanted else []
    return readers + search + [t for t in ENTITY_TOOLS if t.data_type in wanted]
