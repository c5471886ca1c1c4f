"""Secrets and operations: what `/info` shows, where the device's token comes from, who can
read the SQLite files, and what production mode refuses."""

import json
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from checkpoints import open_checkpointer, open_database, open_graph_store
from device import LocalDevice
from harness.processes import ServerProcess, clean_env, relaygraph
from llm import load_chat_model
from server.settings import (
    PRODUCTION_NEEDS_PASSWORD,
    PRODUCTION_NEEDS_POSTGRES,
    PRODUCTION_NEEDS_TLS,
    Settings,
)
from server.storage import accounts

RELAYGRAPH = Path(sys.executable).parent / "relaygraph"
SECRET_URL = "http://ana:s3cret-pw@models.internal:8000/v1?api-key=k3y-in-query#frag"


def test_the_model_label_shows_no_credentials() -> None:
    label = load_chat_model({"OPENAI_BASE_URL": SECRET_URL}).label
    assert "models.internal:8000/v1" in label
    for secret in ("ana", "s3cret-pw", "k3y-in-query", "frag"):
        assert secret not in label


@pytest.mark.slow
def test_info_shows_no_model_credentials(tmp_path: Path) -> None:
    env = clean_env(OPENAI_BASE_URL=SECRET_URL)
    server = ServerProcess(database_url=str(tmp_path / "s.db"), workdir=tmp_path, env=env)
    server.start()
    try:
        info = httpx.get(f"{server.url}/info", timeout=30).text
    finally:
        server.stop()
    assert "models.internal" in info
    assert "s3cret-pw" not in info and "k3y-in-query" not in info


def _device(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [RELAYGRAPH, "device", "--server", "http://127.0.0.1:9", "--root", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    return done.stdout + done.stderr


def test_the_device_reads_its_token_from_a_file_or_the_environment(tmp_path: Path) -> None:
    """The token's own check (a malformed one is refused up front) shows where it was read."""
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    assert "not a device token" in _device(tmp_path, "--token-file", str(token_file))
    from_env = _device(tmp_path, env=clean_env(RELAYGRAPH_DEVICE_TOKEN="from-the-env"))
    assert "not a device token" in from_env
    assert "no device token" in _device(tmp_path)
    assert "No such file" in _device(tmp_path, "--token-file", str(tmp_path / "missing"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "new" / "relaygraph.db"
    async with open_database(str(state)) as db:
        await db.execute(("CREATE TABLE t (x INTEGER)", ()), ("INSERT INTO t VALUES (1)", ()))
        assert _mode(state.parent) == 0o700
        assert _mode(state) == 0o600
        assert _mode(Path(f"{state}-wal")) == 0o600
    saver_file = tmp_path / "saver" / "checkpoints.db"
    async with open_checkpointer(str(saver_file)):
        assert _mode(saver_file) == 0o600
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    async with open_database(str(old)):
        assert _mode(old) == 0o600, "a file from before is made private too"
    device_db = tmp_path / "device" / "entities.db"
    LocalDevice([tmp_path], device_db)
    assert _mode(device_db) == 0o600


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        ({"database_url": "state.db"}, PRODUCTION_NEEDS_POSTGRES.format(kind="sqlite")),
        ({"database_url": "postgresql://app@db.internal/relaygraph"}, PRODUCTION_NEEDS_PASSWORD),
        (
            {"database_url": "postgresql://app:pw@db.internal/relaygraph", "host": "0.0.0.0"},
            PRODUCTION_NEEDS_TLS.format(host="0.0.0.0"),
        ),
    ],
)
def test_production_refuses_what_is_unsafe_beyond_one_machine(
    settings: dict[str, str], refusal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PGPASSWORD", "PGPASSFILE", "PGHOST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="RELAYGRAPH_PRODUCTION") as refused:
        Settings(production=True, **settings)  # type: ignore[arg-type]
    assert refusal in str(refused.value)


def test_production_accepts_a_safe_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGPASSWORD", "PGPASSFILE", "PGHOST"):
        monkeypatch.delenv(name, raising=False)
    url = "postgresql://app:pw@db.internal/relaygraph"
    assert Settings(production=True, database_url=url).host == "127.0.0.1"
    Settings(production=True, database_url=url, host="0.0.0.0", behind_tls_proxy=True)
    Settings(production=True, database_url="postgresql:///relaygraph?host=/run/postgresql")
    Settings(
        production=True,
        database_url=url,
        host="10.0.0.5",
        tls_certfile="cert.pem",
        tls_keyfile="key.pem",
    )
    with pytest.raises(ValueError, match="both"):
        Settings(tls_certfile="cert.pem")


def test_serve_refuses_unsafe_production_settings_with_a_message(tmp_path: Path) -> None:
    env = clean_env(RELAYGRAPH_PRODUCTION="true", DATABASE_URL="postgresql://app@db/x")
    done = subprocess.run(
        [str(RELAYGRAPH), "serve"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2
    assert "no password" in done.stderr and "Traceback" not in done.stderr


async def test_making_a_file_private_keeps_the_locks_sqlite_holds_on_it(tmp_path: Path) -> None:
    """The server opens its checkpointers, its store and its database on one file; each
    opener makes the file private. A descriptor of the file opened and closed by then would
    drop the process's POSIX locks (fcntl semantics): the next other process to close the
    file (a `relaygraph keys create`) would take the WAL for unused and delete it, and no
    other process would see the server's writes again."""
    path = tmp_path / "relaygraph.db"

    def other_process(sql: str) -> str:
        code = f"import sqlite3; print(sqlite3.connect({str(path)!r}).execute({sql!r}).fetchall())"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    async with (
        open_checkpointer(str(path)),
        open_graph_store(str(path)),
        open_database(str(path)) as db,
    ):
        await db.execute(("CREATE TABLE seen (x INTEGER)", ()), ("INSERT INTO seen VALUES (1)", ()))
        assert other_process("SELECT count(*) FROM seen") == "[(1,)]"
        await db.execute(("INSERT INTO seen VALUES (2)", ()))
        assert other_process("SELECT count(*) FROM seen") == "[(2,)]"
        assert Path(f"{path}-wal").exists()


# ── keys and devices: list, revoke, expire ─────────────────────────────────────


@pytest.mark.slow
async def test_keys_and_devices_can_be_listed_revoked_and_expire(tmp_path: Path) -> None:
    state = str(tmp_path / "s.db")
    server = ServerProcess(database_url=state, workdir=tmp_path)
    server.start()
    try:
        key, other = server.api_key("ana"), server.api_key("ben")
        token = server.device_token("ana", "laptop")

        def ok(api_key: str) -> int:
            headers = {"x-api-key": api_key}
            return httpx.post(f"{server.url}/threads/search", json={}, headers=headers).status_code

        assert ok(key) == 200 and ok(other) == 200
        listed = relaygraph("keys", "list", "--user", "ana", "--database-url", state)
        assert accounts.key_id(key) in listed and key not in listed
        assert accounts.key_id(other) not in listed, "only ana's keys"
        relaygraph("keys", "revoke", accounts.key_id(key), "--database-url", state)
        assert ok(key) == 401, "a revoked key stops working at once, in the running server"
        assert ok(other) == 200

        async with open_database(state) as db:
            expired = await accounts.create_api_key(
                db, user_id="ana", expires_in=timedelta(seconds=-1)
            )
            lasting = await accounts.create_api_key(db, user_id="ana", expires_in=timedelta(days=1))
        assert ok(expired) == 401 and ok(lasting) == 200

        devices = relaygraph("devices", "list", "--database-url", state)
        assert "laptop" in devices and token not in devices
        relaygraph(
            "devices", "revoke", "--user", "ana", "--device", "laptop", "--database-url", state
        )
        url = server.url.replace("http://", "ws://") + "/devices/connect"
        async with connect(url) as socket:
            hello = {"type": "device_hello", "token": token, "device_id": "laptop"}
            await socket.send(json.dumps(hello))
            assert json.loads(await socket.recv())["code"] == "unauthorized"
    finally:
        server.stop()


def test_revoking_what_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    state = str(tmp_path / "s.db")
    done = subprocess.run(
        [RELAYGRAPH, "keys", "revoke", "000000000000", "--database-url", state],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 2 and "no such key" in done.stderr, done
