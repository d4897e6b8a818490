"""The prefetch as lanes, one per destination, and what workers take from them.

Workers take jobs synchronously (`take`) and only wait when no lane can go.
A lane that cannot go is set aside without spending a worker: until a time
(its rate bucket's next booked call, a RetryAfter hold's end) or until an event
(a call to a capped destination finishes, a resume, a half-open circuit's probe
ends). Lanes that can go are served round-robin; within a lane, higher priority
first, then the order of the claim (FIFO). A lane whose circuit is open is not
set aside: its jobs are refused at once (`on_refused`), so each follows its own
retry schedule.

A lane is a deque kept in that order: a claim hands its jobs over sorted, so
they are appended, and a lane is sorted again only when a claim brings a higher
priority than its last job's (a heap cost 4.5k instructions a job to push and pop).

The lanes ask the run loop (`Dispatcher`, a subclass) for claims and bookings by
setting its flags (`_maybe_more`, `_wanting`) and waking it (`_wakeup`): plain
attributes, because `take` runs once per job.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import operator
from collections import deque
from collections.abc import Callable

from ._clock import Clock
from ._destinations import CLOSED, HALF_OPEN, Destinations, DestinationState
from ._errors import CircuitOpen
from ._journal import ClaimedJob

_priority = operator.attrgetter("priority")


class Lanes:
    """Claimed jobs by destination, handed to workers when their destination can
    take a call now."""

    def __init__(self, clock: Clock, destinations: Destinations, *, prefetch: int) -> None:
        self._clock = clock
        self._destinations = destinations
        self._existing = destinations.existing  # states by name, without a call per job
        self._prefetch = prefetch
        self._low_water = max(1, prefetch // 2)
        self._finished_since = 0  # jobs finished since the prefetch was last adapted
        self._lanes: dict[str, deque[ClaimedJob]] = {}
        self._runnable: deque[str] = deque()
        self._parked: list[tuple[float, int, str]] = []  # (until, order, destination)
        self._blocked: set[str] = set()  # waiting for an event, not a time
        self._buffered = 0
        self._active = 0  # jobs handed to workers and not finished
        self._order = itertools.count()
        self._waiting_workers: deque[asyncio.Future[None]] = deque()
        # What the lanes ask of the run loop:
        self._wakeup = asyncio.Event()
        # Paced lanes that need calls booked in the shared bucket; True when the lane
        # waits for the booking (it left the runnable lanes), False to book ahead.
        self._wanting: dict[str, bool] = {}
        self._maybe_more = True  # False once a claim came back short; reset by news
        # Lanes at their cap after the last claim, each with the length at which it
        # has room again (half its cap): then claim.
        self._capped: dict[str, int] = {}
        # Capped destinations whose last claim the journal cut short, their slots
        # held by other processes (a journal that shares caps); and whether a call
        # to one of them has ended since (its slot frees once its outcome is written).
        self._at_cap: set[str] = set()
        self._slots_freed = False
        self._claiming = False
        self._closed = False
        #: Called when a claim or a booking ends, a lane is set aside until a time,
        #: or nothing is left to do: what `has_work_now` says may have changed.
        self.on_change: Callable[[], None] = lambda: None
        #: Trace contexts stored with claimed jobs, by job id, until their attempts
        #: start: kept only if `keep_traces` (an instrument wants them, see
        #: `_instrument.py`); a job that leaves unstarted takes its own along.
        self.traces: dict[int, str] = {}
        self.keep_traces = False
        #: Takes jobs refused because their destination's circuit is open (the
        #: worker pool records each as a failed attempt). Unset, such jobs wait
        #: for the cooldown to end instead.
        self.on_refused: Callable[[list[ClaimedJob], CircuitOpen], None] | None = None

    def take(self) -> ClaimedJob | None:
        """The next job whose destination can take a call now, or None. A worker
        starts it at once: the job's start (`started_us`) is stamped here, with the
        clock reading that let it go."""
        now = self._clock.now()
        if self._parked and self._parked[0][0] <= now:
            self._unpark(now)
        runnable = self._runnable
        while runnable:
            name = runnable.popleft()
            lane = self._lanes.get(name)
            if not lane:
                continue
            state = self._existing.get(name) or self._destinations.state(name)
            if state.circuit is not CLOSED:
                if state.circuit_open(now):
                    self._refuse(name, state)
                    continue
                state.half_open_if_cooled(now)
            # `state.blocked()`, inlined: this runs for every job.
            cap = state.policy.concurrency
            if (
                state.paused
                or (cap is not None and state.in_flight >= cap)
                or (state.probe_in_flight and state.circuit is HALF_OPEN)
            ):
                self._blocked.add(name)
                continue
            if state.hold_until > now:
                self._park(name, state.hold_until)
                continue
            if state.bucket is not None:
                slots = state.slots
                if slots and slots[0] + state.start_within < now:
                    state.drop_late_slots(now)
                if not slots:
                    # No call booked. The bucket lives in the journal: calls are
                    # booked in it (and written) before they go out, so neither a
                    # restart nor another process on the journal is a free burst.
                    # Ask when a booking can find room, not before (half a horizon
                    # early, for the round trip).
                    ask_at = state.room_expected_at() - state.horizon / 2
                    if ask_at > now:
                        self._park(name, ask_at)
                        continue
                    self._wanting[name] = True
                    self._wakeup.set()
                    continue
                if slots[0] > now:
                    self._park(name, slots[0])
                    continue
                wait = state.bucket.take_or_wait()
                if wait > 0:
                    self._park(name, now + wait)
                    continue
                slots.popleft()
                if (
                    slots
                    and slots[-1] - now < state.horizon / 2
                    and len(lane) - 1 > len(slots)
                    and name not in self._wanting
                ):
                    self._wanting[name] = False  # book ahead, while this lane goes on
                    self._wakeup.set()
            if state.circuit is HALF_OPEN:
                state.probe_in_flight = True
            state.in_flight += 1
            self._active += 1
            job = lane.popleft()
            if lane:
                runnable.append(name)
            else:
                del self._lanes[name]
            if name in self._capped and len(lane) <= self._capped[name]:
                self._regained_room(name)
            self._buffered -= 1
            if self._buffered < self._low_water and self._maybe_more:
                self._wakeup.set()
            job.started_us = int(now * 1_000_000 + 0.5)  # micros(), inlined: per job
            return job
        return None

    def _refuse(self, name: str, state: DestinationState) -> None:
        """The circuit of `name` is open: hand its buffered jobs to `on_refused`."""
        if self.on_refused is None:
            self._park(name, state.circuit_until)
            return
        lane = self._lanes.pop(name)
        self._buffered -= len(lane)
        self._capped.pop(name, None)
        self.on_refused(list(lane), CircuitOpen(name, state.circuit_until))
        if self._buffered < self._low_water and self._maybe_more:
            self._wakeup.set()

    def _regained_room(self, name: str) -> None:
        """A lane that was at its cap is half empty: claim for it."""
        del self._capped[name]
        self._maybe_more = True
        self._wakeup.set()

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
        state = self._existing.get(name) or self._destinations.state(name)
        state.in_flight -= 1
        self._active -= 1
        state.probe_in_flight = False
        if self._at_cap and name in self._at_cap:
            self._at_cap.discard(name)
            self._slots_freed = True
        elif self._claiming and state.policy.concurrency is not None:
            # The claim under way may come back at the cap without having seen this
            # call's outcome (which then frees a slot nobody claims until a poll).
            self._slots_freed = True
        self.recheck(name)

    def recheck(self, name: str) -> None:
        """`name`'s state changed (a slot freed, a resume, its circuit opened): it
        may be able to go, or its jobs may have to be refused."""
        if name not in self._blocked:
            return
        state = self._destinations.state(name)
        if not state.blocked() or state.circuit_open(self._clock.now()):
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
        """Whether a job is running, some buffered job could start (or be refused)
        now, or a claim or a booking is under way. A question: it changes nothing."""
        if self._active or self._claiming or self._wanting:
            return True
        now = self._clock.now()
        due = (name for until, _, name in self._parked if until <= now)
        destinations = self._destinations
        for name in itertools.chain(self._runnable, due):
            if name not in self._lanes:
                continue
            state = destinations.state(name)
            if state.circuit_open(now):
                return True
            if not state.blocked() and state.wait_seconds(now) == 0:
                return True
        return False

    def drain(self) -> list[ClaimedJob]:
        """Empty every lane (at shutdown, to hand the jobs back)."""
        jobs = [job for lane in self._lanes.values() for job in lane]
        self._lanes.clear()
        self._runnable.clear()
        self._parked.clear()
        self._blocked.clear()
        self._capped.clear()
        self._buffered = 0
        self.traces.clear()
        return jobs

    def _park(self, name: str, until: float) -> None:
        until = max(until, self._clock.now() + 1e-6)  # always a time still to come
        first = not self._parked or until < self._parked[0][0]
        heapq.heappush(self._parked, (until, next(self._order), name))
        if first:
            self._wakeup.set()  # the run loop sleeps until the earliest parked time
        self.on_change()

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

    def _add(self, jobs: list[ClaimedJob]) -> None:
        """Put claimed jobs in their lanes (a claim hands them over by priority,
        highest first, then in claim order)."""
        lanes = self._lanes
        unsorted: set[str] = set()
        for job in jobs:
            lane = lanes.get(job.destination)
            if lane is None:
                lane = lanes[job.destination] = deque()
                self._runnable.append(job.destination)
            elif lane[-1].priority < job.priority:
                unsorted.add(job.destination)
            lane.append(job)
        for name in unsorted:
            # A stable sort: FIFO within a priority, as the jobs came.
            lanes[name] = deque(sorted(lanes[name], key=_priority, reverse=True))
        self._buffered += len(jobs)
        self._feed_waiting_workers()

    def remove(self, ids: set[int]) -> list[ClaimedJob]:
        """Take the jobs with these ids out of the lanes (cancelled before they
        started); the jobs taken. Walks every buffered job: for cancels, not per job."""
        removed: list[ClaimedJob] = []
        for name in list(self._lanes):
            lane = self._lanes[name]
            kept = deque(job for job in lane if job.id not in ids)
            if len(kept) == len(lane):
                continue
            removed += (job for job in lane if job.id in ids)
            if kept:
                self._lanes[name] = kept
            else:
                del self._lanes[name]  # `take` and `_unpark` skip a name with no lane
                self._capped.pop(name, None)
        self._buffered -= len(removed)
        if self.traces:
            for job in removed:
                self.traces.pop(job.id, None)
        if removed and self._buffered < self._low_water and self._maybe_more:
            self._wakeup.set()
        return removed
