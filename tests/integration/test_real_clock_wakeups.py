"""The dispatcher on the real clock keeps one timer from sleep to sleep (see
`Dispatcher._sleep_or_wake`): a sleep for an earlier time must set it again."""

from __future__ import annotations

import asyncio

from asyncq import Queue


async def test_a_delayed_job_wakes_a_dispatcher_that_sleeps_until_a_far_poll(
    db_path: str,
) -> None:
    # A poll 60 s away: only the timer for each job's due time can start it in time.
    queue = Queue(db_path, concurrency=2, poll_interval=60)
    ran: list[int] = []
    each = [asyncio.Event() for _ in range(3)]

    @queue.task(name="later")
    async def later(i: int) -> None:
        ran.append(i)
        each[i].set()

    async with queue:
        for i in range(3):  # one at a time: each sleep is for a new, earlier time
            await later.options(delay=0.02).submit(i=i)
            await asyncio.wait_for(each[i].wait(), timeout=10)
    assert ran == [0, 1, 2]
