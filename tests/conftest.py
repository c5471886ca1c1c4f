"""Shared fixtures: storage over memory / SQLite / a real Postgres, a workspace, a device."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from device import LocalDevice
from harness.postgres import PostgresCluster

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway cluster per test session; failing to start it fails the tests."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(pg_cluster: PostgresCluster) -> str:
    """A fresh, empty database for one test."""
    return pg_cluster.create_database()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each graph test runs on every checkpointer."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return "memory"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The server's database, on each backend it runs on."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "state.db")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the shipped sample folder the test may change."""
    folder = tmp_path / "workspace"
    shutil.copytree(SAMPLE, folder)
    return folder


@pytest.fixture
def device(tmp_path: Path, workspace: Path) -> Iterator[LocalDevice]:
    """The in-process device over the workspace, with a fresh entity database."""
    local = LocalDevice([workspace], tmp_path / "entities.db")
    try:
        yield local
    finally:
        local.close()
