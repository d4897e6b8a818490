"""The reading commands never create or change a journal, and every command refuses
a path that is not a journal with one line naming it, without creating anything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncq import Queue, Retry
from asyncq._journal._schema import MIGRATIONS, SCHEMA_VERSION
from asyncq.cli import main
from asyncq.testing import run_until_idle

READING = [
    ["stats"],
    ["stats", "--json"],
    ["top", "--once"],
    ["jobs"],
    ["jobs", "--json", "--state", "dead"],
    ["show", "1"],
    ["show", "2", "--json"],
    ["dead"],
    ["dead", "--json"],
]
WRITING = [
    ["redrive", "--destination", "crm"],
    ["purge", "--all"],
    ["pause", "crm"],
    ["resume", "crm"],
    ["cancel", "1"],
]


def argv(command: list[str], path: Path | str) -> list[str]:
    """The command with the journal path after its name."""
    return [command[0], str(path), *command[1:]]


def files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, but the -shm file's: a WAL reader marks its
    snapshot there, which is how readers and the writer keep out of each other's way."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
        if not p.name.endswith("-shm")
    }


async def fill(queue: Queue) -> None:
    """Jobs in several states: succeeded, dead, pending."""
    queue.destination("crm", retry=Retry.never())

    @queue.task(name="send", destination="email")
    async def send(i: int) -> int:
        return i

    @queue.task(name="post", destination="crm")
    async def post(i: int) -> None:
        raise ConnectionError(f"crm down ({i})")

    await send.submit_many([{"i": i} for i in range(3)])
    await post.submit_many([{"i": i} for i in range(2)])
    await run_until_idle(queue)
    await send.options(delay=3600).submit(9)


async def run(command: list[str]) -> int:
    # The command runs its own event loop: run it in a thread, as a shell would.
    return await asyncio.to_thread(main, command)


async def test_reading_commands_leave_a_journal_at_rest_as_it_was(
    make_queue: Callable[..., Queue], db_path: str, tmp_path: Path
) -> None:
    async with make_queue() as queue:
        await fill(queue)
    before = files(tmp_path)
    assert list(before) == ["jobs.db"]  # no -wal: no connection has it open
    for command in READING:
        assert await run(argv(command, db_path)) == 0, command
        assert files(tmp_path) == before, command  # no -wal or -shm left behind either


async def test_reading_commands_leave_a_journal_in_use_as_it_was(
    make_queue: Callable[..., Queue], db_path: str, tmp_path: Path
) -> None:
    async with make_queue() as queue:
        await fill(queue)
        # The queue has it open, with its latest writes in the WAL, not yet checkpointed.
        before = files(tmp_path)
        assert os.path.getsize(db_path + "-wal") > 0
        for command in READING:
            assert await run(argv(command, db_path)) == 0, command
            assert files(tmp_path) == before, command


async def test_reading_commands_see_writes_still_in_the_wal(
    make_queue: Callable[..., Queue], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_queue() as queue:
        await fill(queue)
        assert await run(["jobs", db_path, "--json"]) == 0
        assert '"id": 6' in capsys.readouterr().out  # the delayed job, written last


@pytest.mark.parametrize("command", READING + WRITING + [["vacuum"]], ids=" ".join)
def test_a_missing_journal_is_refused_and_not_created(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    assert main(argv(command, path)) == 1
    error = capsys.readouterr().err
    assert error == f"asyncq: journal {str(path)!r}: no such file\n"
    assert list(tmp_path.iterdir()) == []


def make_other_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.commit()


def make_journal(path: Path, version: int = SCHEMA_VERSION) -> None:
    """A real, empty journal of a schema version, made by the migrations."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for migrate in MIGRATIONS[:version]:
            migrate(conn)
        conn.execute(f"PRAGMA user_version = {version}")


def make_older_journal(path: Path) -> None:
    make_journal(path, SCHEMA_VERSION - 1)


def make_newer_journal(path: Path) -> None:
    make_journal(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def make_damaged_journal(path: Path) -> None:
    make_journal(path)
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page after the first
    path.write_bytes(bytes(data))


BAD_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "directory": (lambda p: p.mkdir(), "is a directory, not a journal file"),
    "empty": (lambda p: p.write_bytes(b""), "an empty file, not an asyncq journal"),
    "text": (
        lambda p: p.write_text("hello\n"),
        "not a SQLite database (bad header), not an asyncq journal",
    ),
    "other sqlite": (make_other_sqlite, "is a SQLite database of something else, not asyncq's"),
    "older": (
        make_older_journal,
        f"has schema version {SCHEMA_VERSION - 1}, older than this asyncq's {SCHEMA_VERSION}: "
        "start a worker or open a Queue on it once to migrate it, then read it",
    ),
    "newer": (
        make_newer_journal,
        f"schema version {SCHEMA_VERSION + 1} was written by a newer asyncq "
        f"(this one knows up to {SCHEMA_VERSION})",
    ),
    "damaged": (make_damaged_journal, "damaged or not a database"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("command", [["stats"], ["jobs", "--json"], ["show", "1"]], ids=" ".join)
def test_a_file_that_is_not_a_readable_journal_is_refused_in_one_line(
    case: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, reason = BAD_FILES[case]
    path = tmp_path / "jobs.db"
    make(path)
    before = files(tmp_path) if path.is_file() else None
    assert main(argv(command, path)) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"asyncq: journal {str(path)!r}: {reason}")
    assert error.count("\n") == 1
    if before is not None:
        assert files(tmp_path) == before


@pytest.mark.parametrize("case", ["directory", "text", "newer"])
def test_writing_commands_refuse_what_is_not_a_journal_in_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, _ = BAD_FILES[case]
    path = tmp_path / "jobs.db"
    make(path)
    for command in WRITING:
        assert main(argv(command, path)) == 1, command
        error = capsys.readouterr().err
        assert error.startswith(f"asyncq: journal {str(path)!r}: "), command
        assert error.count("\n") == 1, command


async def test_an_unknown_job_id_is_one_line(
    make_queue: Callable[..., Queue], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_queue() as queue:
        await fill(queue)
    unknown = f"asyncq: no job with id 99 in the journal {db_path!r}\n"
    for command in (["show", db_path, "99"], ["show", db_path, "99", "--json"]):
        assert await run(command) == 1
        assert capsys.readouterr() == ("", unknown)
    assert await run(["cancel", db_path, "99"]) == 1
    assert capsys.readouterr().err == unknown
