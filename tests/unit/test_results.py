"""Waiting for a job's outcome: no wake-up may be lost between reading the journal
and starting to wait."""

from __future__ import annotations

import asyncio

from asyncq._records import JobInfo, JobState
from asyncq._results import Waiters


def info(state: JobState, result: object = None) -> JobInfo:
    return JobInfo(
        id=7, task="t", state=state, destination="d", priority=0, payload={}, key=None,
        attempts=1, created_at=0.0, run_at=0.0, started_at=None, finished_at=None,
        result=result, last_error=None,
    )  # fmt: skip


async def test_an_outcome_written_while_the_journal_is_read_wakes_the_waiter() -> None:
    waiters = Waiters()
    reads: list[JobState] = []

    async def get(job_id: int) -> JobInfo:
        if not reads:
            # The read's snapshot still says running, and the outcome is written
            # (and its waiters woken) before the read returns.
            reads.append(JobState.RUNNING)
            waiters.finished([job_id])
            return info(JobState.RUNNING)
        reads.append(JobState.SUCCEEDED)
        return info(JobState.SUCCEEDED, result=42)

    # The first look again at the journal would be a minute later: only the wake-up
    # can make this finish within the timeout.
    assert await waiters.result(get, 7, timeout=5, poll=60) == 42
    assert reads == [JobState.RUNNING, JobState.SUCCEEDED]


async def test_waiting_on_finished_jobs_leaves_nothing_behind() -> None:
    waiters = Waiters()

    async def get(job_id: int) -> JobInfo:
        return info(JobState.SUCCEEDED, result=job_id)

    for _ in range(3):
        assert await waiters.result(get, 7, timeout=5, poll=60) == 7
    assert waiters._finished == {}
    assert waiters._watchers == {}


async def test_two_waiters_of_one_job_are_both_woken() -> None:
    waiters = Waiters()
    done = False
    reads = asyncio.Event()
    count = 0

    async def get(job_id: int) -> JobInfo:
        nonlocal count
        count += 1
        if count == 2:
            reads.set()
        return info(JobState.SUCCEEDED if done else JobState.RUNNING, result=1)

    both = asyncio.gather(
        waiters.result(get, 7, timeout=5, poll=60), waiters.result(get, 7, timeout=5, poll=60)
    )
    await reads.wait()
    await asyncio.sleep(0)  # both are waiting now
    done = True
    waiters.finished([7])
    assert await both == [1, 1]
    assert waiters._finished == {}
    assert waiters._watchers == {}
