"""An attempt is a handler start: a worker killed with SIGKILL charges an attempt
to the jobs whose handlers it had started, and to none of the jobs that were only
claimed into its prefetch."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time

import pytest

from asyncq._journal import SqliteJournal

from . import app
from .conftest import WorkerSet, wait_until

pytestmark = pytest.mark.process

CONCURRENCY = 4
PREFETCH = 64


def started_in_journal(journal: str) -> int:
    with contextlib.closing(sqlite3.connect(journal, timeout=10)) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE state = 'running' AND started_at IS NOT NULL"
        ).fetchone()
        return int(count)


async def test_a_kill_9_charges_only_the_jobs_whose_handlers_had_started(
    workers: WorkerSet,
) -> None:
    workers.settings.update(
        ASYNCQ_TEST_CONCURRENCY=str(CONCURRENCY),
        ASYNCQ_TEST_PREFETCH=str(PREFETCH),
        ASYNCQ_TEST_LEASE="5",
    )
    jobs = 200
    # Each run outlasts the test: the worker is killed with every handler busy and
    # the rest of its prefetch claimed but not started.
    async with app.producer(workers.journal) as producer:
        await producer.submit_many(app.TASK_NAME, [{"i": i, "seconds": 600} for i in range(jobs)])
    worker = await workers.start()
    path = str(workers.journal)
    deadline = asyncio.get_running_loop().time() + 30
    await wait_until(
        lambda: started_in_journal(path) == CONCURRENCY,
        deadline=deadline,
        what=f"{CONCURRENCY} handler starts written",
        check=lambda: workers.check_alive([worker]),
    )
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        (claimed,) = conn.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()
    assert claimed > CONCURRENCY  # the prefetch holds more than the handlers run
    await workers.kill(worker)

    # Take the leases back as any process would once they expire (time is passed in).
    journal = SqliteJournal(path)
    await journal.open()
    try:
        reclaimed = await journal.reclaim_expired(time.time() + 60)
        infos = [await journal.get(i) for i in range(1, jobs + 1)]
    finally:
        await journal.close()
    assert len(reclaimed) == claimed
    charged = [info for info in infos if info is not None and info.attempts]
    assert len(charged) == CONCURRENCY
    assert all(info.last_error and info.last_error.startswith("LeaseExpired") for info in charged)
    # The crashed attempts ran from their handlers' starts, not from the claim.
    assert all(len(info.history) == 1 for info in charged)
    uncharged = [info for info in infos if info is not None and not info.attempts]
    assert len(uncharged) == jobs - CONCURRENCY
    assert all(info.last_error is None and info.history == [] for info in uncharged)
