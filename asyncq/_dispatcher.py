"""The dispatcher: a bounded prefetch of claimed jobs in per-destination lanes,
handed to workers only when their destination can take a call now.

Workers take jobs synchronously (`take`) and only wait when no lane can go.
A lane that cannot go is set aside without spending a worker: until a time
(its rate bucket refills, a RetryAfter hold ends, an open circuit cools down)
or until an event (a call to a capped destination finishes, a resume).
Lanes that can go are served round-robin; within a lane, higher priority
first, then the order of the claim (FIFO).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from ._clock import Clock
from ._destinations import CircuitState, Destinations
from ._journal import ClaimedJob, ClaimLimits, Journal
from ._limiter import room_at
from ._policy import Rate

log = logging.getLogger("asyncq.dispatcher")

# How far ahead (seconds) a paced lane books calls in the shared bucket. Booked
# calls go out at their booked times; a process that dies wastes at most this much
# of a destination's rate.
_BOOKING_HORIZON = 0.2
# How much work, in seconds at the recent pace, an adaptive prefetch holds.
_PREFETCH_SECONDS = 0.05


def paced_prefetch(finished: int, elapsed: float, low: int, high: int) -> int:
    """The prefetch that holds `_PREFETCH_SECONDS` of work at the pace of
    `finished` jobs in `elapsed` seconds, within [low, high]."""
    wanted = int(finished / elapsed * _PREFETCH_SECONDS) if elapsed > 0 else high
    return min(high, max(low, wanted))


class Dispatcher:
    """Claims ready jobs from the journal and hands them to workers."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        destinations: Destinations,
        *,
        owner: str,
        prefetch: int,
        max_prefetch: int | None = None,
        lease: float,
        poll_interval: float,
        reload: Callable[[], Awaitable[None]],
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._destinations = destinations
        self._owner = owner
        self._min_prefetch = prefetch
        self._max_prefetch = max(prefetch, max_prefetch or prefetch)
        self._prefetch = prefetch
        self._low_water = max(1, prefetch // 2)
        self._finished_since = 0  # jobs finished since `_rate_since`
        self._rate_since = time.monotonic()
        self._lease = lease
        self._poll_interval = poll_interval
        self._reload = reload
        self._lanes: dict[str, list[tuple[int, int, ClaimedJob]]] = {}
        self._runnable: deque[str] = deque()
        self._parked: list[tuple[float, int, str]] = []  # (until, order, destination)
        self._blocked: set[str] = set()  # waiting for an event, not a time
        # Paced lanes that need calls booked in the shared bucket; True when the lane
        # waits for the booking (it left the runnable lanes), False to book ahead.
        self._wanting: dict[str, bool] = {}
        self._buffered = 0
        self._active = 0  # jobs handed to workers and not finished
        self._order = itertools.count()
        self._waiting_workers: deque[asyncio.Future[None]] = deque()
        self._wakeup = asyncio.Event()
        self._maybe_more = True  # False once a claim came back short; reset by news
        self._closed = False
        self._claiming = False
        self._pushed = False  # the journal told of another process's write
        journal.on_change_elsewhere(self._told_of_change_elsewhere)
        #: Called when a claim or a booking ends, or nothing is left to do.
        self.on_change: Callable[[], None] = lambda: None

    # -- the worker side ---------------------------------------------------

    def take(self) -> ClaimedJob | None:
        """The next job whose destination can take a call now, or None."""
        now = self._clock.now()
        if self._parked and self._parked[0][0] <= now:
            self._unpark(now)
        runnable = self._runnable
        while runnable:
            name = runnable.popleft()
            lane = self._lanes.get(name)
            if not lane:
                continue
            state = self._destinations.state(name)
            if state.blocked():
                self._blocked.add(name)
                continue
            if state.hold_until > now or state.circuit != CircuitState.CLOSED:
                wait = state.wait_seconds(now, bucket=False)
                if wait > 0:
                    self._park(name, now + wait)
                    continue
            if state.bucket is not None:
                slot = state.next_slot(now)
                if slot == math.inf:
                    # No call booked. The bucket lives in the journal: calls are
                    # booked in it (and written) before they go out, so neither a
                    # restart nor another process on the journal is a free burst.
                    self._wanting[name] = True
                    self._wakeup.set()
                    continue
                if slot > now:
                    self._park(name, slot)
                    continue
                wait = state.bucket.take_or_wait()
                if wait > 0:
                    self._park(name, now + wait)
                    continue
                state.slots.popleft()
                if len(state.slots) <= 1 and len(lane) > 1 and name not in self._wanting:
                    self._wanting[name] = False  # book ahead, while this lane goes on
                    self._wakeup.set()
            if state.circuit == CircuitState.HALF_OPEN:
                state.probe_in_flight = True
            state.in_flight += 1
            self._active += 1
            job = heapq.heappop(lane)[2]
            if lane:
                runnable.append(name)
            else:
                del self._lanes[name]
            self._buffered -= 1
            if self._buffered < self._low_water and self._maybe_more:
                self._wakeup.set()
            return job
        return None

    async def next_job(self) -> ClaimedJob | None:
        """Wait for a job; None when the dispatcher is closed."""
        while True:
            job = self.take()
            if job is not None or self._closed:
                return job
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting_workers.append(waiter)
            await waiter

    def finished(self, name: str) -> None:
        """A call to `name` ended: its concurrency slot is free again."""
        self._finished_since += 1
        state = self._destinations.state(name)
        state.in_flight -= 1
        self._active -= 1
        state.probe_in_flight = False
        self.recheck(name)

    def recheck(self, name: str) -> None:
        """`name`'s state changed (a slot freed, a resume): it may be able to go."""
        if name in self._blocked and not self._destinations.state(name).blocked():
            self._blocked.discard(name)
            if name in self._lanes:
                self._runnable.append(name)
                self._feed_waiting_workers()

    def recheck_all(self) -> None:
        for name in list(self._blocked):
            self.recheck(name)
        # A hold or circuit may have been lifted elsewhere: look at parked lanes now.
        self._unpark(float("inf"))
        self._feed_waiting_workers()

    @property
    def buffered(self) -> int:
        return self._buffered

    def has_work_now(self) -> bool:
        """A job is running, some buffered job could start now, or a claim or a
        token request is under way."""
        if self._active or self._claiming or self._wanting:
            return True
        now = self._clock.now()
        self._unpark(now)
        self._feed_waiting_workers()
        destinations = self._destinations
        for name in self._runnable:
            state = destinations.state(name)
            if name in self._lanes and not state.blocked() and state.wait_seconds(now) == 0:
                return True
        return False

    async def claim_now(self) -> int:
        """Claim what there is room for, now; the number of jobs claimed."""
        room = self._prefetch - self._buffered
        if room <= 0 or self._closed:
            return 0
        return await self._claim(room)

    def drain(self) -> list[ClaimedJob]:
        """Empty every lane (at shutdown, to hand the jobs back)."""
        jobs = [item[2] for lane in self._lanes.values() for item in lane]
        self._lanes.clear()
        self._runnable.clear()
        self._parked.clear()
        self._blocked.clear()
        self._buffered = 0
        return jobs

    def _park(self, name: str, until: float) -> None:
        until = max(until, self._clock.now() + 1e-6)  # always a time still to come
        first = not self._parked or until < self._parked[0][0]
        heapq.heappush(self._parked, (until, next(self._order), name))
        if first:
            self._wakeup.set()  # the run loop sleeps until the earliest parked time

    def _unpark(self, now: float) -> None:
        parked = self._parked
        while parked and parked[0][0] <= now:
            name = heapq.heappop(parked)[2]
            if name in self._lanes:
                self._runnable.append(name)

    def _feed_waiting_workers(self) -> None:
        """Wake a waiting worker for each job that may be able to go. The worker
        takes the job itself when it runs, so a destination's limit is checked at
        the moment its call starts, not a loop turn before."""
        waiting = self._waiting_workers
        if not waiting:
            return
        ready = 0
        for name in self._runnable:
            ready += len(self._lanes.get(name, ()))
            if ready >= len(waiting):
                break
        while waiting and ready > 0:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                ready -= 1

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
        """Keep the prefetch topped up and parked lanes moving, until closed."""
        while not self._closed:
            if self._wanting:
                await self._take_tokens()
                continue
            self._adapt_prefetch()
            room = self._prefetch - self._buffered
            if self._maybe_more and room >= self._low_water:
                self._wakeup.clear()
                await self._claim(room)
                continue
            if not self._buffered and not self._maybe_more:
                self.on_change()
            await self._wait_for_news()
            self._unpark(self._clock.now())
            self._feed_waiting_workers()

    def _adapt_prefetch(self) -> None:
        """Hold about `_PREFETCH_SECONDS` of work, within the prefetch bounds.

        Fast jobs get big claims, which spread each transaction's fixed cost over
        more jobs; slow jobs get small ones, so one process does not sit on work
        that other processes sharing the journal could start.
        """
        if self._max_prefetch == self._min_prefetch:
            return
        moment = time.monotonic()  # real time: this is about CPU cost, not the queue's clock
        elapsed = moment - self._rate_since
        if elapsed < _PREFETCH_SECONDS:
            return
        self._prefetch = paced_prefetch(
            self._finished_since, elapsed, self._min_prefetch, self._max_prefetch
        )
        self._finished_since, self._rate_since = 0, moment
        self._low_water = max(1, self._prefetch // 2)

    async def _claim(self, room: int) -> int:
        now = self._clock.now()
        lanes = {name: len(lane) for name, lane in self._lanes.items()}
        closed = {s.name for s in self._destinations.known() if s.closed_to_claims(now)}
        lane_cap = self._destinations.lane_cap

        def room_for(name: str) -> int:
            # Runs inside the journal's transaction: reads only this snapshot and policies.
            if name in closed:
                return 0
            return lane_cap(name, self._prefetch) - lanes.get(name, 0)

        limits = ClaimLimits(
            room=room_for,
            rate=self._destinations.rate_for,
            clock=self._clock.now,
            horizon=_BOOKING_HORIZON,
        )
        self._claiming = True
        try:
            claim = await self._journal.claim(self._owner, room, now + self._lease, now, limits)
        finally:
            self._claiming = False
            self.on_change()
        for name, (times, full_at) in claim.booked.items():
            state = self._destinations.state(name)
            state.full_at = full_at
            state.slots.extend(times)
        self._add(claim.jobs)
        if len(claim.jobs) < room:
            self._maybe_more = False
        return len(claim.jobs)

    async def _take_tokens(self) -> None:
        wanting, self._wanting = self._wanting, {}
        wants: dict[str, int] = {}
        rates: dict[str, Rate] = {}
        for name in wanting:
            lane = self._lanes.get(name)
            state = self._destinations.state(name)
            if not lane or state.policy.rate is None:
                continue
            want = len(lane) - len(state.slots)
            cap = state.policy.concurrency
            if cap is not None:
                want = min(want, cap - state.in_flight + 1)
            wants[name] = max(1, want)
            rates[name] = state.policy.rate
        try:
            booked = await self._journal.take_tokens(
                wants, rates, self._clock.now, _BOOKING_HORIZON
            )
        finally:
            self.on_change()
        now = self._clock.now()
        for name, (times, full_at) in booked.items():
            state = self._destinations.state(name)
            state.full_at = full_at
            state.slots.extend(times)
            if not wanting[name] or name not in self._lanes:
                continue  # the lane is still among the runnable ones
            rate = state.policy.rate
            assert rate is not None
            if state.slots and state.slots[0] > now:
                self._park(name, state.slots[0])
            elif state.slots:
                self._runnable.append(name)
            else:
                # Nothing fits within the horizon: ask again when something will.
                self._park(name, room_at(rate, full_at) - _BOOKING_HORIZON / 2)
        self._feed_waiting_workers()

    def _add(self, jobs: list[ClaimedJob]) -> None:
        lanes = self._lanes
        for job in jobs:
            lane = lanes.get(job.destination)
            if lane is None:
                lane = lanes[job.destination] = []
                self._runnable.append(job.destination)
            heapq.heappush(lane, (-job.priority, next(self._order), job))
        self._buffered += len(jobs)
        self._feed_waiting_workers()

    def _told_of_change_elsewhere(self) -> None:
        """The journal pushed news of another process's write (LISTEN/NOTIFY)."""
        self._pushed = True
        self.notify()

    async def _take_news_from_elsewhere(self) -> None:
        # Another process wrote: jobs, or a pause, resume or hold.
        self._pushed = False
        self._maybe_more = True
        await self._reload()
        self.recheck_all()

    async def _wait_for_news(self) -> None:
        """Sleep until woken, the next parked lane or delayed job is due, or a poll."""
        if self._pushed:
            await self._take_news_from_elsewhere()
        if self._wakeup.is_set():
            self._wakeup.clear()
            await asyncio.sleep(0)  # news came from this loop's own turn: let others run
            return
        now = self._clock.now()
        timeout = self._poll_interval
        due_by_timer = False
        if self._parked:
            timeout = min(timeout, max(0.0, self._parked[0][0] - now))
        if not self._maybe_more:
            due = await self._journal.next_run_at()
            if due is not None and due - now < timeout:
                timeout, due_by_timer = max(0.0, due - now), True
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
        if due_by_timer:
            self._maybe_more = True
        elif await self._journal.changed_elsewhere():
            await self._take_news_from_elsewhere()
