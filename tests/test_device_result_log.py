"""The device's result log (`call_results`): a call id answered once is answered again from
it, never run twice, in a database made before the log had that name (`device_calls`, the
name of the server's outbox) as in a new one."""

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from device import LocalDevice
from nodes.bridge import DeviceCall

CALL = DeviceCall(id="c-1", name="create_task", args={"title": "Send the invoice"})


def test_a_call_is_answered_from_the_log_and_not_run_again(tmp_path: Path) -> None:
    device = LocalDevice([tmp_path], tmp_path / "entities.db")
    first = device.execute_one(CALL)
    again = device.execute_one(CALL)
    assert first["ok"] and again == first
    assert len(device.rows("tasks")) == 1
    assert [r["id"] for r in device.rows("call_results")] == ["c-1"]


def test_a_log_made_under_its_old_name_is_kept_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "entities.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE device_calls (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "ok INTEGER NOT NULL, payload TEXT NOT NULL, executedAt TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO device_calls VALUES ('c-1', 'create_task', 1, ?, '2026-01-01')",
            (json.dumps({"id": "t-earlier"}),),
        )
    device = LocalDevice([tmp_path], path)
    assert device.execute_one(CALL) == {"ok": True, "result": {"id": "t-earlier"}}
    assert device.rows("tasks") == []  # answered from the log: the create did not run again
