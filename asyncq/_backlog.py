"""Backlog alerts, as pure decisions: given the stats of one moment, which watched
destination crossed a threshold or recovered, and the likely cause. No I/O: the
watch that takes the stats and calls back is `_monitoring.py`'s.

A watch fires once when a threshold is crossed and once more (`cleared=True`) when
the destination has recovered. Recovery needs more than being back under the
threshold, so an alert does not flap: the depth and the oldest job's age must be
at most half their thresholds, and a destination watched for growth must drain
at least as fast as jobs arrive (it fires at arrivals 5 % faster than the drain).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from ._journal import DestinationCounts, JournalStats

#: A destination whose calls failed this often in the last minute (retried or
#: dead, of the calls made) is failing.
FAILING_ERROR_RATE = 0.5
#: Calls at this share of the rate limit or more: the limit is what drains the backlog.
NEAR_LIMIT = 0.9
#: Filling means arriving more than this much faster than draining (5 %): a steady
#: queue's two rates differ by a little noise.
FILLING_MARGIN = 1.05
#: Recovered: back to at most this share of the depth and age thresholds.
CLEAR_SHARE = 0.5


class BacklogCause(StrEnum):
    """Why a backlog builds, as far as the stats can tell (checked in this order)."""

    NO_WORKERS = "no_workers"  # no process that runs jobs has a live heartbeat
    PAUSED = "paused"  # the destination is paused
    FAILING = "failing"  # its circuit is open, or most of its calls fail
    RATE_LIMITED = "rate_limited"  # its rate limit (or a RetryAfter hold) is what drains it
    SLOW_WORKERS = "slow_workers"  # none of the above: workers finish too few jobs


@dataclass(frozen=True, slots=True, kw_only=True)
class BacklogEvent:
    """A backlog alert, or (`cleared=True`) its end.

    `destination` is None for a watch of the whole queue (`total=True`). `depth`
    counts the jobs waiting to run: ready, scheduled (delayed, or waiting to retry:
    where a failing destination's backlog goes) and claimed into a prefetch; rates
    are jobs per second over the last minute (`drain_rate`: jobs finished).
    `drain_time` is how long the backlog takes to drain if nothing more arrives:
    at the rate limit for `rate_limited`, else at the drain rate (None: it does not
    drain). `reason` says which threshold was crossed; `detail` explains the cause
    in one sentence.
    """

    destination: str | None
    depth: int
    oldest_age: float | None  # seconds the oldest ready job has waited
    arrival_rate: float
    drain_rate: float
    cause: BacklogCause
    detail: str
    drain_time: float | None
    cleared: bool = False
    reason: str = ""
    at: float = 0.0  # when the stats were taken, seconds since the epoch


Callback = Callable[[BacklogEvent], Awaitable[None] | None]


@dataclass(slots=True)
class _State:
    """What a watch remembers about one destination (or the queue)."""

    firing: BacklogEvent | None = None
    growing_since: float | None = None  # when it started filling faster than it drains
    depth_then: int = 0  # its depth then


@dataclass(slots=True)
class BacklogRule:
    """One `on_backlog` registration: thresholds, what it watches, and its state."""

    callback: Callback
    depth: int | None = None
    oldest_age: float | None = None
    growing_for: float | None = None
    destination: str | None = None  # a name or a pattern; None: every destination
    total: bool = False  # the whole queue's totals instead
    _states: dict[str | None, _State] = field(default_factory=dict, init=False, repr=False)

    def events(self, stats: JournalStats) -> list[BacklogEvent]:
        """The alerts and recoveries these stats show, updating the rule's state."""
        events = []
        for name, counts in self._subjects(stats):
            state = self._states.setdefault(name, _State())
            event = self._judge(name, counts, stats, state)
            if event is not None:
                events.append(event)
            if state.firing is None and state.growing_since is None:
                del self._states[name]  # nothing to remember: a destination that went stays gone
        return events

    def _subjects(self, stats: JournalStats) -> list[tuple[str | None, DestinationCounts]]:
        if self.total:
            return [(None, totals(stats))]
        names = {
            name
            for name in stats.destinations
            if self.destination is None or fnmatch.fnmatchcase(name, self.destination)
        }
        names.update(name for name in self._states if name is not None)  # to clear them
        if self.destination is not None and not _is_pattern(self.destination):
            names.add(self.destination)
        empty = DestinationCounts()
        return [(name, stats.destinations.get(name, empty)) for name in sorted(names)]

    def _judge(
        self, name: str | None, counts: DestinationCounts, stats: JournalStats, state: _State
    ) -> BacklogEvent | None:
        depth = waiting(counts)
        age = counts.oldest_ready_age
        filling = depth > 0 and counts.arrival_rate > counts.completion_rate * FILLING_MARGIN
        if not filling:
            state.growing_since = None
        elif state.growing_since is None:
            state.growing_since, state.depth_then = stats.at, depth
        if state.firing is None:
            reason = self._crossed(depth, age, state, stats.at)
            if reason is None:
                return None
            state.firing = _event(name, counts, stats, depth, reason, cleared=False)
            return state.firing
        if self._recovered(depth, age, counts):
            fired, state.firing = state.firing, None
            return _event(name, counts, stats, depth, fired.reason, cleared=True, cause=fired.cause)
        return None

    def _crossed(self, depth: int, age: float | None, state: _State, now: float) -> str | None:
        if self.depth is not None and depth >= self.depth:
            return f"{depth} jobs waiting (threshold {self.depth})"
        if self.oldest_age is not None and age is not None and age >= self.oldest_age:
            return f"the oldest job has waited {age:.0f} s (threshold {self.oldest_age:g} s)"
        if (
            self.growing_for is not None
            and state.growing_since is not None
            and now - state.growing_since >= self.growing_for
            and depth > state.depth_then
        ):
            return (
                f"filling faster than it drains for {now - state.growing_since:.0f} s "
                f"({state.depth_then} -> {depth} jobs waiting)"
            )
        return None

    def _recovered(self, depth: int, age: float | None, counts: DestinationCounts) -> bool:
        if self.depth is not None and depth > self.depth * CLEAR_SHARE:
            return False
        if self.oldest_age is not None and age is not None and age > self.oldest_age * CLEAR_SHARE:
            return False
        draining = depth == 0 or counts.completion_rate >= counts.arrival_rate
        return self.growing_for is None or draining


def waiting(counts: DestinationCounts) -> int:
    """A destination's depth: jobs waiting to run (ready, scheduled, claimed)."""
    return counts.ready + counts.scheduled + counts.claimed


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def totals(stats: JournalStats) -> DestinationCounts:
    """The whole queue as one destination (for a watch with `total=True`)."""
    return DestinationCounts(
        ready=stats.ready,
        scheduled=stats.scheduled,
        claimed=stats.claimed,
        oldest_ready_age=stats.oldest_ready_age,
        arrival_rate=stats.arrival_rate,
        completion_rate=stats.completion_rate,
        call_rate=stats.call_rate,
        retries_per_minute=stats.retries_per_minute,
        dead_per_minute=stats.dead_per_minute,
        latency_p95=stats.latency_p95,
    )


def _event(
    name: str | None,
    counts: DestinationCounts,
    stats: JournalStats,
    depth: int,
    reason: str,
    *,
    cleared: bool,
    cause: BacklogCause | None = None,
) -> BacklogEvent:
    found, detail, drain_time = diagnose(name, counts, stats, depth)
    if cleared:
        subject = "the queue" if name is None else repr(name)
        detail = (
            f"{subject} recovered: {depth} jobs waiting, draining "
            f"{_rate(counts.completion_rate)} against {_rate(counts.arrival_rate)} arriving"
        )
    return BacklogEvent(
        destination=name,
        depth=depth,
        oldest_age=counts.oldest_ready_age,
        arrival_rate=counts.arrival_rate,
        drain_rate=counts.completion_rate,
        cause=cause or found,
        detail=detail,
        drain_time=drain_time,
        cleared=cleared,
        reason=reason,
        at=stats.at,
    )


def diagnose(
    name: str | None, counts: DestinationCounts, stats: JournalStats, depth: int
) -> tuple[BacklogCause, str, float | None]:
    """The likely cause of a backlog of `depth` jobs, a sentence saying why, and the
    time it takes to drain if nothing more arrives (None: it does not drain)."""
    if name is None and stats.workers:
        # The whole queue: the cause of its largest backlog.
        worst = max(stats.destinations.items(), key=lambda item: waiting(item[1]), default=None)
        if worst is not None:
            cause, detail, _ = diagnose(worst[0], worst[1], stats, waiting(worst[1]))
            return cause, detail, _drain_time(depth, counts.completion_rate)
    subject = "the queue" if name is None else repr(name)
    if not stats.workers:
        return (
            BacklogCause.NO_WORKERS,
            "no worker is running on this journal (no process that runs jobs has a live "
            "heartbeat): start one, e.g. `asyncq worker myapp.jobs:queue`",
            None,
        )
    if counts.paused:
        return BacklogCause.PAUSED, f"{subject} is paused: resume it to drain it", None
    drain_time = _drain_time(depth, counts.completion_rate)
    calls = counts.call_rate * 60
    failures = counts.retries_per_minute + counts.dead_per_minute
    error_rate = min(1.0, failures / calls) if calls else 0.0
    if counts.circuit != "closed" or (calls and error_rate >= FAILING_ERROR_RATE):
        parts = []
        if counts.circuit != "closed":
            parts.append(f"its circuit is {counts.circuit}")
        if calls:
            parts.append(f"{error_rate:.0%} of its calls failed in the last minute")
        return BacklogCause.FAILING, f"{subject} is failing: {'; '.join(parts)}", drain_time
    if counts.held_until is not None:
        wait = max(0.0, counts.held_until - stats.at)
        return (
            BacklogCause.RATE_LIMITED,
            f"the receiver asked {subject} to wait (RetryAfter) another {wait:.0f} s",
            drain_time,
        )
    limit = counts.limit
    if limit is not None and (
        limit < counts.arrival_rate or (counts.limit_used or 0.0) >= NEAR_LIMIT
    ):
        at_limit = depth / limit
        if limit < counts.arrival_rate:
            why = f"rate limit {_rate(limit)} is below arrival {_rate(counts.arrival_rate)}"
        else:
            why = f"calls run at {counts.limit_used or 0.0:.0%} of the rate limit {_rate(limit)}"
        return (
            BacklogCause.RATE_LIMITED,
            f"{why}: {depth} jobs drain in {at_limit:.0f} s",
            at_limit,
        )
    latency = "" if counts.latency_p95 is None else f"; calls take {counts.latency_p95:.3g} s (p95)"
    return (
        BacklogCause.SLOW_WORKERS,
        f"{stats.workers} worker process(es) finish {_rate(counts.completion_rate)} of "
        f"{subject} against {_rate(counts.arrival_rate)} arriving{latency}: add workers "
        "(concurrency) or make the calls faster",
        drain_time,
    )


def _drain_time(depth: int, drain_rate: float) -> float | None:
    if depth <= 0:
        return 0.0
    return depth / drain_rate if drain_rate > 0 else None


def _rate(per_second: float) -> str:
    if per_second >= 0.1 or per_second == 0:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.2g}/min"


def check_thresholds(
    depth: object, oldest_age: object, growing_for: object
) -> tuple[int | None, float | None, float | None]:
    """The thresholds of `on_backlog`, checked: at least one, each a positive number."""
    if depth is None and oldest_age is None and growing_for is None:
        raise ValueError("on_backlog needs a threshold: depth, oldest_age or growing_for")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError("depth must be an int >= 1 (jobs waiting)")
    seconds = []
    for what, value in (("oldest_age", oldest_age), ("growing_for", growing_for)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{what} must be a finite number of seconds > 0")
        seconds.append(None if value is None else float(value))
    return depth, seconds[0], seconds[1]
