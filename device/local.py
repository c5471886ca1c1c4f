"""Executes device tool calls: file-system tools confined to roots, entity tools on SQLite.

Every call runs once: its result is stored by call id in the same transaction as its
effect, and a repeated id replays the stored result (invariant 6).
"""

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nodes.bridge import DeviceCall, DeviceResult
from tools.policy import normalize_extension

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'active', isAiSuggested INTEGER NOT NULL DEFAULT 0,
    isApproved INTEGER NOT NULL DEFAULT 1, createdAt TEXT NOT NULL, updatedAt TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'ToDo', projectId TEXT, dueDate TEXT,
    assignees TEXT NOT NULL DEFAULT '[]', isAiSuggested INTEGER NOT NULL DEFAULT 0,
    isApproved INTEGER NOT NULL DEFAULT 1, createdAt TEXT NOT NULL, updatedAt TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS task_comments (
    id TEXT PRIMARY KEY, taskId TEXT NOT NULL, author TEXT NOT NULL, content TEXT NOT NULL,
    createdAt TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notes (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, content TEXT NOT NULL DEFAULT '', projectId TEXT,
    isAiSuggested INTEGER NOT NULL DEFAULT 0, isApproved INTEGER NOT NULL DEFAULT 1,
    createdAt TEXT NOT NULL, updatedAt TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS timelines (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, date TEXT NOT NULL, description TEXT NOT NULL
    DEFAULT '', projectId TEXT, completed INTEGER NOT NULL DEFAULT 0,
    isAiSuggested INTEGER NOT NULL DEFAULT 0, isApproved INTEGER NOT NULL DEFAULT 1,
    createdAt TEXT NOT NULL, updatedAt TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_calls (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, ok INTEGER NOT NULL, payload TEXT NOT NULL,
    executedAt TEXT NOT NULL);
"""

ENTITY_TABLES = ("projects", "tasks", "notes", "timelines")
NOT_A_DATABASE = "{path} is not a relaygraph entity database ({error})."
OUTSIDE_ROOTS = "{path} is outside the folders this device shares."
NOT_FOUND = "{kind} {id} does not exist."
UNKNOWN_FIELDS = "{kind} have no fields named {fields}."
BAD_TIME = "modified_since is not an ISO 8601 time: {value!r}"


class DeviceDatabaseError(RuntimeError):
    """The entity database cannot be opened or is not one."""


class ToolFailed(Exception):
    """An expected failure of one tool call; the model reads its message."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LocalDevice:
    """The user's computer: folders under `roots` and the app's SQLite entity database."""

    def __init__(
        self,
        roots: Iterable[str | Path],
        db_path: str | Path,
        *,
        on_call: Callable[[DeviceCall, DeviceResult, bool], None] | None = None,
    ) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.db_path = Path(db_path)
        self.on_call = on_call
        self._db = self._open(self.db_path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise DeviceDatabaseError(NOT_A_DATABASE.format(path=path, error=exc)) from exc
        return db

    def close(self) -> None:
        self._db.close()

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        """Run a batch of calls in order; results by call id."""
        results: dict[str, DeviceResult] = {}
        for call in calls:
            results[call["id"]] = await asyncio.to_thread(self.execute_one, call)
        return results

    def execute_one(self, call: DeviceCall) -> DeviceResult:
        """Run one call once: replay the stored result of a call id seen before."""
        self._db.execute("BEGIN IMMEDIATE")  # the replay check and the effect: one transaction
        stored = self._db.execute(
            "SELECT ok, payload FROM device_calls WHERE id = ?", (call["id"],)
        ).fetchone()
        if stored is not None:
            self._db.execute("ROLLBACK")
            result = _result(bool(stored["ok"]), json.loads(stored["payload"]))
            self._notify(call, result, replayed=True)
            return result
        try:
            try:
                result = DeviceResult(ok=True, result=self._run(call["name"], call["args"]))
            except ToolFailed as exc:
                result = DeviceResult(ok=False, error=str(exc))
            payload = result.get("result") if result["ok"] else result.get("error")
            self._db.execute(
                "INSERT INTO device_calls (id, name, ok, payload, executedAt) VALUES (?,?,?,?,?)",
                (call["id"], call["name"], int(result["ok"]), json.dumps(payload), _now()),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._notify(call, result, replayed=False)
        return result

    def _notify(self, call: DeviceCall, result: DeviceResult, *, replayed: bool) -> None:
        if self.on_call is not None:
            self.on_call(call, result, replayed)

    # ── Tools ────────────────────────────────────────────────────────────────

    def _run(self, name: str, args: Mapping[str, Any]) -> Any:
        handler = getattr(self, f"_tool_{name}", None)
        if handler is None:
            raise ToolFailed(f"This device cannot run {name!r}.")
        try:
            return handler(**args)
        except TypeError as exc:
            raise ToolFailed(f"Bad arguments for {name}: {exc}") from exc

    def _confined(self, path: str) -> Path:
        resolved = Path(path).resolve()
        if not any(resolved == root or root in resolved.parents for root in self.roots):
            raise ToolFailed(OUTSIDE_ROOTS.format(path=path))
        return resolved

    def _tool_list_directory(self, path: str) -> list[dict[str, Any]]:
        folder = self._confined(path)
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            raise ToolFailed(f"Cannot list {path}: {exc.strerror or exc}") from exc
        return [
            {"name": e.name, "path": str(e), "type": "folder" if e.is_dir() else "file"}
            for e in entries
        ]

    def _tool_get_file_metadata(self, path: str) -> dict[str, Any]:
        file = self._confined(path)
        try:
            stat = file.stat()
        except OSError as exc:
            raise ToolFailed(f"Cannot stat {path}: {exc.strerror or exc}") from exc
        return {
            "path": str(file),
            "size": stat.st_size,
            "created": datetime.fromtimestamp(stat.st_ctime, UTC).isoformat(),
            "modified": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
        }

    def _tool_read_file_content(self, path: str, max_chars: int = 20_000) -> dict[str, Any]:
        file = self._confined(path)
        try:
            with file.open(encoding="utf-8", errors="replace") as handle:
                content = handle.read(max_chars + 1)
        except OSError as exc:
            raise ToolFailed(f"Cannot read {path}: {exc.strerror or exc}") from exc
        return {
            "path": str(file),
            "content": content[:max_chars],
            "truncated": len(content) > max_chars,
        }

    def _tool_scan_directory(
        self, path: str, extensions: list[str] | None = None, modified_since: str | None = None
    ) -> dict[str, Any]:
        folder = self._confined(path)
        if not folder.is_dir():
            raise ToolFailed(f"{path} is not a folder on this device.")
        wanted = {normalize_extension(e) for e in extensions or []}
        try:
            since = datetime.fromisoformat(modified_since).timestamp() if modified_since else None
        except ValueError as exc:
            raise ToolFailed(BAD_TIME.format(value=modified_since)) from exc
        files = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                file = Path(dirpath, filename)
                if filename.startswith(".") or (wanted and file.suffix.lower() not in wanted):
                    continue
                try:
                    stat = file.stat()
                except OSError:
                    continue
                if since is not None and stat.st_mtime <= since:
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
                files.append({"path": str(file), "size": stat.st_size, "modified": modified})
        return {"root": str(folder), "files": files}

    def _rows(self, table: str, project_id: str | None = None, **filters: Any) -> list[dict]:
        sql, params = f"SELECT * FROM {table}", []
        clauses = [f"{k} = ?" for k in filters]
        params += list(filters.values())
        if project_id is not None:
            clauses.append("projectId = ?")
            params.append(project_id)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [_row(r) for r in self._db.execute(sql + " ORDER BY createdAt, id", params)]

    def _columns(self, table: str, values: dict[str, Any]) -> None:
        """Argument names become column names: only the table's own are accepted."""
        known = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ToolFailed(UNKNOWN_FIELDS.format(kind=table, fields=", ".join(unknown)))

    def _insert(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        self._columns(table, values)
        now = _now()
        row = {"id": uuid.uuid4().hex, **values, "createdAt": now}
        if table != "task_comments":
            row["updatedAt"] = now
        row = {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
        columns = ", ".join(row)
        self._db.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        return self._get(table, row["id"])

    def _update(self, table: str, row_id: str, values: dict[str, Any]) -> dict[str, Any]:
        self._columns(table, values)
        self._get(table, row_id)
        values = {k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()}
        values["updatedAt"] = _now()
        assignments = ", ".join(f"{k} = ?" for k in values)
        self._db.execute(
            f"UPDATE {table} SET {assignments} WHERE id = ?",
            [*values.values(), row_id],
        )
        return self._get(table, row_id)

    def _get(self, table: str, row_id: str) -> dict[str, Any]:
        row = self._db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise ToolFailed(NOT_FOUND.format(kind=table.rstrip("s"), id=row_id))
        return _row(row)

    def _tool_list_projects(self) -> list[dict[str, Any]]:
        return self._rows("projects", status="active")

    def _tool_list_all_projects(self) -> list[dict[str, Any]]:
        return self._rows("projects")

    def _tool_get_project(self, projectId: str) -> dict[str, Any]:
        return self._get("projects", projectId)

    def _tool_create_project(self, **values: Any) -> dict[str, Any]:
        return self._insert("projects", values)

    def _tool_update_project(self, projectId: str, **values: Any) -> dict[str, Any]:
        return self._update("projects", projectId, values)

    def _tool_list_tasks(self, projectId: str | None = None) -> list[dict[str, Any]]:
        return self._rows("tasks", projectId)

    def _tool_create_task(self, **values: Any) -> dict[str, Any]:
        return self._insert("tasks", values)

    def _tool_update_task(self, taskId: str, **values: Any) -> dict[str, Any]:
        return self._update("tasks", taskId, values)

    def _tool_add_task_comment(self, taskId: str, content: str, author: str) -> dict[str, Any]:
        self._get("tasks", taskId)
        return self._insert(
            "task_comments", {"taskId": taskId, "content": content, "author": author}
        )

    def _tool_list_notes(self, projectId: str | None = None) -> list[dict[str, Any]]:
        return self._rows("notes", projectId)

    def _tool_get_note(self, noteId: str) -> dict[str, Any]:
        return self._get("notes", noteId)

    def _tool_create_note(self, **values: Any) -> dict[str, Any]:
        return self._insert("notes", values)

    def _tool_update_note(self, noteId: str, **values: Any) -> dict[str, Any]:
        return self._update("notes", noteId, values)

    def _tool_list_timelines(self, projectId: str | None = None) -> list[dict[str, Any]]:
        return self._rows("timelines", projectId)

    def _tool_create_timeline(self, **values: Any) -> dict[str, Any]:
        return self._insert("timelines", values)

    def _tool_update_timeline(self, timelineId: str, **values: Any) -> dict[str, Any]:
        if "completed" in values:
            values["completed"] = int(values["completed"])
        return self._update("timelines", timelineId, values)

    # ── Reading back (for the CLI's table and for tests) ──────────────────────

    def count_rows(self) -> dict[str, int]:
        """Rows per entity table."""
        return {
            t: self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ENTITY_TABLES
        }

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one entity table."""
        if table not in (*ENTITY_TABLES, "task_comments", "device_calls"):
            raise ValueError(table)
        return [_row(r) for r in self._db.execute(f"SELECT * FROM {table}")]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    values = dict(row)
    if isinstance(values.get("assignees"), str):
        values["assignees"] = json.loads(values["assignees"])
    return values


def _result(ok: bool, payload: Any) -> DeviceResult:
    return DeviceResult(ok=True, result=payload) if ok else DeviceResult(ok=False, error=payload)
