"""A busy queue's journal stays small: finished jobs beyond `keep_finished_jobs` are
pruned every round, and the WAL file is checkpointed back under its bound."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncq import (
    JobNotFound,
    JobState,
    JournalCorrupt,
    JournalError,
    Queue,
    QueueFailed,
    Retry,
)
from asyncq._journal import Pruned, SqliteJournal
from asyncq._retention import ROUND_EVERY
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]


async def one_round(queue: Queue, clock: ManualClock) -> None:
    """Let the queue's retention do one round (it runs every ROUND_EVERY seconds)."""
    assert queue._engine is not None
    done = queue._engine.retention.next_round()
    clock.advance(ROUND_EVERY)
    async with asyncio.timeout(10):
        await done


def sizes(path: str) -> tuple[int, int]:
    """The journal file's size and its WAL's, in bytes."""
    wal = Path(path + "-wal")
    return os.path.getsize(path), wal.stat().st_size if wal.exists() else 0


async def test_only_the_newest_finished_jobs_are_kept(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(keep_finished_jobs=5)

    @queue.task
    async def step(i: int) -> int:
        return i

    async with queue:
        jobs = await step.submit_many([{"i": i} for i in range(20)])
        await run_until_idle(queue)
        await one_round(queue, clock)
        states = [await queue.get(job.id) for job in jobs[15:]]
        assert [info.state for info in states] == [JobState.SUCCEEDED] * 5
        for job in jobs[:15]:  # the oldest went first
            with pytest.raises(JobNotFound):
                await queue.get(job.id)
        assert (await queue.stats()).succeeded == 5


async def test_keep_finished_none_and_keep_finished_jobs_none_keep_everything(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(keep_finished=None, keep_finished_jobs=None)

    @queue.task
    async def step(i: int) -> int:
        return i

    async with queue:
        await step.submit_many([{"i": i} for i in range(20)])
        await run_until_idle(queue)
        clock.advance(365 * 86400)
        await one_round(queue, clock)
        assert (await queue.stats()).succeeded == 20


async def test_a_long_run_stays_under_a_stated_size(db_path: str, clock: ManualClock) -> None:
    keep, chunk, chunks = 1_000, 1_000, 50
    max_wal = 256 * 1024
    journal = SqliteJournal(db_path, max_wal_bytes=max_wal)
    queue = Queue(db_path, concurrency=16, clock=clock, keep_finished_jobs=keep, journal=journal)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        pass

    # The bound, derived. At most keep + chunk = 2,000 job rows exist at once (the
    # kept finished jobs and the chunk in flight). A row here is at most 160 bytes:
    # 26 columns (a 27-byte header), task "noop", payload '{"i": 999}', destination,
    # state, 5 times of 8 bytes, a claim token, the result "null", and while running
    # the owner (about 30 bytes) and its lease; plus 7 bytes of cell pointer, rowid
    # and length. SQLite rebalances a b-tree page that falls under a third full, so
    # the rows take at most 3 x 2,000 x 160 = 960 KB of pages; the partial indexes
    # hold only the <= 1,000 live rows (<= 3 x 1,000 x 40 = 120 KB), and the schema's
    # ~20 tables and indexes start with a page each (80 KB). File: <= 1.25 MB.
    # Without pruning, the 50,000 rows alone would need over 5 MB.
    file_bound = 1_250_000
    # The WAL between rounds: SQLite checkpoints it after a commit that leaves 1,000
    # pages or more and rewinds it when no reader is in the way (none is here), so it
    # holds at most 1,000 pages (4,120 bytes each with its frame header) plus one
    # turn (a chunk's insert: under 200 pages). After a round: <= max_wal_bytes.
    wal_bound = 1_200 * 4_120
    peak_file = peak_wal = 0
    async with queue:
        for n in range(chunks):
            await noop.submit_many([{"i": i} for i in range(chunk)])
            await run_until_idle(queue)
            peak_wal = max(peak_wal, sizes(db_path)[1])
            await one_round(queue, clock)
            file_size, wal_size = sizes(db_path)
            assert wal_size <= max_wal, n
            peak_file = max(peak_file, file_size)
            if n == 4:
                early_file = file_size
        stats = await queue.stats()
    assert (stats.succeeded, stats.pending, stats.running) == (keep, 0, 0)
    assert peak_file <= file_bound
    assert peak_wal <= wal_bound
    # And it does not creep: after 45 more chunks the file is where it was.
    assert peak_file <= early_file * 1.1


async def test_the_wal_is_bounded_again_once_a_reader_lets_go(
    db_path: str, clock: ManualClock
) -> None:
    max_wal = 64 * 1024
    journal = SqliteJournal(db_path, max_wal_bytes=max_wal)
    queue = Queue(db_path, concurrency=4, clock=clock, journal=journal)

    @queue.task
    async def step(text: str) -> str:
        return text

    async with queue:
        reader = sqlite3.connect(db_path, isolation_level=None)  # another process would do
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM jobs").fetchone()  # a snapshot, held open
            for _ in range(5):
                await step.submit_many([{"text": "x" * 1_000} for _ in range(50)])
                await run_until_idle(queue)
                await one_round(queue, clock)
            # While it holds on, no checkpoint may copy frames past its snapshot nor
            # rewind the WAL under it: every commit makes the file longer. The rounds
            # gave up after their short wait (the writer went on: the jobs ran).
            assert sizes(db_path)[1] > max_wal
            assert (await queue.stats()).succeeded == 250
        finally:
            reader.execute("COMMIT")
            reader.close()
        await one_round(queue, clock)
        assert sizes(db_path)[1] <= max_wal
        await step.submit("after")
        await run_until_idle(queue)


async def test_dead_letters_stay_whatever_the_count(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(keep_finished_jobs=0)

    @queue.task
    async def step(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    queue.destination("*", retry=Retry.never())
    async with queue:
        dead, done = await step.submit(True), await step.submit(False)
        await run_until_idle(queue)
        await one_round(queue, clock)
        assert (await queue.get(dead.id)).state is JobState.DEAD
        with pytest.raises(JobNotFound):
            await queue.get(done.id)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"keep_finished_jobs": -1}, ValueError, "keep_finished_jobs"),
        ({"keep_finished_jobs": 10.5}, TypeError, "keep_finished_jobs"),
        ({"keep_finished_jobs": True}, TypeError, "keep_finished_jobs"),
        ({"keep_finished_jobs": "100"}, TypeError, "keep_finished_jobs"),
        ({"keep_finished": -1}, ValueError, "keep_finished"),
        ({"keep_finished": float("nan")}, ValueError, "keep_finished"),
        ({"keep_finished": "7d"}, TypeError, "keep_finished"),
    ],
)
def test_bad_retention_settings_are_refused_and_nothing_is_written(
    tmp_path: Path, options: dict[str, object], error: type[Exception], named: str
) -> None:
    path = tmp_path / "jobs.db"
    with pytest.raises(error, match=named):
        Queue(path, **options)  # type: ignore[arg-type]
    assert not path.exists()


async def test_a_retention_task_that_dies_fails_the_queue_loudly(
    make_queue: MakeQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue()

    @queue.task
    async def step() -> None:
        pass

    async def damaged() -> None:
        raise JournalCorrupt(queue.path, "database disk image is malformed")

    async with asyncio.timeout(10):
        await queue.start()
        await step.submit()
        await run_until_idle(queue)
        monkeypatch.setattr(queue._journal, "checkpoint", damaged)
        clock.advance(ROUND_EVERY)
        await queue._until_failed()
        with pytest.raises(QueueFailed, match="malformed") as failed:
            await queue.stats()
        assert failed.value.part == "journal retention"
        with pytest.raises(QueueFailed):
            await queue.stop()


async def test_a_transient_fault_in_a_round_is_waited_out(
    make_queue: MakeQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(keep_finished_jobs=0)

    @queue.task
    async def step() -> None:
        pass

    async with asyncio.timeout(10), queue:
        job = await step.submit()
        await run_until_idle(queue)
        real = queue._journal.prune_finished
        faults = 2

        async def full_disk(before: float | None, keep: int | None = None) -> Pruned:
            nonlocal faults
            if faults:
                faults -= 1
                raise JournalError(queue.path, "database or disk is full", transient=True)
            return await real(before, keep)

        monkeypatch.setattr(queue._journal, "prune_finished", full_disk)
        await one_round(queue, clock)  # it returns only once a round went through
        assert faults == 0
        with pytest.raises(JobNotFound):
            await queue.get(job.id)


def test_the_readme_example_of_retention_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Retention: a journal that stays small", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    names: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), names)
    queue, busy, archive = (names[n] for n in ("queue", "busy", "archive"))
    assert isinstance(queue, Queue)
    assert (queue.keep_finished, queue.keep_finished_jobs) == (7 * 86400, 100_000)
    assert isinstance(busy, Queue)
    assert (busy.keep_finished, busy.keep_finished_jobs) == (86_400, 1_000_000)
    assert isinstance(archive, Queue)
    assert (archive.keep_finished, archive.keep_finished_jobs) == (None, None)
    assert list(tmp_path.iterdir()) == []  # making a queue writes nothing
