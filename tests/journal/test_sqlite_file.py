"""The SQLite journal's file: permissions, damage, versions, locks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncq import JournalCorrupt, JournalError
from asyncq._journal import NewBatch, NewJob, SqliteJournal
from asyncq._journal._schema import MIGRATIONS, SCHEMA_VERSION

NOW = 1_800_000_000.0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_zero")
async def test_journal_and_its_wal_files_are_0600_even_under_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)], NOW)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600] * 3
    finally:
        await journal.close()


async def test_a_file_that_is_not_a_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = digest(path)
    with pytest.raises(JournalCorrupt, match=r"notes\.db"):
        await SqliteJournal(str(path)).open()
    assert digest(path) == before
    assert not Path(f"{path}-wal").exists()


async def test_a_damaged_journal_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    journal = SqliteJournal(str(path))
    await journal.open()
    await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)] * 50, NOW)
    await journal.close()
    data = bytearray(path.read_bytes())
    data[100:400] = os.urandom(300)  # the schema page, past the 100-byte header
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(JournalCorrupt, match=r"damaged\.db"):
        await SqliteJournal(str(path)).open()
    assert digest(path) == before


async def test_a_journal_from_a_newer_asyncq_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE jobs (id INTEGER)")
    with pytest.raises(JournalError, match="newer asyncq"):
        await SqliteJournal(str(path)).open()


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(JournalError, match="something else"):
        await SqliteJournal(str(path)).open()


async def test_a_new_journal_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    journal = SqliteJournal(str(path))
    await journal.open()
    await journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_write_lock_held_elsewhere_delays_writes_but_never_fails_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    journal = SqliteJournal(str(path), busy_timeout=0.05)
    await journal.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        insert = asyncio.create_task(journal.insert_many([NewJob("t", "{}", "d", 0, NOW)], NOW))
        done, _ = await asyncio.wait({insert}, timeout=0.3)  # several busy timeouts pass
        assert not done
        other.execute("COMMIT")
        (inserted,) = await asyncio.wait_for(insert, timeout=5)
        assert inserted.created
    finally:
        other.close()
        await journal.close()


async def test_many_journals_can_open_one_new_file_at_the_same_time(tmp_path: Path) -> None:
    for trial in range(30):
        path = tmp_path / f"new-{trial}.db"
        journals = [SqliteJournal(str(path)) for _ in range(4)]
        results = await asyncio.gather(*(j.open() for j in journals), return_exceptions=True)
        try:
            assert results == [None] * 4, results
        finally:
            for journal in journals:
                await journal.close()


async def test_a_version_1_journal_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        MIGRATIONS[0](conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO jobs (task, payload, destination, state, created_at, run_at) "
            "VALUES ('t', ?, 'crm', 'pending', ?, ?)",
            ('{"i": 7}', NOW, NOW),
        )
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        (job,) = (await journal.claim("a", 10, NOW + 30, NOW)).jobs
        assert (job.destination, job.payload) == ("crm", {"i": 7})
    finally:
        await journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7


async def test_a_version_6_journal_lists_ready_destinations_by_counts_not_by_row(
    tmp_path: Path,
) -> None:
    # Version 7 lists a destination as ready once per turn (its counts' upsert), not per row.
    path = tmp_path / "v6.db"
    with sqlite3.connect(path) as conn:
        for migrate in MIGRATIONS[:6]:
            migrate(conn)
        conn.execute("PRAGMA user_version = 6")
        conn.execute(
            "INSERT INTO jobs (task, payload, destination, state, created_at, run_at) "
            "VALUES ('t', '{\"i\": 1}', 'crm', 'pending', ?, ?)",
            (NOW, NOW),
        )
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        (old,) = (await journal.claim("a", 10, NOW + 30, NOW)).jobs
        assert old.payload == {"i": 1}  # marked by the trigger before the migration
        assert not (await journal.claim("a", 10, NOW + 30, NOW)).jobs  # crm forgotten
        await journal.insert_many([NewJob("t", '{"i": 2}', "crm", 0, NOW)], NOW)
        await journal.insert_batch(
            NewBatch("t", '[{"i": 3}, {"i": 4}]', 2, "mail", 0, NOW, 65536), NOW
        )
        claimed = (await journal.claim("a", 10, NOW + 30, NOW)).jobs
        assert sorted((j.destination, j.payload["i"]) for j in claimed) == [
            ("crm", 2),
            ("mail", 3),
            ("mail", 4),
        ]
    finally:
        await journal.close()
    with sqlite3.connect(path) as conn:
        triggers = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        assert triggers == {
            "jobs_ready_on_update",
            "counts_ready_on_insert",
            "counts_ready_on_update",
        }


async def test_a_version_2_journal_with_a_key_held_twice_keeps_both_jobs(tmp_path: Path) -> None:
    # Before version 3 a scheduled job was outside the unique index, so two live
    # jobs could share a key. Migrating keeps both jobs; the older keeps the key.
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        MIGRATIONS[0](conn)
        MIGRATIONS[1](conn)
        conn.execute("PRAGMA user_version = 2")
        for state, run_at in (("scheduled", NOW + 60), ("pending", NOW)):
            conn.execute(
                "INSERT INTO jobs (task, payload, destination, key, state, created_at, run_at) "
                "VALUES ('t', '{}', 'crm', 'k', ?, ?, ?)",
                (state, NOW, run_at),
            )
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        first, second = [await journal.get(i) for i in (1, 2)]
        assert first is not None
        assert second is not None
        assert (first.key, second.key) == ("k", None)
        stats = await journal.stats(NOW)
        assert (stats.destinations["crm"].ready, stats.destinations["crm"].scheduled) == (1, 1)
    finally:
        await journal.close()


async def test_a_version_4_journal_gains_activity_heartbeats_and_rates(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as conn:
        for migrate in MIGRATIONS[:4]:
            migrate(conn)
        conn.execute("PRAGMA user_version = 4")
        conn.execute(
            "INSERT INTO jobs (task, payload, destination, state, created_at, run_at) "
            "VALUES ('t', '{}', 'crm', 'pending', ?, ?)",
            (NOW, NOW),
        )
        conn.execute("INSERT INTO counts VALUES ('crm', 'pending', 1)")
        conn.execute(
            "INSERT INTO destinations (name, paused, full_at) VALUES ('crm', 1, ?)", (NOW,)
        )
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        before = (await journal.stats(NOW)).destinations["crm"]
        assert (before.ready, before.paused, before.limit, before.arrival_rate) == (
            1,
            True,
            None,
            0,
        )
        await journal.save_rates({"crm": 4.0})
        await journal.insert_many([NewJob("t", "{}", "crm", 0, NOW)], NOW)
        after = (await journal.stats(NOW + 1)).destinations["crm"]
        assert (after.ready, after.paused, after.limit) == (2, True, 4.0)
        assert after.arrival_rate > 0
        (record,) = await journal.load_destinations()
        assert (record.paused, record.full_at) == (True, NOW)  # kept as it was
    finally:
        await journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"activity", "workers"} <= tables


def test_the_key_lookup_and_the_stats_use_indexes_not_scans(tmp_path: Path) -> None:
    from asyncq._journal import _sqlite_sql as _sqlite

    path = tmp_path / "plan.db"
    asyncio.run(_open_and_close(path))
    queries = {
        name: getattr(_sqlite, name)
        for name in (
            "FIND_LIVE_KEY",
            "DUE_SCHEDULED",
            "RUNNING",
            "TOP_PRIORITY",
            "NEXT_PRIORITY",
            "FIRST_AT_PRIORITY",
            "EXPIRED",
        )
    }
    with sqlite3.connect(path) as conn:
        for name, sql in queries.items():
            plan = " ".join(
                row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))
            )
            assert "USING INDEX" in plan, (name, plan)
            assert "SCAN jobs " not in plan.replace("SCAN jobs USING INDEX jobs_running", ""), (
                name,
                plan,
            )


async def _open_and_close(path: Path) -> None:
    journal = SqliteJournal(str(path))
    await journal.open()
    await journal.close()
