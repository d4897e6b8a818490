"""The read-only reader of the CLI: the queue's answers, from a file it never changes."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncq import JobState, Queue, Retry
from asyncq._journal._sqlite_readonly import ReadOnlyJournal
from asyncq.testing import ManualClock, run_until_idle


async def make_journal(queue: Queue) -> None:
    """Seven jobs: three succeeded ("send"), two dead ("post"), two pending."""
    queue.destination("crm", retry=Retry.never())

    @queue.task(name="send", destination="email")
    async def send(i: int) -> int:
        return i * 10

    @queue.task(name="post", destination="crm")
    async def post(i: int) -> None:
        raise ConnectionError(f"crm down ({i})")

    async with queue:
        await send.submit_many([{"i": i} for i in range(3)])
        await post.submit_many([{"i": i} for i in range(2)])
        await run_until_idle(queue)
        await send.options(delay=60).submit(7)
        await send.options(delay=60, destination="sms").submit(8)


async def test_it_answers_as_the_queue_does(
    make_queue: Callable[..., Queue], db_path: str, clock: ManualClock
) -> None:
    queue = make_queue()
    await make_journal(queue)
    reader = ReadOnlyJournal(db_path)
    async with Queue(db_path, concurrency=0, clock=clock) as again:
        assert reader.stats(clock.now()) == await again.stats()
        assert reader.dead_letters("crm") == await again.dead_letters("crm")
        for job_id in range(1, 8):
            detail = reader.get(job_id)
            assert detail is not None
            assert detail.info == await again.get(job_id)
    assert reader.get(8) is None


async def test_jobs_are_paged_in_id_order_and_filtered(
    make_queue: Callable[..., Queue], db_path: str
) -> None:
    await make_journal(make_queue())
    reader = ReadOnlyJournal(db_path)

    def ids(**selection: Any) -> list[int]:
        return [job.id for job in reader.jobs(**selection)]

    assert ids() == [1, 2, 3, 4, 5, 6, 7]
    assert ids(limit=3) == [1, 2, 3]
    assert ids(limit=3, after=3) == [4, 5, 6]
    assert ids(limit=3, after=6) == [7]
    assert ids(state=JobState.DEAD) == [4, 5]
    assert ids(state=JobState.PENDING) == [6, 7]  # scheduled: pending, not due yet
    assert ids(state=JobState.SUCCEEDED, after=1) == [2, 3]
    assert ids(destination="email") == [1, 2, 3, 6]
    assert ids(task="send", destination="sms") == [7]
    assert ids(task="nothing") == []


async def test_a_read_during_which_a_queue_opened_the_journal_is_done_again(
    make_queue: Callable[..., Queue], db_path: str, tmp_path: Path
) -> None:
    """A journal at rest is read as immutable (which creates no -wal file); if a
    writer came meanwhile, that read may have missed its writes: it is read again."""
    await make_journal(make_queue())
    reader = ReadOnlyJournal(db_path)
    reads: list[int] = []

    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as writer:

        def count(conn: sqlite3.Connection) -> int:
            if not reads:  # the first read: a job arrives while it runs
                writer.execute(
                    "INSERT INTO jobs (task, payload, destination, state, created_at, run_at) "
                    "VALUES ('send', '{}', 'email', 'pending', 0, 0)"
                )
            (n,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
            reads.append(n)
            return int(n)

        assert reader.read(count) == 8
    assert reads == [7, 8]
