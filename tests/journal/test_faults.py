"""The SQLite journal under bad input and faults: no single row, call or transient
fault may stop it for everyone."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncq import JournalError
from asyncq._journal import Failed, NewJob, SqliteJournal, Succeeded, micros
from tests.faults import SmallDisk

NOW = 1_800_000_000.0


def job(i: int = 0, destination: str = "d") -> NewJob:
    return NewJob("t", f'{{"i":{i}}}', destination, 0, NOW)


@pytest.fixture
async def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    opened = SqliteJournal(str(tmp_path / "j.db"))
    await opened.open()
    yield opened
    await opened.close()


# -- one bad row -----------------------------------------------------------------


async def test_a_row_that_is_not_valid_utf8_does_not_stop_a_claim(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        good, bad, also_good = await journal.insert_many([job(0), job(1), job(2)], NOW)
        # What an older asyncq stored for a payload with a lone surrogate: the
        # surrogate's bytes, which are not UTF-8 (0xED 0xB3 0xBF for U+DCFF).
        with sqlite3.connect(path) as conn:
            conn.execute(
                "UPDATE jobs SET payload = CAST(X'7B2269223A22EDB3BF227D' AS TEXT), "
                "key = CAST(X'EDB3BF' AS TEXT) WHERE id = ?",
                (bad.id,),
            )
        claimed = (await journal.claim("a", 10, NOW + 30, NOW)).jobs
        payloads = {c.id: c.payload for c in claimed}
        assert payloads == {good.id: {"i": 0}, bad.id: None, also_good.id: {"i": 2}}
        # Reading the row back works too, and shows what is there.
        info = await journal.get(bad.id)
        assert info is not None
        assert info.key == "\udced\udcb3\udcbf"
    finally:
        await journal.close()


async def test_errors_and_results_with_lone_surrogates_are_stored_readably(
    journal: SqliteJournal,
) -> None:
    first, second = await journal.insert_many([job(0), job(1)], NOW)
    ok, failing = (await journal.claim("a", 10, NOW + 30, NOW)).jobs
    await journal.record_outcomes(
        "a",
        NOW,
        succeeded=[Succeeded(ok.id, ok.token, '"\\udcff"', micros(NOW), ok.destination)],
        failed=[Failed(failing.id, failing.token, "ValueError: bad \udcff name", None)],
    )
    done, dead = await journal.get(first.id), await journal.get(second.id)
    assert done is not None
    assert dead is not None
    assert done.result == "\udcff"
    assert dead.last_error == "ValueError: bad \\udcff name"
    # And the journal goes on: the next claim and insert work.
    await journal.insert_many([job(2)], NOW)
    assert len((await journal.claim("a", 10, NOW + 30, NOW)).jobs) == 1


# -- one bad call ------------------------------------------------------------------


async def test_a_call_that_raises_fails_only_its_caller_and_the_writer_goes_on(
    journal: SqliteJournal,
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        raise TypeError("a bug in one call")

    inserts = [journal.insert_many([job(i)], NOW) for i in range(5)]
    bad = journal._enqueue_call(broken)
    results = await asyncio.gather(*inserts, bad, return_exceptions=True)
    assert isinstance(results[-1], TypeError)
    assert all(isinstance(r, list) for r in results[:-1])
    # Nothing of the bad call's turn was lost, and the writer still runs.
    assert len((await journal.claim("a", 10, NOW + 30, NOW)).jobs) == 5
    assert await journal.insert_many([job(9)], NOW)


async def test_a_dead_writer_fails_every_waiting_caller_at_once_and_later_calls_too(
    journal: SqliteJournal,
) -> None:
    def slow(conn: sqlite3.Connection) -> None:
        pass

    told: list[BaseException] = []
    journal.on_failure(told.append)
    waiting = asyncio.ensure_future(journal.insert_many([job()], NOW))
    first = journal._enqueue_call(slow)
    writer = journal._writer._task
    assert writer is not None
    writer.cancel()  # what any bug that ends the task would do
    results = await asyncio.gather(waiting, first, return_exceptions=True)
    assert all(isinstance(r, JournalError) for r in results), results
    assert len(told) == 1  # the owner of the journal is told at once, too
    with pytest.raises(JournalError, match="writer stopped"):
        await journal.insert_many([job()], NOW)


async def test_closing_just_after_a_call_nobody_awaits_does_not_hang(tmp_path: Path) -> None:
    # A call handed to the writer without awaiting it (as the journal's own timer
    # does for the counts of stats()) once took the wake that closing gave, and
    # close() waited for ever.
    journal = SqliteJournal(str(tmp_path / "journal.db"))
    await journal.open()
    pending = journal._enqueue_call(lambda conn: None)
    async with asyncio.timeout(10):
        await journal.close()
    assert pending.done()


# -- transient faults --------------------------------------------------------------


async def test_a_full_disk_fails_the_write_as_transient_and_the_journal_recovers(
    small_disk: SmallDisk,
) -> None:
    journal = SqliteJournal(str(small_disk.root / "j.db"))
    await journal.open()
    try:
        (kept,) = await journal.insert_many([job(0)], NOW)
        small_disk.fill()
        big = [NewJob("t", '{"x":"' + "x" * 4000 + '"}', "d", 0, NOW)] * 400
        with pytest.raises(JournalError) as refused:
            await journal.insert_many(big, NOW)
        assert refused.value.transient
        assert "full" in str(refused.value)
        small_disk.free()
        # The same journal, the same connection: it carries on by itself.
        inserted = await journal.insert_many([job(1), job(2)], NOW)
        claimed = (await journal.claim("a", 10, NOW + 30, NOW)).jobs
        assert sorted(c.id for c in claimed) == sorted([kept.id, *(r.id for r in inserted)])
    finally:
        small_disk.free()
        await journal.close()


# -- the file ---------------------------------------------------------------------------


async def test_a_journal_file_deleted_while_open_fails_writes_loudly(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        await journal.insert_many([job()], NOW)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink()
        with pytest.raises(JournalError, match="deleted") as refused:
            await journal.insert_many([job()], NOW)
        assert not refused.value.transient
    finally:
        await journal.close()


async def test_a_journal_file_replaced_while_open_fails_writes_loudly(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    other = SqliteJournal(str(tmp_path / "other.db"))
    await other.open()
    await other.close()
    journal = SqliteJournal(str(path))
    await journal.open()
    try:
        os.replace(tmp_path / "other.db", path)
        with pytest.raises(JournalError, match="replaced"):
            await journal.insert_many([job()], NOW)
    finally:
        await journal.close()


async def test_a_directory_is_refused_with_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="is a directory"):
        await SqliteJournal(str(tmp_path)).open()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A journal file that cannot be written, even by root (chattr +i)."""
    path = tmp_path / "ro.db"
    journal = SqliteJournal(str(path))
    asyncio.run(_create(journal))
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            if os.environ.get("ASYNCQ_REQUIRE_FAULTS") == "1":
                pytest.fail(f"chattr +i failed: {done.stderr}")
            pytest.skip(f"this filesystem cannot make a file immutable: {done.stderr}")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o400)
        yield path


async def _create(journal: SqliteJournal) -> None:
    await journal.open()
    await journal.insert_many([job()], NOW)
    await journal.close()


async def test_a_read_only_journal_is_refused_at_open(read_only: Path) -> None:
    journal = SqliteJournal(str(read_only))
    with pytest.raises(JournalError, match="cannot be written"):
        await journal.open()


async def test_a_journal_open_to_others_is_tightened_to_0600_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "loose.db"
    await _create(SqliteJournal(str(path)))
    path.chmod(0o644)
    wal = Path(f"{path}-wal")
    wal.write_bytes(b"")
    wal.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="asyncq.journal"):
        journal = SqliteJournal(str(path))
        await journal.open()
        await journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tightened to 0600" in caplog.text
    assert "0644" in caplog.text
    assert "0666" in caplog.text
