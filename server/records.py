"""The server's records as storage reads them: typed and immutable, so a mistyped field is a
mypy error, not a `KeyError` in a request. `api()` is a record's JSON in the LangGraph
server's shape; nothing past `server/storage/` handles a row."""

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Json = dict[str, Any]
RunStatus = Literal["pending", "running", "interrupted", "success", "partial", "error", "cancelled"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
FINAL_STATUSES: tuple[RunStatus, ...] = ("success", "partial", "error", "cancelled")


@dataclass(frozen=True)
class Assistant:
    """A graph id with its configuration and context, owned by one user."""

    assistant_id: str
    graph_id: str
    name: str
    description: str | None
    config: Json
    context: Json
    metadata: Json
    version: int
    created_at: str
    updated_at: str

    def api(self) -> Json:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Thread:
    """A conversation: its checkpoints live in the checkpointer, its status here."""

    thread_id: str
    status: ThreadStatus
    metadata: Json
    created_at: str
    updated_at: str

    @property
    def graph_id(self) -> str | None:
        """The graph its last run ran (kept in its metadata, as the LangGraph server does)."""
        graph_id = self.metadata.get("graph_id")
        return str(graph_id) if graph_id is not None else None

    def api(self, *, values: Any = None, interrupts: Json | None = None) -> Json:
        return {
            **dataclasses.asdict(self),
            "values": values,
            "interrupts": interrupts or {},
            "config": {},
        }


@dataclass(frozen=True)
class Run:
    """One job on a thread, from its creation to its end, however many device round trips
    and server restarts it spans."""

    run_id: str
    thread_id: str
    assistant_id: str
    user_id: str
    status: RunStatus
    #: What the run was created with: `input` or `command`, `config`, `context`, `stream_mode`.
    kwargs: Json
    metadata: Json
    #: The device its calls go to; None: any device of its user.
    device_id: str | None
    error: str | None
    counts: Json | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    #: The schedule that started it, if one did.
    cron_id: str | None

    @property
    def duration_ms(self) -> int | None:
        if not self.started_at or not self.finished_at:
            return None
        delta = datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)
        return int(delta.total_seconds() * 1000)

    def api(self) -> Json:
        return {
            **dataclasses.asdict(self),
            "duration_ms": self.duration_ms,
            "multitask_strategy": "reject",
        }


@dataclass(frozen=True)
class Cron:
    """A schedule that starts runs of an assistant, on one thread or a new one each time."""

    cron_id: str
    user_id: str
    assistant_id: str
    thread_id: str | None
    schedule: str
    timezone: str
    end_time: str | None
    enabled: bool
    #: The runs' `input`, `context` and `config`.
    payload: Json
    metadata: Json
    on_run_completed: Literal["keep", "delete"]
    next_run_at: str | None
    #: Due while no device of its user was online.
    overdue: bool
    last_run_at: str | None
    created_at: str
    updated_at: str

    def api(self) -> Json:
        rename = {"next_run_at": "next_run_date"}
        return {rename.get(k, k): v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class OutboxCall:
    """A device call in the outbox: stored by a park, sent, open until its run steps past it."""

    call_id: str
    run_id: str
    thread_id: str
    assistant_id: str
    interrupt_id: str
    device_id: str | None
    name: str
    args: Json
