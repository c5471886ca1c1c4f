"""Real `relaygraph serve` and `relaygraph device` processes for end-to-end tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

RELAYGRAPH = str(Path(sys.executable).parent / "relaygraph")
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without model or database settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "RELAYGRAPH_")) and k != "DATABASE_URL"
    }
    return {**env, **extra}


def relaygraph(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a short `relaygraph` command; its stdout."""
    done = subprocess.run(
        [RELAYGRAPH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or clean_env(),
        cwd=cwd,
    )
    if done.returncode != 0:
        raise AssertionError(f"relaygraph {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


class _Managed:
    """A process started in its own session, with its log in the work folder."""

    kind: str
    workdir: Path
    process: subprocess.Popen[bytes] | None
    starts: int

    def log(self) -> str:
        return (self.workdir / f"{self.kind}-{self.starts}.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ServerProcess(_Managed):
    """`relaygraph serve` on a free port over `database_url`; restartable."""

    database_url: str
    workdir: Path
    env: dict[str, str] = field(default_factory=clean_env)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kind: str = "server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        self.starts += 1
        log = (self.workdir / f"server-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [RELAYGRAPH, "serve", "--port", str(self.port), "--database-url", self.database_url],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not answer /ok:\n{self.log()}")

    def api_key(self, user: str) -> str:
        return relaygraph(
            "keys",
            "create",
            "--user",
            user,
            "--database-url",
            self.database_url,
            env=self.env,
            cwd=self.workdir,
        )

    def device_token(self, user: str, device: str) -> str:
        return relaygraph(
            "devices",
            "add",
            "--user",
            user,
            "--device",
            device,
            "--database-url",
            self.database_url,
            env=self.env,
            cwd=self.workdir,
        )


@dataclass
class DeviceProcess(_Managed):
    """`relaygraph device` over `root` with its own entity database; restartable."""

    server: str
    token: str
    root: Path
    db: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kind: str = "device"

    def start(self) -> "DeviceProcess":
        self.starts += 1
        log = (self.workdir / f"device-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                RELAYGRAPH,
                "device",
                "--server",
                self.server,
                "--root",
                str(self.root),
                "--db",
                str(self.db),
            ],
            cwd=self.workdir,
            env={**clean_env(), "RELAYGRAPH_DEVICE_TOKEN": self.token},  # kept out of `ps`
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self
