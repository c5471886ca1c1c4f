"""Executes device tool calls: file-system tools confined to roots, entity tools on SQLite.

Every call runs once: its result is stored by call id in the same transaction as its
effect, and a repeated id replays the stored result (invariant 6).
"""

import asyncio
import bisect
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from checkpoints.factory import private_file
from nodes.bridge import DeviceCall, DeviceResult
from tools.policy import normalize_extension
from tools.schemas import LIST_PAGE, SCAN_PAGE

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
CREATE TABLE IF NOT EXISTS call_results (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, ok INTEGER NOT NULL, payload TEXT NOT NULL,
    executedAt TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS projects_by_name ON projects (lower(name), createdAt, id);
CREATE INDEX IF NOT EXISTS projects_in_order ON projects (createdAt, id);
CREATE INDEX IF NOT EXISTS tasks_by_title ON tasks (lower(title), projectId, createdAt, id);
CREATE INDEX IF NOT EXISTS tasks_by_project ON tasks (projectId, createdAt, id);
CREATE INDEX IF NOT EXISTS tasks_in_order ON tasks (createdAt, id);
CREATE INDEX IF NOT EXISTS notes_by_title ON notes (lower(title), projectId, createdAt, id);
CREATE INDEX IF NOT EXISTS notes_by_project ON notes (projectId, createdAt, id);
CREATE INDEX IF NOT EXISTS notes_in_order ON notes (createdAt, id);
CREATE INDEX IF NOT EXISTS timelines_by_title ON timelines (lower(title), projectId, createdAt, id);
CREATE INDEX IF NOT EXISTS timelines_by_project ON timelines (projectId, createdAt, id);
CREATE INDEX IF NOT EXISTS timelines_in_order ON timelines (createdAt, id);
"""
#: The lookups a device makes for every create (the record it would duplicate) and for
#: `find_records` and the paged lists are index searches: none reads the whole table, so a
#: first run over a large folder does not slow down with every record it has made.

ENTITY_TABLES = ("projects", "tasks", "notes", "timelines")
RETURN_EXISTING = "return_existing"
PREVIEW_CHARS = 2_000
Page = dict[str, Any]  # {"items": [...], "next_cursor": str | None}
NOT_A_DATABASE = "{path} is not a relaygraph entity database ({error})."
OUTSIDE_ROOTS = "{path} is outside the folders this device shares."
NOT_SHARED_KIND = "{path} is not one of the kinds of file this device shares ({extensions})."
NOT_FOUND = "{kind} {id} does not exist."
UNKNOWN_FIELDS = "{kind} have no fields named {fields}."
BAD_TIME = "modified_since is not an ISO 8601 time: {value!r}"


class DeviceDatabaseError(RuntimeError):
    """The entity database cannot be opened or is not one."""


class ToolFailed(Exception):
    """An expected failure of one tool call; the model reads its message."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _rename_result_log(db: sqlite3.Connection) -> None:
    """Databases made before the result log was named `call_results` (`device_calls`, the
    name of the server's outbox) keep their rows under the new name."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "device_calls" in tables and "call_results" not in tables:
        db.execute("ALTER TABLE device_calls RENAME TO call_results")


class LocalDevice:
    """The user's computer: folders under `roots` and the app's SQLite entity database."""

    def __init__(
        self,
        roots: Iterable[str | Path],
        db_path: str | Path,
        *,
        on_call: Callable[[DeviceCall, DeviceResult, bool], None] | None = None,
        extensions: Iterable[str] | None = None,
    ) -> None:
        """`extensions`: the only kinds of file read or scanned (None: any), checked here
        whatever the server asks, as the roots are."""
        self.roots = [Path(r).resolve() for r in roots]
        self.extensions = (
            frozenset(normalize_extension(e) for e in extensions)
            if extensions is not None
            else None
        )
        self.db_path = Path(db_path)
        self.on_call = on_call
        self._db = self._open(self.db_path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(private_file(path), check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            _rename_result_log(db)
            db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise DeviceDatabaseError(NOT_A_DATABASE.format(path=path, error=exc)) from exc
        return db

    def close(self) -> None:
        self._db.close()

    async def execute(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        """Run a batch of calls in order, in one transaction and one hop to a thread."""
        return await asyncio.to_thread(self.execute_batch, calls)

    def execute_one(self, call: DeviceCall) -> DeviceResult:
        """Run one call once: replay the stored result of a call id seen before."""
        return self.execute_batch([call])[call["id"]]

    def execute_batch(self, calls: Sequence[DeviceCall]) -> dict[str, DeviceResult]:
        """Run calls in order; each result is stored by call id in the transaction that
        holds its effect, and a call id seen before replays its stored result."""
        results: dict[str, DeviceResult] = {}
        replayed: set[str] = set()
        self._db.execute("BEGIN IMMEDIATE")  # replay checks, effects and results: one commit
        try:
            for call in calls:
                stored = self._db.execute(
                    "SELECT ok, payload FROM call_results WHERE id = ?", (call["id"],)
                ).fetchone()
                if stored is not None:
                    results[call["id"]] = _result(bool(stored["ok"]), json.loads(stored["payload"]))
                    replayed.add(call["id"])
                    continue
                try:
                    result = DeviceResult(ok=True, result=self._run(call["name"], call["args"]))
                except ToolFailed as exc:
                    result = DeviceResult(ok=False, error=str(exc))
                payload = result.get("result") if result["ok"] else result.get("error")
                self._db.execute(
                    "INSERT INTO call_results (id, name, ok, payload, executedAt) "
                    "VALUES (?,?,?,?,?)",
                    (call["id"], call["name"], int(result["ok"]), json.dumps(payload), _now()),
                )
                results[call["id"]] = result
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        for call in calls:
            self._notify(call, results[call["id"]], replayed=call["id"] in replayed)
        return results

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

    def _tool_list_directory(
        self, path: str, cursor: str | None = None, limit: int = LIST_PAGE
    ) -> dict[str, Any]:
        folder = self._confined(path)
        try:
            names = sorted(e.name for e in folder.iterdir())
        except OSError as exc:
            raise ToolFailed(f"Cannot list {path}: {exc.strerror or exc}") from exc
        start = bisect.bisect_right(names, cursor) if cursor else 0
        page = names[start : start + limit]
        more = start + limit < len(names)
        entries = [
            {
                "name": n,
                "path": str(folder / n),
                "type": "folder" if (folder / n).is_dir() else "file",
            }
            for n in page
        ]
        return {"entries": entries, "next_cursor": page[-1] if more and page else None}

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

    def _tool_read_file_content(
        self, path: str, offset: int = 0, max_chars: int = 20_000
    ) -> dict[str, Any]:
        file = self._confined(path)
        if self.extensions is not None and file.suffix.lower() not in self.extensions:
            shared = ", ".join(sorted(self.extensions))
            raise ToolFailed(NOT_SHARED_KIND.format(path=path, extensions=shared))
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ToolFailed(f"Cannot read {path}: {exc.strerror or exc}") from exc
        content = text[offset : offset + max_chars]
        return {
            "path": str(file),
            "offset": offset,
            "content": content,
            "total_chars": len(text),
            "truncated": offset + len(content) < len(text),
        }

    def _tool_scan_directory(
        self,
        path: str,
        extensions: list[str] | None = None,
        modified_since: str | None = None,
        cursor: str | None = None,
        limit: int = SCAN_PAGE,
    ) -> dict[str, Any]:
        folder = self._confined(path)
        if not folder.is_dir():
            raise ToolFailed(f"{path} is not a folder on this device.")
        wanted = {normalize_extension(e) for e in extensions or []}
        if self.extensions is not None:
            wanted = (wanted & self.extensions) if wanted else set(self.extensions)
            if not wanted:
                return {"files": [], "next_cursor": None}
        try:
            since = datetime.fromisoformat(modified_since).timestamp() if modified_since else None
        except ValueError as exc:
            raise ToolFailed(BAD_TIME.format(value=modified_since)) from exc
        files: list[dict[str, Any]] = []
        for file in _walk_in_path_order(folder, after=cursor):
            if wanted and file.suffix.lower() not in wanted:
                continue
            try:
                stat = file.stat()
            except OSError:
                continue
            if since is not None and stat.st_mtime <= since:
                continue
            if len(files) == limit:  # one more exists: this page ends before it
                return {"root": str(folder), "files": files, "next_cursor": files[-1]["path"]}
            modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
            files.append({"path": str(file), "size": stat.st_size, "modified": modified})
        return {"root": str(folder), "files": files, "next_cursor": None}

    def _page(
        self,
        table: str,
        clauses: Sequence[str] = (),
        params: Sequence[Any] = (),
        *,
        cursor: str | None,
        limit: int,
    ) -> Page:
        """One page of `table` in (createdAt, id) order; the cursor is the last row's key."""
        clauses, params = list(clauses), list(params)
        if cursor:
            created, _, row_id = cursor.partition("|")
            clauses.append("(createdAt, id) > (?, ?)")  # a row value: an index seek
            params += [created, row_id]
        sql = f"SELECT * FROM {table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY createdAt, id LIMIT ?"
        rows = [_row(r) for r in self._db.execute(sql, [*params, limit + 1])]
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = f"{last['createdAt']}|{last['id']}" if last else None
        return {"items": rows[:limit], "next_cursor": next_cursor}

    def _listing(self, table: str, project_id: str | None, cursor: str | None, limit: int) -> Page:
        if project_id is None:
            return self._page(table, cursor=cursor, limit=limit)
        return self._page(table, ["projectId = ?"], [project_id], cursor=cursor, limit=limit)

    def _columns(self, table: str, values: dict[str, Any]) -> None:
        """Argument names become column names: only the table's own are accepted."""
        known = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ToolFailed(UNKNOWN_FIELDS.format(kind=table, fields=", ".join(unknown)))

    def _insert(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        on_duplicate = values.pop("onDuplicate", None)
        self._columns(table, values)
        if on_duplicate == RETURN_EXISTING and (same := self._same_record(table, values)):
            return {**same, "existing": True}
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

    def _same_record(self, table: str, values: dict[str, Any]) -> dict[str, Any] | None:
        """The record a create would duplicate: same project and title (a project: name)."""
        if table == "projects":
            sql, params = "SELECT * FROM projects WHERE lower(name) = lower(?)", [values["name"]]
        else:
            sql = f"SELECT * FROM {table} WHERE lower(title) = lower(?) AND projectId IS ?"
            params = [values.get("title", ""), values.get("projectId")]
        row = self._db.execute(sql + " ORDER BY createdAt, id LIMIT 1", params).fetchone()
        return _row(row) if row is not None else None

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

    def _tool_list_projects(self, cursor: str | None = None, limit: int = LIST_PAGE) -> Page:
        return self._page("projects", ["status = ?"], ["active"], cursor=cursor, limit=limit)

    def _tool_list_all_projects(self, cursor: str | None = None, limit: int = LIST_PAGE) -> Page:
        return self._page("projects", cursor=cursor, limit=limit)

    def _tool_find_records(
        self,
        type: str,
        titles: Sequence[str] = (),
        query: str | None = None,
        projectId: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Records whose title (a project's name) is one of `titles` or holds every word
        of `query`, ignoring case; long note contents come back cut, and say so."""
        if type not in ENTITY_TABLES:
            raise ToolFailed(f"There are no records of type {type!r}.")
        column = "name" if type == "projects" else "title"
        matches, params = [], []
        if titles:
            matches.append(f"lower({column}) IN ({', '.join('?' * len(titles))})")
            params += [t.lower() for t in titles]
        if words := (query or "").lower().split():
            matches.append(" AND ".join(f"instr(lower({column}), ?) > 0" for _ in words))
            params += words
        clauses = ["(" + " OR ".join(f"({m})" for m in matches) + ")"] if matches else []
        if projectId is not None and type != "projects":
            # by titles alone: the title index finds them; `+` keeps SQLite from reading
            # the whole project in order through the project index instead
            clauses.append("+projectId = ?" if titles and not words else "projectId = ?")
            params.append(projectId)
        page = self._page(type, clauses, params, cursor=cursor, limit=limit)
        page["items"] = [_preview(item) for item in page["items"]]
        return page

    def _tool_get_project(self, projectId: str) -> dict[str, Any]:
        return self._get("projects", projectId)

    def _tool_create_project(self, **values: Any) -> dict[str, Any]:
        return self._insert("projects", values)

    def _tool_update_project(self, projectId: str, **values: Any) -> dict[str, Any]:
        return self._update("projects", projectId, values)

    def _tool_list_tasks(
        self, projectId: str | None = None, cursor: str | None = None, limit: int = LIST_PAGE
    ) -> Page:
        return self._listing("tasks", projectId, cursor, limit)

    def _tool_create_task(self, **values: Any) -> dict[str, Any]:
        return self._insert("tasks", values)

    def _tool_update_task(self, taskId: str, **values: Any) -> dict[str, Any]:
        return self._update("tasks", taskId, values)

    def _tool_add_task_comment(self, taskId: str, content: str, author: str) -> dict[str, Any]:
        self._get("tasks", taskId)
        return self._insert(
            "task_comments", {"taskId": taskId, "content": content, "author": author}
        )

    def _tool_list_notes(
        self, projectId: str | None = None, cursor: str | None = None, limit: int = LIST_PAGE
    ) -> Page:
        return self._listing("notes", projectId, cursor, limit)

    def _tool_get_note(self, noteId: str) -> dict[str, Any]:
        return self._get("notes", noteId)

    def _tool_create_note(self, **values: Any) -> dict[str, Any]:
        return self._insert("notes", values)

    def _tool_update_note(self, noteId: str, **values: Any) -> dict[str, Any]:
        return self._update("notes", noteId, values)

    def _tool_list_timelines(
        self, projectId: str | None = None, cursor: str | None = None, limit: int = LIST_PAGE
    ) -> Page:
        return self._listing("timelines", projectId, cursor, limit)

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
        if table not in (*ENTITY_TABLES, "task_comments", "call_results"):
            raise ValueError(table)
        return [_row(r) for r in self._db.execute(f"SELECT * FROM {table}")]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    values = dict(row)
    if isinstance(values.get("assignees"), str):
        values["assignees"] = json.loads(values["assignees"])
    return values


def _preview(record: dict[str, Any]) -> dict[str, Any]:
    """A search result: a note's content cut to a preview (`get_note` reads it whole)."""
    content = record.get("content")
    if isinstance(content, str) and len(content) > PREVIEW_CHARS:
        return {**record, "content": content[:PREVIEW_CHARS], "contentChars": len(content)}
    return record


def _walk_in_path_order(folder: Path, *, after: str | None) -> Iterator[Path]:
    """The files under `folder` in the string order of their paths, from after `after`.
    A folder sorts as its name plus "/", so files come out in the order of their paths, and
    a subtree that lies wholly before `after` is skipped unread. Hidden entries are left out."""
    try:
        entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    except OSError:
        return
    keyed = sorted(
        ((e.name + "/" if e.is_dir(follow_symlinks=False) else e.name), e) for e in entries
    )
    prefix = str(folder).rstrip("/") + "/"
    for key, entry in keyed:
        full = prefix + key
        if key.endswith("/"):
            if after is not None and full < after and not after.startswith(full):
                continue
            yield from _walk_in_path_order(Path(entry.path), after=after)
        elif after is None or full > after:
            yield Path(entry.path)


def _result(ok: bool, payload: Any) -> DeviceResult:
    return DeviceResult(ok=True, result=payload) if ok else DeviceResult(ok=False, error=payload)
