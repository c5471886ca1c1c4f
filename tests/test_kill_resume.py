"""SIGKILL a local-agent run mid-flight, resume it in a new process: every device call is
executed exactly once and no entity is created twice, on SQLite and on Postgres."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from device import LocalDevice
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# What the offline extractor makes of sample/ (see test_offline_extractor.py).
EXPECTED_ROWS = {"projects": 2, "tasks": 8, "notes": 4, "timelines": 3}
KILL_POINTS = {
    "waiting-on-device": ["--hold-device", "create_note"],  # after its batch's tasks ran
    "mid-model-step": ["--hold-model", "3"],
}


def agent_process(tmp: Path, workspace: Path, state: str, *hold: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.agent_process",
            "--workspace",
            str(workspace),
            "--entities",
            str(tmp / "entities.db"),
            "--state",
            state,
            "--log",
            str(tmp / "calls.log"),
            "--marker",
            str(tmp / "holding"),
            *hold,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before its hold: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run never reached its hold")
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("kill_point", sorted(KILL_POINTS))
def test_killed_run_resumes_without_repeating_side_effects(
    backend: str, kill_point: str, tmp_path: Path, workspace: Path, request: pytest.FixtureRequest
) -> None:
    state = (
        str(request.getfixturevalue("postgres_url"))
        if backend == "postgres"
        else str(tmp_path / "state.db")
    )
    first = agent_process(tmp_path, workspace, state, *KILL_POINTS[kill_point])
    wait_for(tmp_path / "holding", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    executed_before = (tmp_path / "calls.log").read_text().split()

    second = agent_process(tmp_path, workspace, state)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])

    assert result["resumed"] is True
    assert result["report"]["status"] == "success", result["report"]["errors"]
    executions = Counter((tmp_path / "calls.log").read_text().split())
    assert executions and max(executions.values()) == 1, "a device call ran twice"
    assert set(executed_before) <= set(executions)
    device = LocalDevice([workspace], tmp_path / "entities.db")
    try:
        assert device.count_rows() == EXPECTED_ROWS
        for table in EXPECTED_ROWS:
            titles = [r.get("title") or r.get("name") for r in device.rows(table)]
            assert len(titles) == len(set(titles)), f"duplicate {table}"
    finally:
        device.close()
    created = result["report"]["created"]
    assert created == EXPECTED_ROWS, "the report counts what the device holds"
