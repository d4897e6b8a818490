"""`asyncq vacuum FILE` compacts a journal nobody has open, and refuses clearly
what it must not touch: a journal in use, a missing file, a file that is not one."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from asyncq import JobState, Queue
from asyncq._retention import ROUND_EVERY
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> tuple[int, str, str]:
    """The command as a shell runs it: its own process."""
    proc = subprocess.run(
        [sys.executable, "-m", "asyncq.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


async def filled_and_pruned(path: str) -> int:
    """A journal that held 20,000 jobs, of which the newest 100 are kept; the id of
    a kept one."""
    clock = ManualClock()
    queue = Queue(path, concurrency=16, clock=clock, keep_finished_jobs=100)

    @queue.task(name="noop")
    async def noop(text: str) -> None:
        pass

    async with queue:
        jobs = await noop.submit_many([{"text": "x" * 200} for _ in range(20_000)])
        await run_until_idle(queue)
        assert queue._engine is not None
        done = queue._engine.retention.next_round()
        clock.advance(ROUND_EVERY)
        await done
        assert (await queue.stats()).succeeded == 100
    return jobs[-1].id


async def test_vacuum_compacts_the_journal_and_keeps_its_jobs(db_path: str) -> None:
    kept = await filled_and_pruned(db_path)
    before = os.path.getsize(db_path)
    status, out, err = await asyncio.to_thread(run_cli, "vacuum", db_path)
    assert (status, err) == (0, "")
    after = os.path.getsize(db_path)
    assert after < before / 5
    shown = re.fullmatch(
        r"(.+): ([\d.,]+) MB \(file ([\d.,]+) MB, WAL ([\d.,]+) MB\) -> ([\d.,]+) MB\n", out
    )
    assert shown is not None, out
    assert shown[1] == db_path
    assert float(shown[3]) == pytest.approx(before / 1e6, abs=0.05)
    assert float(shown[5]) == pytest.approx(after / 1e6, abs=0.05)
    assert not os.path.exists(db_path + "-wal") or os.path.getsize(db_path + "-wal") == 0
    async with Queue(db_path, concurrency=0) as queue:
        assert (await queue.get(kept)).state is JobState.SUCCEEDED
        assert (await queue.stats()).succeeded == 100


async def test_a_journal_in_use_by_a_worker_is_refused_at_once(db_path: str) -> None:
    async with Queue(db_path, concurrency=0) as queue:  # opens and sets up the journal
        await queue.stats()
    # A worker process has the journal open (idle: no job is running). Its heartbeat
    # at start is checkpointed into the file before the digest is taken, and the
    # next is a third of its long lease away: the worker itself leaves the file be.
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, sys\n"
        "from asyncq import Queue\n"
        "async def main():\n"
        f"    async with Queue({db_path!r}, concurrency=2, lease=3600) as queue:\n"
        "        await queue.stats()\n"
        "        await queue._journal.checkpoint()\n"
        "        print('open', flush=True)\n"
        "        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)\n"
        "asyncio.run(main())\n",
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await worker.stdout.readline() == b"open\n"
        digest = hashlib.sha256(Path(db_path).read_bytes()).hexdigest()
        async with asyncio.timeout(20):  # a hang fails here
            status, out, err = await asyncio.to_thread(run_cli, "vacuum", db_path)
        assert (status, out) == (1, "")
        assert "is in use (a queue or a worker has it open)" in err
        assert hashlib.sha256(Path(db_path).read_bytes()).hexdigest() == digest
    finally:
        worker.stdin.write(b"\n")
        await worker.stdin.drain()
        async with asyncio.timeout(30):
            assert await worker.wait() == 0
    # Once it has stopped, the same command works.
    assert (await asyncio.to_thread(run_cli, "vacuum", db_path))[0] == 0


def test_a_missing_file_is_refused_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.db"
    assert main(["vacuum", str(path)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"id,name\n1,crm\n", "not a SQLite database"),
        (b"", "not a SQLite database"),
        (None, "a SQLite database of something else"),
    ],
)
def test_a_file_that_is_not_a_journal_is_refused_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, says: str
) -> None:
    path = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    assert main(["vacuum", str(path)]) == 1
    assert says in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vacuum", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
