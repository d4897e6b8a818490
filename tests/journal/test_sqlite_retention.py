"""The SQLite journal stays small: pruning spares parents that children still need,
and the WAL file is bounded once no reader holds an old snapshot."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncq import JobState
from asyncq._journal import Failed, NewJob, SqliteJournal, Succeeded, micros

NOW = 1_800_000_000.0


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    journal = SqliteJournal(str(tmp_path / "j.db"), max_wal_bytes=64 * 1024)
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


async def succeed_all(journal: SqliteJournal, now: float = NOW) -> list[int]:
    claimed = (await journal.claim("a", 10_000, now + 30, now)).jobs
    outcomes = [Succeeded(j.id, j.token, "1", micros(now), j.destination) for j in claimed]
    await journal.record_outcomes("a", now, succeeded=outcomes)
    return [j.id for j in claimed]


async def prune_all(journal: SqliteJournal, keep: int) -> int:
    deleted = 0
    while (pruned := await journal.prune_finished(None, keep)).more:
        deleted += pruned.deleted
    return deleted + pruned.deleted


def wal_size(journal: SqliteJournal) -> int:
    try:
        return os.path.getsize(journal.path + "-wal")
    except FileNotFoundError:
        return 0


async def test_a_finished_parent_stays_while_a_child_has_not_finished(
    journal: SqliteJournal,
) -> None:
    (parent,) = await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)], NOW)
    await succeed_all(journal)
    (child,) = await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)], NOW)
    # The link as the dependencies code writes it (its API is not this test's).
    with sqlite3.connect(journal.path) as conn:
        conn.execute("INSERT INTO deps (parent, child) VALUES (?, ?)", (parent.id, child.id))
    assert await prune_all(journal, keep=0) == 0  # the child is pending: it needs the result
    info = await journal.get(parent.id)
    assert info is not None
    assert info.state is JobState.SUCCEEDED

    await succeed_all(journal)  # the child runs and finishes
    assert await prune_all(journal, keep=0) == 2
    assert await journal.get(parent.id) is None
    assert await journal.get(child.id) is None
    with sqlite3.connect(journal.path) as conn:
        assert conn.execute("SELECT count(*) FROM deps").fetchone() == (0,)


async def test_a_finished_parent_of_a_dead_child_may_go(journal: SqliteJournal) -> None:
    (parent, child) = await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)] * 2, NOW)
    with sqlite3.connect(journal.path) as conn:
        conn.execute("INSERT INTO deps (parent, child) VALUES (?, ?)", (parent.id, child.id))
    first, second = (await journal.claim("a", 2, NOW + 30, NOW)).jobs
    await journal.record_outcomes(
        "a",
        NOW,
        succeeded=[Succeeded(first.id, first.token, "1", micros(NOW), "d")],
        failed=[Failed(second.id, second.token, "E", None, 0, micros(NOW))],
    )
    assert await prune_all(journal, keep=0) == 1
    assert await journal.get(parent.id) is None
    dead = await journal.get(child.id)
    assert dead is not None
    assert dead.state is JobState.DEAD  # dead letters stay until purged


async def test_the_wal_is_bounded_again_once_a_reader_lets_go(journal: SqliteJournal) -> None:
    bound = journal.max_wal_bytes
    reader = sqlite3.connect(journal.path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM jobs").fetchone()  # a snapshot, held open
        for _ in range(20):
            await journal.insert_many([NewJob("t", '{"x": "' + "y" * 500 + '"}', "d", 0, NOW)], NOW)
            await succeed_all(journal)
        # While the reader holds its snapshot, nothing can be copied past it nor the
        # WAL rewound under it: every commit makes the file longer, and a checkpoint
        # gives up after its short wait instead of blocking the writer.
        assert wal_size(journal) > bound
        started = time.monotonic()
        await journal.checkpoint()
        assert time.monotonic() - started < 2.0  # the wait is 0.1 s; generous for a busy CI
        assert wal_size(journal) > bound
        reader.execute("COMMIT")
    finally:
        reader.close()
    await journal.checkpoint()
    assert wal_size(journal) <= bound
    assert len(await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)], NOW)) == 1


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_a_bad_wal_bound_is_refused(tmp_path: Path, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_wal_bytes"):
        SqliteJournal(str(tmp_path / "j.db"), max_wal_bytes=value)  # type: ignore[arg-type]
    assert not (tmp_path / "j.db").exists()
