"""What the database benchmarks share: fresh databases per measurement, and the lines that say
how and where a table was measured."""

import os
import platform
import shlex
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


@contextmanager
def databases(backends: Sequence[str]) -> Iterator[dict[str, Callable[[], str]]]:
    """A fresh database URL per call, for each backend asked for."""
    with tempfile.TemporaryDirectory(prefix="bench-db-") as workdir:
        urls: dict[str, Callable[[], str]] = {
            "sqlite": lambda: str(Path(workdir) / f"{uuid.uuid4().hex[:8]}.db")
        }
        given = os.environ.get("DATABASE_URL")
        if "postgres" not in backends or given:
            if given:
                urls["postgres"] = lambda: given
            yield urls
            return
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        try:
            urls["postgres"] = cluster.create_database
            yield urls
        finally:
            cluster.stop()


def preamble(module: str, argv: Sequence[str], runs: str) -> list[str]:
    """The command, date, machine and runs (with the Postgres used) above a table."""
    command = shlex.join([".venv/bin/python", "-m", module, *argv])
    postgres = (
        "`DATABASE_URL`"
        if os.environ.get("DATABASE_URL")
        else "a throwaway local cluster (tests.support.postgres, TCP loopback, `fsync=off`)"
    )
    machine = (
        f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; load average at the "
        f"end {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return [
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine}",
        f"- Runs: {runs}; Postgres: {postgres}",
    ]
