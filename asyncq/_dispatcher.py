"""The dispatcher: a bounded prefetch of claimed jobs in per-destination lanes.

Workers take jobs synchronously (`take`) and only wait when every lane is
empty. Lanes are served round-robin, so one destination's backlog never sits
in front of another's; within a lane, a higher priority goes first, then the
order of the claim (FIFO).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable

from ._clock import Clock
from ._journal import ClaimedJob, Journal

log = logging.getLogger("asyncq.dispatcher")


class Dispatcher:
    """Claims ready jobs from the journal and hands them to workers."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        *,
        owner: str,
        prefetch: int,
        lease: float,
        poll_interval: float,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._owner = owner
        self._prefetch = prefetch
        self._low_water = max(1, prefetch // 2)
        self._lease = lease
        self._poll_interval = poll_interval
        self._lanes: dict[str, list[tuple[int, int, ClaimedJob]]] = {}
        self._runnable: deque[str] = deque()
        self._buffered = 0
        self._order = itertools.count()
        self._waiting_workers: deque[asyncio.Future[ClaimedJob | None]] = deque()
        self._wakeup = asyncio.Event()
        self._maybe_more = True  # False once a claim came back short; reset by news
        self._closed = False
        self._claiming = False
        #: Called when the dispatcher finds nothing ready and nothing buffered.
        self.on_idle: Callable[[], None] | None = None

    # -- the worker side ---------------------------------------------------

    def take(self) -> ClaimedJob | None:
        """The next job to run, or None when every lane is empty."""
        runnable = self._runnable
        if not runnable:
            return None
        destination = runnable.popleft()
        lane = self._lanes[destination]
        job = heapq.heappop(lane)[2]
        if lane:
            runnable.append(destination)
        else:
            del self._lanes[destination]
        self._buffered -= 1
        if self._buffered < self._low_water and self._maybe_more:
            self._wakeup.set()
        return job

    async def next_job(self) -> ClaimedJob | None:
        """Wait for a job; None when the dispatcher is closed."""
        job = self.take()
        if job is not None or self._closed:
            return job
        waiter: asyncio.Future[ClaimedJob | None] = asyncio.get_running_loop().create_future()
        self._waiting_workers.append(waiter)
        return await waiter

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def busy(self) -> bool:
        """Jobs are buffered, a claim is in flight, or more may be ready."""
        return bool(self._buffered or self._claiming or self._maybe_more)

    def drain(self) -> list[ClaimedJob]:
        """Empty every lane (at shutdown, to hand the jobs back)."""
        jobs = [item[2] for lane in self._lanes.values() for item in lane]
        self._lanes.clear()
        self._runnable.clear()
        self._buffered = 0
        return jobs

    # -- the journal side --------------------------------------------------

    def notify(self) -> None:
        """New work may be ready (a local submit, a reclaimed lease, a poll)."""
        self._maybe_more = True
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        while self._waiting_workers:
            waiter = self._waiting_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """Keep the prefetch topped up until closed."""
        while not self._closed:
            room = self._prefetch - self._buffered
            if self._maybe_more and room >= self._low_water:
                self._wakeup.clear()
                now = self._clock.now()
                self._claiming = True
                try:
                    jobs = await self._journal.claim(self._owner, room, now + self._lease, now)
                finally:
                    self._claiming = False
                if self._closed:
                    self._add(jobs)
                    return
                self._add(jobs)
                if len(jobs) < room:
                    self._maybe_more = False
                continue
            if not self._buffered and not self._maybe_more and self.on_idle is not None:
                self.on_idle()
            await self._wait_for_news()

    def _add(self, jobs: list[ClaimedJob]) -> None:
        lanes = self._lanes
        for job in jobs:
            lane = lanes.get(job.destination)
            if lane is None:
                lane = lanes[job.destination] = []
                self._runnable.append(job.destination)
            heapq.heappush(lane, (-job.priority, next(self._order), job))
        self._buffered += len(jobs)
        waiting = self._waiting_workers
        while waiting and self._runnable:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(self.take())

    async def _wait_for_news(self) -> None:
        """Sleep until woken, until the next delayed job is due, or one poll interval."""
        if self._wakeup.is_set():
            self._wakeup.clear()
            return
        timeout = self._poll_interval
        if not self._maybe_more:
            due = await self._journal.next_run_at()
            if due is not None:
                timeout = min(timeout, max(0.0, due - self._clock.now()))
        if timeout > 0:
            woken = asyncio.ensure_future(self._wakeup.wait())
            slept = asyncio.ensure_future(self._clock.sleep(timeout))
            try:
                await asyncio.wait((woken, slept), return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                slept.cancel()
            if woken.done() and not woken.cancelled():
                self._wakeup.clear()
                return
        # Time passed with no local news: a delayed job may be due, or another
        # process may have written.
        if timeout < self._poll_interval or await self._journal.changed_elsewhere():
            self._maybe_more = True
        elif not self._maybe_more:
            due = await self._journal.next_run_at()
            self._maybe_more = due is not None and due <= self._clock.now()
