"""The progress bar of `relaygraph run`, fed by the local agent's custom stream events
(`chunks_planned`, then one `chunk_done` per chunk: the same events the server sends a
device as `run_progress`)."""

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RunProgress:
    """Files processed of the total, chunks, model calls, records created and updated."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]processing[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[chunks]} · {task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.chunks_done = self.chunks = self.model_calls = self.created = self.updated = 0
        self.failed = 0
        self.task = self.progress.add_task("files", total=None, visible=False, **self._fields())

    def __enter__(self) -> "RunProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _fields(self) -> dict[str, Any]:
        failed = f", {self.failed} failed" if self.failed else ""
        return {
            "chunks": f"chunk {self.chunks_done}/{self.chunks}",
            "counts": f"{self.model_calls} model calls, {self.created} created, "
            f"{self.updated} updated{failed}",
        }

    def on_event(self, event: dict[str, Any]) -> None:
        """One custom-stream event of the run."""
        data = event.get("data") or {}
        if event.get("event") == "chunks_planned":
            self.chunks = int(data.get("chunks", 0))
            self.progress.update(
                self.task, total=int(data.get("files", 0)), visible=True, **self._fields()
            )
        elif event.get("event") == "chunk_done":
            self.chunks_done += 1
            self.model_calls += int(data.get("model_calls", 0))
            self.created += int(data.get("created", 0))
            self.updated += int(data.get("updated", 0))
            self.failed += int(data.get("failed", 0))
            self.progress.update(
                self.task, advance=int(data.get("files_finished", 0)), **self._fields()
            )
