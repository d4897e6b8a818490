"""The dispatcher: keeps a bounded prefetch of claimed jobs in per-destination
lanes (`Lanes`, which hands them to workers), books their calls in the shared
rate buckets, and sleeps until something is due.

The run loop survives transient journal faults (`JournalError.transient`: disk
full, I/O errors): it logs once per fault episode, backs off in real time and
tries again. A claim that failed was rolled back, so no job is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._backoff import Backoff
from ._clock import Clock, SystemClock
from ._destinations import CircuitState, Destinations
from ._errors import JournalError
from ._journal import ClaimLimits, Journal
from ._lanes import Lanes
from ._limiter import HORIZON_MIN, room_at
from ._policy import Rate

log = logging.getLogger("asyncq.dispatcher")
T = TypeVar("T")

# Back-off (real seconds) after a transient journal fault, doubling up to the last.
# How much work, in seconds at the recent pace, an adaptive prefetch holds.
_PREFETCH_SECONDS = 0.05


def paced_prefetch(finished: int, elapsed: float, low: int, high: int) -> int:
    """The prefetch that holds `_PREFETCH_SECONDS` of work at the pace of
    `finished` jobs in `elapsed` seconds, within [low, high]."""
    wanted = int(finished / elapsed * _PREFETCH_SECONDS) if elapsed > 0 else high
    return min(high, max(low, wanted))


class Dispatcher(Lanes):
    """Claims ready jobs from the journal into the lanes, books their calls in the
    shared rate buckets, and keeps parked lanes moving."""

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
        super().__init__(clock, destinations, prefetch=prefetch)
        self._journal = journal
        self._owner = owner
        self._min_prefetch = prefetch
        self._max_prefetch = max(prefetch, max_prefetch or prefetch)
        self._rate_since = time.monotonic()
        self._lease = lease
        self._poll_interval = poll_interval
        self._reload = reload
        # True while the journal said jobs are ready that the last claim did not take
        # (their lanes are capped, paused or held): claim again after a poll, not at once.
        self._ready_untaken = False
        # Slots freed while a claim was under way: that claim may not have seen
        # them (their outcomes are written after it), so it must not end the search.
        self._freed_during_claim = False
        self._polled_at = clock.now()  # the queue's clock at the last look for others' writes
        # Circuit states that today's policies do not allow, corrected at load: to write.
        self._corrections = destinations.take_corrections()
        self._fault: str | None = None  # the journal call that failed, until it works
        self._closing = asyncio.Event()
        # Transient journal faults are waited out in real time, cut short by close.
        self._backoff = Backoff("dispatcher", logger=log, cut_short=self._closing)
        self._pushed = False  # the journal told of another process's write
        # The run loop's timer on the real clock (see `_sleep_or_wake`), kept from
        # one sleep to the next while the time to wake at stays the same.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.nan
        self._timer_rang = False
        #: Called after news of another process's write was taken (a cancel request
        #: may be among it: see `_cancelling.CancelWatch`).
        self.on_news_elsewhere: Callable[[], None] = lambda: None
        journal.on_change_elsewhere(self._told_of_change_elsewhere)

    # -- the journal side --------------------------------------------------

    async def claim_now(self) -> int:
        """Claim what there is room for, now; the number of jobs claimed."""
        room = self._prefetch - self._buffered
        if room <= 0 or self._closed:
            return 0
        return await self._claim(room)

    def outcomes_sent(self) -> None:
        """Outcomes are on their way to the journal, ahead of any claim made from now
        on. If calls to destinations at their shared cap ended among them, the next
        claim finds their slots free: claim again (in the same transaction as the
        outcomes, if the writer has not started it yet)."""
        if self._slots_freed:
            self._slots_freed = False
            if self._claiming:
                self._freed_during_claim = True
            self.notify()

    def notify(self) -> None:
        """New work may be ready (a local submit, a reclaimed lease, a poll)."""
        self._maybe_more = True
        self._ready_untaken = False
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.nan
        self._closing.set()
        self._wakeup.set()
        while self._waiting_workers:
            waiter = self._waiting_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """Keep the prefetch topped up and parked lanes moving, until closed.

        Survives transient journal faults (see the module's docstring); any other
        error ends it, and the queue's supervision reports it."""
        while not self._closed:
            try:
                await self._turn()
            except JournalError as exc:
                await self._backoff.failed(exc)

    async def _turn(self) -> None:
        if self._corrections:
            save = self._journal.save_destinations(self._corrections)
            await self._journal_call("save_destinations", save)
            self._corrections = []
        if self._wanting:
            await self._take_tokens()
            return
        self._adapt_prefetch()
        room = self._prefetch - self._buffered
        if self._maybe_more and room >= self._low_water:
            self._wakeup.clear()
            await self._claim(room)
            return
        if not self._buffered and not self._maybe_more:
            self.on_change()
        await self._wait_for_news()

    async def _journal_call(self, name: str, call: Awaitable[T]) -> T:
        """Await the run loop's journal call `name`; the end of a fault episode is
        when the call that failed works again (a read may work while writes fail)."""
        try:
            result = await call
        except JournalError as exc:
            if exc.transient and self._fault is None:
                self._fault = name
            raise
        if self._fault == name:
            self._fault = None
            self._backoff.succeeded()
        return result

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
        held: set[str] = set()
        refusing: set[str] = set()
        existing = self._destinations.existing
        lane_cap = self._destinations.lane_cap
        booking_rate = self._destinations.booking_rate_for
        concurrency = self._destinations.concurrency_for
        prefetch = self._prefetch

        # Both run inside the journal's transaction, for the destinations it visits
        # (not for every known one: 10,000 dynamic ones, say). They read the policies,
        # this snapshot of the lanes, and flags of the destinations' states (a pause,
        # a hold, an open circuit): plain attributes, read whole from any thread.
        def room_for(name: str) -> int:
            have = lanes.get(name, 0)
            state = existing.get(name)
            if state is not None:
                if state.paused or state.hold_until > now:
                    held.add(name)
                    return 0
                if state.circuit is CircuitState.OPEN and state.circuit_until > now:
                    refusing.add(name)  # refused at once: no need to hold them back
                    return prefetch - have
            return lane_cap(name, prefetch) - have

        def rate_for(name: str) -> Rate | None:
            return None if name in refusing else booking_rate(name)

        def cap_for(name: str) -> int | None:
            # Jobs claimed to be refused make no call: they need no slot.
            return None if name in refusing else concurrency(name)

        limits = ClaimLimits(
            room=room_for,
            rate=rate_for,
            clock=self._clock.now,
            horizon=HORIZON_MIN,
            cap=cap_for,
        )
        self._claiming = True
        try:
            claim = await self._journal_call(
                "claim", self._journal.claim(self._owner, room, now + self._lease, now, limits)
            )
        finally:
            self._claiming = False
            self.on_change()
        self._ready_untaken = False
        if claim.at_cap or self._at_cap:
            # Capped destinations whose slots other processes hold: claim for them
            # again once a call of ours to them ends (see `outcomes_sent`).
            self._at_cap.difference_update(claim.taken)
            self._at_cap.update(claim.at_cap)
        for name, (times, full_at) in claim.booked.items():
            state = self._destinations.state(name)
            state.full_at = full_at
            state.slots.extend(times)
        if claim.traces and self.keep_traces:
            self.traces.update(claim.traces)
        self._add(claim.jobs)
        # Jobs claimed to be refused (their circuit is open): refuse them now, not
        # when a worker happens by.
        for name in refusing:
            state = self._destinations.state(name)
            if name in self._lanes and state.circuit_open(now):
                self._refuse(name, state)
        if len(claim.jobs) < room and not self._freed_during_claim:
            # News that came while the claim was out came from writes in its turn or
            # before, which it saw: a later turn's callers wake after this one. Not
            # so for slots freed meanwhile (see `outcomes_sent`): claim again.
            self._maybe_more = False
        self._freed_during_claim = False
        # Lanes that this claim filled to their cap (more may wait in the journal):
        # claim again once one is half empty (workers may have emptied it already).
        # A lane the claim did not take from keeps what it was. Without paced or
        # capped destinations, the prefetch's own low-water mark does this.
        if not self._destinations.any_lane_caps:
            return len(claim.jobs)
        for name, taken in claim.taken.items():
            if name in refusing or name in held:
                continue
            cap = lane_cap(name, prefetch)
            if lanes.get(name, 0) + taken < cap:
                self._capped.pop(name, None)
            elif 2 * len(self._lanes.get(name, ())) <= cap:
                self._capped.pop(name, None)
                self._maybe_more = True
                self._wakeup.set()
            else:
                self._capped[name] = cap // 2
        return len(claim.jobs)

    async def _take_tokens(self) -> None:
        """Book calls for the lanes that want them, in one journal turn."""
        wanting, self._wanting = self._wanting, {}
        # One request per horizon (the journal takes one for all the calls it books).
        requests: dict[float, tuple[dict[str, int], dict[str, Rate]]] = {}
        for name in wanting:
            lane = self._lanes.get(name)
            state = self._destinations.state(name)
            rate = self._destinations.booking_rate_for(name)
            if not lane or rate is None:
                continue
            want = len(lane) - len(state.slots)
            cap = state.policy.concurrency
            if cap is not None:
                want = min(want, cap - state.in_flight + 1)
            wants, rates = requests.setdefault(state.horizon, ({}, {}))
            wants[name] = max(1, want)
            rates[name] = rate
        clock = self._clock.now
        try:
            answers = await self._journal_call(
                "take_tokens",
                asyncio.gather(
                    *(
                        self._journal.take_tokens(wants, rates, clock, horizon)
                        for horizon, (wants, rates) in requests.items()
                    )
                ),
            )
        except BaseException:
            # Nothing was booked: the lanes still want their calls.
            for name, waits in wanting.items():
                self._wanting[name] = self._wanting.get(name, False) or waits
            raise
        finally:
            self.on_change()
        now = self._clock.now()
        for (_, rates), booked in zip(requests.values(), answers, strict=True):
            for name, (times, full_at) in booked.items():
                state = self._destinations.state(name)
                state.full_at = full_at
                state.slots.extend(times)
                if not wanting[name] or name not in self._lanes:
                    continue  # the lane is still among the runnable ones
                if state.slots and state.slots[0] > now:
                    self._park(name, state.slots[0])
                elif state.slots:
                    self._runnable.append(name)
                else:
                    # Nothing fits within the horizon: ask again when something will.
                    self._park(name, room_at(rates[name], full_at) - state.horizon / 2)
        self._feed_waiting_workers()

    def _told_of_change_elsewhere(self) -> None:
        """The journal pushed news of another process's write (LISTEN/NOTIFY)."""
        self._pushed = True
        self.notify()

    async def _take_news_from_elsewhere(self) -> None:
        # Another process wrote: jobs, or a pause, resume or hold.
        self._pushed = False
        self._maybe_more = True
        self._ready_untaken = False
        try:
            await self._journal_call("load_destinations", self._reload())
        except BaseException:
            self._pushed = True  # not taken yet: again on the next turn
            raise
        self.recheck_all()
        self.on_news_elsewhere()

    async def _wait_for_news(self) -> None:
        """Sleep until woken, the next parked lane or delayed job is due, or a poll."""
        if self._pushed:
            await self._take_news_from_elsewhere()
        if self._wakeup.is_set():
            self._wakeup.clear()
            await asyncio.sleep(0)  # news came from this loop's own turn: let others run
            return
        poll_at = self._polled_at + self._poll_interval
        wake_at = poll_at
        due_by_timer = False
        if self._parked:
            wake_at = min(wake_at, self._parked[0][0])
        if not self._maybe_more and not self._ready_untaken:
            due = await self._journal_call("next_run_at", self._journal.next_run_at())
            if due == -math.inf:
                # Ready jobs that the last claim did not take: their lanes are full,
                # paused or held. A lane with room, a resume or a poll claims again;
                # asking now would only spin. (A due time is a scheduled job, which
                # no claim has seen: that one is claimed when it comes.)
                self._ready_untaken = True
            elif due is not None and due < wake_at:
                wake_at, due_by_timer = due, True
        if wake_at > self._clock.now() and await self._sleep_or_wake(wake_at):
            self._wakeup.clear()
            return
        # Move what is due before looking for news: a parked lane must not wait
        # for the journal's answer.
        now = self._clock.now()
        self._unpark(now)
        self._feed_waiting_workers()
        if due_by_timer:
            self._maybe_more = True
        if now >= poll_at:
            self._polled_at = now
            if self._ready_untaken:
                self._ready_untaken, self._maybe_more = False, True
            if await self._journal_call("changed_elsewhere", self._journal.changed_elsewhere()):
                await self._take_news_from_elsewhere()

    async def _sleep_or_wake(self, wake_at: float) -> bool:
        """Sleep until `wake_at` (the queue's clock) or until woken; whether woken."""
        if type(self._clock) is SystemClock:
            # The real clock: a timer on the loop, and no tasks. With one producer
            # awaiting each submit, the run loop sleeps here about once per job, and
            # mostly until the same time (the next poll): the timer is kept for the
            # next sleep rather than set and cancelled each time (80 opcodes a job).
            if wake_at != self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = wake_at
                self._timer = asyncio.get_running_loop().call_later(
                    wake_at - self._clock.now(), self._ring
                )
            self._timer_rang = False
            await self._wakeup.wait()
            return not self._timer_rang
        woken = asyncio.ensure_future(self._wakeup.wait())
        slept = asyncio.ensure_future(self._sleep_until(wake_at))
        try:
            await asyncio.wait((woken, slept), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()
        return woken.done() and not woken.cancelled()

    def _ring(self) -> None:
        self._timer, self._timer_at, self._timer_rang = None, math.nan, True
        self._wakeup.set()

    async def _sleep_until(self, when: float) -> None:
        # The time to sleep is measured when the sleep starts, not when it was
        # decided: the clock may have moved in between (a test's clock, by a jump).
        await self._clock.sleep(when - self._clock.now())
