"""What happened lately, per destination: the counts behind the rates of stats().

A journal counts what its writer's transactions do (jobs that arrived, calls made,
jobs finished, retried and dead) and the durations of attempts, per destination in
time slots of `SLOT_SECONDS`, from the times its callers pass in (the queue's
clock). It adds them to the store's slots at most every `WRITE_EVERY` seconds, in
a writer turn that runs anyway: a turn of one submit never pays for a row of its
own, and a busy writer pays one small upsert a second. Every process reads the
sums of the last `WINDOW_SLOTS` slots, so rates seen from a process that runs no
jobs include the completions of workers in other processes.

Attempt durations are kept as a histogram of log-spaced buckets, 8 per doubling:
a percentile read from it is within 4.5 % of the duration it stands for. The
writer samples at most `LATENCY_SAMPLES` successes of each batch of outcomes
(every failure), so that a batch costs the same whatever its size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Width of a slot, seconds.
SLOT_SECONDS = 5
#: Slots read for "the last minute": the current one and the 11 before it, so a
#: rate covers between 55 and 60 seconds (divided by the time actually covered),
#: or, on a journal younger than that, the time since its first slot began.
WINDOW_SLOTS = 12
#: Slots kept in the store (older ones are deleted when a new slot starts).
KEEP_SLOTS = 2 * WINDOW_SLOTS
#: Seconds of the queue's clock between two writes of a process's counts at most;
#: the journal also writes what is left once the writer has been idle this long
#: (in real seconds), and at close.
WRITE_EVERY = 1.0
#: Successes per batch of outcomes whose durations go into the histogram.
LATENCY_SAMPLES = 32
#: Buckets per doubling of the duration (8: each bucket spans 9 %).
BUCKETS_PER_DOUBLING = 8

# Where a job's state changes show what happened (see `Activity.ended`).
_FINISHED = frozenset({"succeeded", "dead", "cancelled"})


def slot_of(now: float) -> int:
    """The slot a time (seconds since the epoch) falls in."""
    return int(now // SLOT_SECONDS)


def latency_bucket(micros: int) -> int:
    """The bucket of a duration in whole microseconds: 0 for under 1 us, else
    bucket b holds [2 ** ((b - 1) / 8), 2 ** (b / 8)) us."""
    if micros < 1:
        return 0
    return int(BUCKETS_PER_DOUBLING * math.log2(micros)) + 1


def bucket_seconds(bucket: int) -> float:
    """The duration a bucket stands for, seconds: its geometric middle (0 for bucket 0)."""
    if bucket <= 0:
        return 0.0
    return float(2 ** ((bucket - 0.5) / BUCKETS_PER_DOUBLING) / 1_000_000)


def percentile(histogram: Mapping[int, int], fraction: float) -> float | None:
    """The duration (seconds) below which `fraction` of the attempts in
    `histogram` fall (nearest rank); None for no attempts."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_seconds(bucket)
    return bucket_seconds(max(histogram))  # pragma: no cover - the loop always returns


@dataclass(slots=True)
class Tally:
    """One destination's activity in one slot (or one batch of outcomes)."""

    arrived: int = 0
    calls: int = 0
    finished: int = 0
    retried: int = 0
    dead: int = 0
    latency: Counter[int] = field(default_factory=Counter)  # bucket -> attempts

    def add(self, other: Tally) -> None:
        self.arrived += other.arrived
        self.calls += other.calls
        self.finished += other.finished
        self.retried += other.retried
        self.dead += other.dead
        self.latency.update(other.latency)

    def copy(self) -> Tally:
        return Tally(
            self.arrived, self.calls, self.finished, self.retried, self.dead, Counter(self.latency)
        )


class Activity:
    """Tallies by (slot, destination): what one writer turn did, or what a journal
    has not written yet."""

    __slots__ = ("at", "tallies")

    def __init__(self) -> None:
        self.tallies: dict[tuple[int, str], Tally] = {}
        #: The latest time recorded (seconds since the epoch), -inf if none.
        self.at = -math.inf

    def __bool__(self) -> bool:
        return bool(self.tallies)

    def of(self, destination: str, now: float) -> Tally:
        if now > self.at:
            self.at = now
        key = (slot_of(now), destination)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally()
        return tally

    def arrived(self, moves: Mapping[tuple[str, str], int], now: float) -> None:
        """Jobs inserted (`moves`: the inserts' changes of counts by destination and
        state). A child inserted cancelled (its parent had failed) also finished."""
        for (destination, state), n in moves.items():
            if n > 0:
                tally = self.of(destination, now)
                tally.arrived += n
                if state == "cancelled":
                    tally.finished += n

    def ended(
        self, moves: Mapping[tuple[str, str], int], now: float, *, retries: bool = True
    ) -> None:
        """Jobs that left for a final state, or (with `retries`) went back to wait
        for a retry, read from the changes of counts a write made. Pass
        `retries=False` for writes whose jobs enter `scheduled` for another reason
        (a child whose parent succeeded, with its delay still to run)."""
        for (destination, state), n in moves.items():
            if n <= 0:
                continue
            if state in _FINISHED:
                tally = self.of(destination, now)
                tally.finished += n
                if state == "dead":
                    tally.dead += n
            elif retries and state == "scheduled":
                self.of(destination, now).retried += n

    def calls(self, attempts: Mapping[str, Tally], now: float) -> None:
        """Calls and their durations, counted from a batch of outcomes."""
        for destination, tally in attempts.items():
            self.of(destination, now).add(tally)

    def crashed(self, destinations: Iterable[str], now: float) -> None:
        """Attempts whose handler had started when their process died: calls made,
        of unknown duration."""
        for destination in destinations:
            self.of(destination, now).calls += 1

    def add(self, other: Activity) -> None:
        for key, tally in other.tallies.items():
            mine = self.tallies.get(key)
            if mine is None:
                self.tallies[key] = tally.copy()
            else:
                mine.add(tally)
        self.at = max(self.at, other.at)

    def copy(self) -> Activity:
        copied = Activity()
        copied.add(self)
        return copied


def outcome_attempts(
    now_us: int,
    succeeded: Iterable[tuple[str, int]],
    success_count: Mapping[str, int],
    others: Iterable[tuple[str, int | None, bool]],
) -> dict[str, Tally]:
    """The calls of one batch of outcomes, by destination, with a sample of their
    durations: `succeeded` gives (destination, start in us) of the sampled
    successes (each stands for an equal share of them); `success_count` every success by
    destination; `others` (destination, start in us or None, timed) for the
    failures and cancels (a start None: no handler ran; `timed` False: a call cut
    short, whose duration says nothing)."""
    attempts: dict[str, Tally] = {d: Tally(calls=n) for d, n in success_count.items()}
    samples = list(succeeded)
    total = sum(success_count.values())
    weight = max(1, round(total / len(samples))) if samples else 0
    for destination, started_us in samples:
        attempts[destination].latency[latency_bucket(now_us - started_us)] += weight
    for destination, start_us, timed in others:
        if start_us is None or not destination:
            continue
        tally = attempts.get(destination)
        if tally is None:
            tally = attempts[destination] = Tally()
        tally.calls += 1
        if timed:
            tally.latency[latency_bucket(now_us - start_us)] += 1
    return attempts


def figures(
    counts: list[int] | None,
    histogram: Mapping[int, int] | None,
    seconds: float,
    limit: float | None,
) -> dict[str, float | None]:
    """A destination's rates and latencies over a window of `seconds`, from its
    counts [arrived, calls, finished, retried, dead] and its histogram of
    durations, as DestinationCounts fields."""
    arrived, calls, finished, retried, dead = counts or (0, 0, 0, 0, 0)
    call_rate = calls / seconds
    histogram = histogram or {}
    return {
        "arrival_rate": arrived / seconds,
        "completion_rate": finished / seconds,
        "call_rate": call_rate,
        "retries_per_minute": retried / seconds * 60,
        "dead_per_minute": dead / seconds * 60,
        "latency_p50": percentile(histogram, 0.50),
        "latency_p95": percentile(histogram, 0.95),
        "latency_p99": percentile(histogram, 0.99),
        "limit": limit,
        "limit_used": None if limit is None else call_rate / limit,
    }
