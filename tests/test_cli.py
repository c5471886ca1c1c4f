"""`relaygraph run`: the main job on the embedded defaults, and clear errors for bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device import LocalDevice
from tests.conftest import REPO
from tests.test_kill_resume import EXPECTED_ROWS

RELAYGRAPH = Path(sys.executable).parent / "relaygraph"


def relaygraph(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [str(RELAYGRAPH), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **(env or {})},
    )


@pytest.mark.slow
def test_run_twice_creates_everything_once(tmp_path: Path, workspace: Path) -> None:
    first = relaygraph(tmp_path, "run", str(workspace), "--db", "entities.db")
    assert first.returncode == 0, first.stderr
    assert "offline extractor" in first.stdout
    assert "scanned: 4 changed file(s)" in first.stdout  # progress while it works
    # the progress bar: files processed of the total, chunks, model calls, records
    assert "4/4 files · chunk 1/1 · 3 model calls, 17 created, 0 updated" in first.stdout
    assert "Run success" in first.stdout and "│ total     │      17 │" in first.stdout
    assert (tmp_path / ".relaygraph" / "relaygraph.db").exists(), "state on the embedded default"

    second = relaygraph(tmp_path, "run", str(workspace), "--db", "entities.db")
    assert second.returncode == 0, second.stderr
    assert "scanned: 0 changed file(s)" in second.stdout
    assert "│ total     │       0 │       0 │" in second.stdout
    device = LocalDevice([workspace], tmp_path / "entities.db")
    try:
        assert device.count_rows() == EXPECTED_ROWS
    finally:
        device.close()


@pytest.mark.slow
def test_changed_file_is_processed_update_first(tmp_path: Path, workspace: Path) -> None:
    assert relaygraph(tmp_path, "run", str(workspace), "--db", "e.db").returncode == 0
    backlog = workspace / "mobile-app" / "backlog.txt"
    backlog.write_text(
        backlog.read_text().replace("- [ ] Prototype offline sync", "- [x] Prototype offline sync")
    )
    second = relaygraph(tmp_path, "run", str(workspace), "--db", "e.db")
    assert second.returncode == 0, second.stderr
    assert "scanned: 1 changed file(s)" in second.stdout
    assert "│ tasks     │       0 │       1 │" in second.stdout
    device = LocalDevice([workspace], tmp_path / "e.db")
    try:
        states = {t["title"]: t["state"] for t in device.rows("tasks")}
        assert states["Prototype offline sync"] == "Completed"
        assert device.count_rows() == EXPECTED_ROWS
    finally:
        device.close()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-folder", "is not a folder"),
        ("corrupt-entities", "is not a relaygraph entity database"),
        ("corrupt-state", "is not a SQLite database"),
        ("unreachable-postgres", "Cannot reach Postgres"),
    ],
)
def test_bad_input_gets_a_clear_message_and_no_traceback(
    setup: str, message: str, tmp_path: Path, workspace: Path
) -> None:
    args = ["run", str(workspace), "--db", "entities.db"]
    if setup == "missing-folder":
        args[1] = str(tmp_path / "nope")
    elif setup == "corrupt-entities":
        (tmp_path / "entities.db").write_bytes(b"this is not sqlite" * 100)
    elif setup == "corrupt-state":
        (tmp_path / "state.db").write_bytes(b"garbage" * 1000)
        args += ["--state", "state.db"]
    else:
        args += ["--state", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"]
    result = relaygraph(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_model_that_answers_garbage_fails_the_run_clearly(tmp_path: Path, workspace: Path) -> None:
    """A server that answers every request with prose instead of the triage tool call."""
    from harness.fake_openai import INVALID_TRIAGE, TRIAGE, FakeOpenAI

    with FakeOpenAI() as server:
        for _ in range(3):
            server.inject(INVALID_TRIAGE, when=TRIAGE)
        result = relaygraph(
            tmp_path,
            "run",
            str(workspace),
            "--db",
            "e.db",
            env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"},
        )
    assert result.returncode == 1
    assert "ChatOpenAI" in result.stdout
    assert "Run error" in result.stdout
    assert "no valid grouping" in result.stdout
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_unreachable_model_fails_clearly_and_the_run_continues_later(
    tmp_path: Path, workspace: Path
) -> None:
    from harness.fake_openai import FakeOpenAI

    down = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "test"}
    result = relaygraph(tmp_path, "run", str(workspace), "--db", "e.db", env=down)
    assert result.returncode == 1
    assert "the model failed" in result.stderr and "run the same command again" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout

    with FakeOpenAI() as server:
        up = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        again = relaygraph(tmp_path, "run", str(workspace), "--db", "e.db", env=up)
    assert again.returncode == 0, again.stderr
    assert "continued the interrupted run" in again.stdout
    assert "│ total     │      17 │" in again.stdout


def test_help_lists_the_run_command() -> None:
    result = subprocess.run([str(RELAYGRAPH), "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "run" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--max-prompt-tokens", "100"], {}, "--max-prompt-tokens: 100 tokens is too few"),
        ([], {"RELAYGRAPH_MAX_PROMPT_TOKENS": "lots"}, "RELAYGRAPH_MAX_PROMPT_TOKENS: not a"),
    ],
)
def test_a_budget_too_small_or_not_a_number_is_bad_input(
    tmp_path: Path, workspace: Path, args: list[str], env: dict[str, str], said: str
) -> None:
    result = relaygraph(tmp_path, "run", str(workspace), *args, env=env)
    assert result.returncode == 2
    assert said in result.stderr
    assert not (tmp_path / ".relaygraph").exists() or not list(
        (tmp_path / ".relaygraph").glob("entities.db")
    ), "nothing was run"
