"""The device bridge's statements are written out whole (`server/storage/bridge.py`), so
one condition appears in several of them. These checks hold the copies to one meaning: a
change to one copy that the others do not follow fails here, not in production."""

import re

from server.locks import ADVISORY_LOCK, try_lock
from server.storage import bridge, runs


def flat(sql: str) -> str:
    """`sql` on one line, single spaces, no space inside parentheses."""
    text = " ".join(sql.split())
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", text))


CLAIMS = {
    "CLAIM": bridge.CLAIM,
    "CLAIM_AND_READ": bridge.CLAIM_AND_READ,
    "CLAIM_AND_READ_MARKED": bridge.CLAIM_AND_READ_MARKED,
    "CLAIM_AFTER_ANSWER": bridge.CLAIM_AFTER_ANSWER,
    "CLAIM_AFTER_ANSWER_MARKED": bridge.CLAIM_AFTER_ANSWER_MARKED,
}
#: How every statement that starts from an answer finds its call and checks its device.
CALL_LOOKUP = (
    "FROM (SELECT call_id, run_id, user_id, device_id, done FROM device_calls "
    "WHERE call_id = ? LIMIT 1) dc WHERE dc.user_id = ? AND (dc.device_id = ? OR "
    "dc.device_id IS NULL)"
)
MARK_COLUMNS = ", mark.checkpoint_id AS mark_checkpoint, mark.writes AS mark_writes"


def test_every_claim_resumes_only_a_parked_run_with_every_answer_in() -> None:
    answered = flat(runs.ANSWERED_PARKED)
    for name, sql in CLAIMS.items():
        assert f"AND {answered}" in flat(sql), name
    assert flat(runs.ANSWERED_PARKED) in flat(runs.TO_RECOVER)
    assert flat(runs.ANSWERED_PARKED) in flat(runs.STALE_ANSWERED)


def test_every_statement_from_an_answer_finds_its_call_alike() -> None:
    for sql in (
        bridge.INSERT_ANSWER,
        bridge.STORE_ANSWER,
        bridge.STORE_ANSWER_TRY_LOCK,
        bridge.COUNT_ANSWER,
        bridge.CLAIM_AFTER_ANSWER,
        bridge.CLAIM_AFTER_ANSWER_MARKED,
    ):
        assert CALL_LOOKUP in flat(sql), sql
    # the claim after an answer finds it twice: for the claim and for the read
    assert flat(bridge.CLAIM_AFTER_ANSWER).count(CALL_LOOKUP) == 2


def test_the_stores_of_an_answer_are_one_insert_counted_once() -> None:
    insert = flat(bridge.INSERT_ANSWER)
    store = flat(bridge.STORE_ANSWER)
    assert f"WITH stored AS ({insert})" in store
    locked = flat(bridge.STORE_ANSWER_TRY_LOCK)
    assert locked.startswith(store.removesuffix(" FROM stored LEFT JOIN counted ON true"))
    # the lock it tries is the one `ThreadLocks` takes and waits for
    assert try_lock("counted.thread_id") in locked
    assert "hashtextextended(%s, 0)" in ADVISORY_LOCK


def test_a_marked_read_is_the_read_with_the_latest_checkpoint() -> None:
    join = (
        flat(bridge.CLAIM_AND_READ_MARKED).split("LEFT JOIN LATERAL")[1].split(" mark ON true")[0]
    )
    for plain, marked in (
        (bridge.CLAIM_AND_READ, bridge.CLAIM_AND_READ_MARKED),
        (bridge.CLAIM_AFTER_ANSWER, bridge.CLAIM_AFTER_ANSWER_MARKED),
    ):
        unmarked = (
            flat(marked)
            .replace(MARK_COLUMNS, "")
            .replace(f" LEFT JOIN LATERAL{join} mark ON true", "")
        )
        assert unmarked == flat(plain)
    assert join in flat(bridge.CLAIM_AFTER_ANSWER_MARKED)


def test_sqlite_runs_the_claim_and_the_read_that_postgres_runs_as_one() -> None:
    claim = flat(bridge.CLAIM_AND_READ)
    assert f"WITH claimed AS ({flat(bridge.CLAIM)})" in claim
    read = flat(bridge.READ).replace(
        " FROM runs r", ", EXISTS (SELECT 1 FROM claimed) AS claimed FROM runs r"
    )
    assert claim.endswith(read)


def test_a_park_after_a_resume_is_the_park_with_its_calls_closed() -> None:
    park, resumed = flat(bridge.PARK), flat(bridge.PARK_RESUMED)
    closing = (
        f"WITH closed AS ({flat(bridge.CLOSE_OPEN_CALLS)}), "
        f"dropped AS ({flat(bridge.DELETE_ANSWERS)}), "
    )
    assert resumed == closing + park.removeprefix("WITH ")
    # SQLite's statements do the same, one by one
    assert flat(bridge.MARK_INTERRUPTED) in park
    insert = flat(bridge.INSERT_CALLS).split(" SELECT ")[0]
    assert insert in park
