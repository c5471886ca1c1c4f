"""The device's lookups cost the same however many records it holds.

Every create looks for the record it would duplicate, every chunk finds the records its
files name, and lists are read page by page; a first run over 10,000 files makes ~90,000
records, so a lookup that read its table (or its project) made the run quadratic. The cost is
counted, not timed: SQLite's virtual-machine instructions for one call (a progress handler
called every 100 of them), at 1,000 and at 10,000 records of one project."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from device import LocalDevice
from nodes.bridge import DeviceCall

PROJECT = "p-1"
SIZES = (1_000, 10_000)
ALLOWED_GROWTH = 1.5  # a B-tree lookup grows with log(rows); a scan 10x


def populated(tmp: Path, records: int) -> LocalDevice:
    device = LocalDevice([tmp], tmp / f"entities-{records}.db")
    stamp = "2026-01-01T00:00:00+00:00"
    with device._db:
        device._db.execute(
            "INSERT INTO projects (id, name, createdAt, updatedAt) VALUES (?, 'Acme', ?, ?)",
            (PROJECT, stamp, stamp),
        )
        device._db.executemany(
            "INSERT INTO tasks (id, title, projectId, createdAt, updatedAt) VALUES (?, ?, ?, ?, ?)",
            [
                (f"t-{n:06d}", f"Task number {n}", PROJECT, f"2026-01-01T{n:09d}", stamp)
                for n in range(records)
            ],
        )
    return device


def instructions(device: LocalDevice, lookup: Callable[[LocalDevice], Any]) -> int:
    """Hundreds of SQLite VM instructions `lookup(device)` runs."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    device._db.set_progress_handler(tick, 100)
    try:
        lookup(device)
    finally:
        device._db.set_progress_handler(None, 100)
    return counted[0]


def call(device: LocalDevice, call_id: str, name: str, **args: Any) -> dict[str, Any]:
    result = device.execute_one(DeviceCall(id=call_id, name=name, args=args))
    assert result["ok"], result
    return dict(result)


LOOKUPS: dict[str, Callable[[LocalDevice], Any]] = {
    "create (a new title)": lambda d: call(
        d,
        "c1",
        "create_task",
        title="Something new",
        projectId=PROJECT,
        onDuplicate="return_existing",
    ),
    "create (a duplicate)": lambda d: call(
        d,
        "c2",
        "create_task",
        title="task NUMBER 500",
        projectId=PROJECT,
        onDuplicate="return_existing",
    ),
    "find_records by titles in a project": lambda d: call(
        d,
        "c3",
        "find_records",
        type="tasks",
        titles=["Task number 7", "Task number 900"],
        projectId=PROJECT,
    ),
    "a page of list_tasks after a cursor": lambda d: call(
        d,
        "c4",
        "list_tasks",
        projectId=PROJECT,
        cursor="2026-01-01T000000700|t-000700",
        limit=50,
    ),
    "a page of all tasks after a cursor": lambda d: call(
        d, "c5", "list_tasks", cursor="2026-01-01T000000700|t-000700", limit=50
    ),
}


def test_a_lookup_costs_the_same_at_ten_times_the_records(tmp_path: Path) -> None:
    costs: dict[str, list[int]] = {name: [] for name in LOOKUPS}
    for size in SIZES:
        device = populated(tmp_path, size)
        try:
            for name, lookup in LOOKUPS.items():
                costs[name].append(instructions(device, lookup))
        finally:
            device.close()
    grown = {
        name: (small, large)
        for name, (small, large) in costs.items()
        if large > small * ALLOWED_GROWTH
    }
    assert grown == {}, f"lookups that grow with the records (hundreds of instructions): {grown}"


def test_the_lookups_find_what_they_look_for(tmp_path: Path) -> None:
    device = populated(tmp_path, 1_000)
    try:
        duplicate = LOOKUPS["create (a duplicate)"](device)
        assert duplicate["result"]["existing"] is True
        assert duplicate["result"]["id"] == "t-000500"
        found = LOOKUPS["find_records by titles in a project"](device)
        assert [r["id"] for r in found["result"]["items"]] == ["t-000007", "t-000900"]
        page = LOOKUPS["a page of list_tasks after a cursor"](device)
        assert [r["id"] for r in page["result"]["items"]][:2] == ["t-000701", "t-000702"]
        assert len(page["result"]["items"]) == 50
    finally:
        device.close()
