"""The test kit: a clock that moves only when the test says, and `run_until_idle`.

clock = ManualClock()
queue = Queue(path, clock=clock)
async with queue:
    await send_email.submit(to="a@example.com")
    await run_until_idle(queue)       # the job ran
    clock.advance(3600)               # an hour passes, in no time
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from ._queue import Queue


class ManualClock:
    """A clock that moves only when `advance` is called. Starts at `start`
    (seconds since the epoch); `sleep` waits until the clock reaches its deadline."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            future = heapq.heappop(self._sleepers)[2]
            if not future.done():
                future.set_result(None)

    def set(self, when: float) -> None:
        """Move time forward to `when`."""
        self.advance(max(0.0, when - self._now))


async def run_until_idle(queue: Queue, timeout: float = 30.0) -> None:
    """Wait until the queue has nothing ready to run, running, or unwritten, and
    every periodic tick due at the clock's time has made its job.

    Jobs scheduled later (a delay, a retry) are left waiting: advance the clock
    and call this again. `timeout` is real seconds, a guard against a test that hangs.
    """
    async with asyncio.timeout(timeout):
        await queue._periodic_settled()
        await queue._wait_idle()
