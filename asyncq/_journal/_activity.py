"""What happened lately, per destination: the counts behind the rates of stats().

A journal counts what its writer's transactions do (jobs that arrived, calls made,
jobs finished, retried and dead) and the durations of attempts, per destination in
time slots of `SLOT_SECONDS`, from the times its callers pass in (the queue's
clock). It adds them to the store's slots at most every `WRITE_EVERY` seconds, in
a writer turn that runs anyway: a turn of one submit never pays for a row of its
own, and a busy writer pays one small upsert a second. Every process reads the
sums of the last `WINDOW_SLOTS` slots, so rates seen from a process that runs no
jobs include the completions of workers in other processes.

The hot path pays almost nothing: a turn keeps references to what it has anyway
(each batch's successes counted by destination, which its writes need too), and
after its commit they are added up (`Counter.update` of a mapping: a step per
destination, not per job). Failures, cancels and
crashes, rarer, are counted one by one. Attempt durations are kept as a histogram
of log-spaced buckets, 8 per doubling (a percentile read from it is within 4.5 %
of the duration it stands for), from at most `LATENCY_SAMPLES` successes of each
batch of outcomes, and every failure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._messages import DestinationCounts, JournalStats

#: Width of a slot, seconds.
SLOT_SECONDS = 5
#: Slots read for "the last minute": the current one and the 11 before it, so a
#: rate covers between 55 and 60 seconds (divided by the time actually covered),
#: or, on a journal younger than that, the time since its first event.
WINDOW_SLOTS = 12
#: Slots kept in the store (older ones are deleted when a new slot starts).
KEEP_SLOTS = 2 * WINDOW_SLOTS
#: Seconds of the queue's clock between two writes of a process's counts at most;
#: the journal also writes what is left once the writer has been idle this long
#: (in real seconds), and at close.
WRITE_EVERY = 1.0
#: Successes per batch of outcomes whose durations go into the histogram.
LATENCY_SAMPLES = 4
#: Buckets per doubling of the duration (8: each bucket spans 9 %).
BUCKETS_PER_DOUBLING = 8

Sample = tuple[str, int]  # (destination, latency bucket)


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


def percentiles(histogram: Mapping[int, int], fractions: Sequence[float]) -> list[float | None]:
    """The durations (seconds) below which each of `fractions` (ascending) of the
    attempts in `histogram` fall (nearest rank); None for no attempts."""
    total = sum(histogram.values())
    if total <= 0:
        return [None] * len(fractions)
    found: list[float | None] = []
    ranks = iter(max(1, math.ceil(f * total)) for f in fractions)
    rank = next(ranks)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        while seen >= rank:
            found.append(bucket_seconds(bucket))
            rank = next(ranks, -1)
            if rank < 0:
                return found
    return found  # pragma: no cover - the last rank is the total


#: What a slot counts per destination, and the columns of `Row` each adds to: a
#: success is a call and a finish. (`Row`'s arrived, calls, finished, retried, dead.)
KINDS: dict[str, tuple[int, ...]] = {
    "arrived": (0,),
    "succeeded": (1, 2),
    "calls": (1,),  # calls that did not succeed
    "finished": (2,),  # finishes other than successes
    "retried": (3,),
    "dead": (4,),
}


@dataclass(slots=True)
class Counts:
    """What happened in one slot, by destination, not yet written to the store."""

    #: (kind, destination) -> n, a kind of `KINDS`.
    tallies: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency: Counter[Sample] = field(default_factory=Counter)
    #: The earliest time counted (seconds since the epoch): a journal younger than
    #: a minute has rates over its life so far.
    first_at: float = math.inf

    def by_destination(self) -> dict[str, list[int]]:
        """[arrived, calls, finished, retried, dead] per destination."""
        rows: dict[str, list[int]] = {}
        for (kind, destination), n in self.tallies.items():
            row = rows.setdefault(destination, [0, 0, 0, 0, 0])
            for column in KINDS[kind]:
                row[column] += n
        return rows

    def histograms(self) -> dict[str, dict[int, int]]:
        found: dict[str, dict[int, int]] = {}
        for (destination, bucket), n in self.latency.items():
            histogram = found.setdefault(destination, {})
            histogram[bucket] = histogram.get(bucket, 0) + n
        return found


class Activity:
    """What one writer turn did: its tallies by kind and destination and its
    samples of durations, counted into `Counts` (`count_into`) once the turn has
    committed. `at` is -inf while nothing was recorded. Kept small: a turn of one
    submit builds one and counts it (this runs once per turn)."""

    __slots__ = ("at", "first", "samples", "tallies")

    def __init__(self) -> None:
        #: The latest and earliest times recorded (seconds since the epoch).
        self.at = -math.inf
        self.first = math.inf
        self.tallies: dict[tuple[str, str], int] = {}  # (kind, destination) -> n
        self.samples: list[tuple[list[Sample], int]] = []  # (samples, each stands for)

    def saw(self, now: float) -> None:
        if now > self.at:
            self.at = now
        if now < self.first:
            self.first = now

    def count(self, kind: str, destination: str, n: int, now: float) -> None:
        """`n` more of `kind` (of `KINDS`) for `destination`."""
        self.saw(now)
        key = (kind, destination)
        tallies = self.tallies
        tallies[key] = tallies.get(key, 0) + n

    def batch(
        self,
        now: float,
        successes: Mapping[str, int] | None,
        samples: list[Sample],
        weight: int,
        other_calls: Iterable[str],
        other_samples: list[Sample],
    ) -> None:
        """A batch of outcomes: its successes by destination (None: counted
        otherwise), samples of their durations each standing for `weight`, and the
        calls that did not succeed, with their durations."""
        self.saw(now)
        tallies = self.tallies
        if successes:
            for destination, n in successes.items():
                key = ("succeeded", destination)
                tallies[key] = tallies.get(key, 0) + n
        if samples:
            self.samples.append((samples, weight))
        if other_samples:
            self.samples.append((other_samples, 1))
        for destination in other_calls:
            key = ("calls", destination)
            tallies[key] = tallies.get(key, 0) + 1

    def arrived(self, moves: Mapping[tuple[str, str], int], now: float) -> None:
        """Jobs inserted (`moves`: the inserts' changes of counts by destination and
        state; a child inserted cancelled, its parent failed, is finished too)."""
        self.saw(now)
        tallies = self.tallies
        for (destination, state), n in moves.items():
            if n > 0:
                key = ("arrived", destination)
                tallies[key] = tallies.get(key, 0) + n
                if state == "cancelled":
                    key = ("finished", destination)
                    tallies[key] = tallies.get(key, 0) + n

    def ended(
        self, moves: Mapping[tuple[str, str], int], now: float, *, retries: bool = True
    ) -> None:
        """Jobs that succeeded, left for another final state, or (with `retries`)
        went back to wait for a retry, read from the changes of counts a write made.
        Pass `retries=False` for writes whose jobs enter `scheduled` for another
        reason (a child whose parent succeeded, with its delay still to run)."""
        for (destination, state), n in moves.items():
            if n <= 0:
                continue
            if state == "succeeded":
                self.count("succeeded", destination, n, now)
            elif state in ("dead", "cancelled"):
                self.count("finished", destination, n, now)
                if state == "dead":
                    self.count("dead", destination, n, now)
            elif retries and state == "scheduled":
                self.count("retried", destination, n, now)

    def count_into(self, counts: Counts) -> None:
        if self.first < counts.first_at:
            counts.first_at = self.first
        tallies = counts.tallies
        for key, n in self.tallies.items():
            tallies[key] += n
        latency = counts.latency
        for samples, weight in self.samples:
            for sample in samples:
                latency[sample] += weight


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
    p50, p95, p99 = percentiles(histogram or {}, (0.50, 0.95, 0.99))
    return {
        "arrival_rate": arrived / seconds,
        "completion_rate": finished / seconds,
        "call_rate": call_rate,
        "retries_per_minute": retried / seconds * 60,
        "dead_per_minute": dead / seconds * 60,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "limit": limit,
        "limit_used": None if limit is None else call_rate / limit,
    }


# -- what a journal has counted and not written yet (any backend) -------------

#: Rows a turn writes at most: a second in which 10,000 destinations were busy is
#: written over many turns (a row costs 10-15 us), not in one that stalls.
MAX_ROWS_PER_TURN = 256


class Row(NamedTuple):
    """One slot's counts for one destination, as the store keeps them."""

    slot: int
    destination: str
    arrived: int
    calls: int
    finished: int
    retried: int
    dead: int
    latency: dict[int, int] | None  # bucket -> attempts
    first_at: float  # the earliest of these events


@dataclass(slots=True)
class Window:
    """What the store holds for the last minute, per destination, and the seconds
    that covers."""

    seconds: float
    tallies: dict[str, list[int]] = field(default_factory=dict)  # arrived ... dead
    latency: dict[str, Counter[int]] = field(default_factory=dict)

    def add_unwritten(self, unwritten: Sequence[Row], first_slot: int) -> None:
        """Add this process's counts not written yet (those of the window's slots)."""
        for row in unwritten:
            if row.slot < first_slot:
                continue
            tally = self.tallies.setdefault(row.destination, [0, 0, 0, 0, 0])
            for index, value in enumerate(
                (row.arrived, row.calls, row.finished, row.retried, row.dead)
            ):
                tally[index] += value
            if row.latency:
                self.latency.setdefault(row.destination, Counter()).update(row.latency)


def window_start(now: float, kept_first_at: float | None, unwritten: Sequence[Row]) -> float:
    """When the last minute's window starts: a minute's slots ago, or the first
    event known (`kept_first_at`, the store's; or this process's unwritten), if later."""
    first = slot_of(now) - WINDOW_SLOTS + 1
    known = [at for at in (kept_first_at, *(row.first_at for row in unwritten)) if at is not None]
    return max(first * SLOT_SECONDS, min(known, default=-math.inf))


class ActivityLog:
    """A journal's counts not yet written, and when to write them; the backend
    writes the rows `take` gives it, in a turn's transaction, and says how that
    went (`written`).

    The writer writes (`take`, inside a turn's transaction); the event loop counts
    each committed turn's `Activity` (`committed`, before the next turn starts)
    and reads a copy for stats() (`unwritten`): the two never run at once, so no
    lock is needed.

    Every `WRITE_EVERY` seconds the pending counts become rows (the work grows with
    the destinations busy since the last time, once); the rows are written
    `MAX_ROWS_PER_TURN` a turn, so that no turn pays for more, while new counts
    pend beside them."""

    def __init__(self) -> None:
        self._pending: dict[int, Counts] = {}  # by slot
        self._queued: list[Row] = []  # rows made, to be written by the next turns
        self._at = -math.inf  # the latest time counted in `_pending`
        self._written_at = -math.inf  # the queue's time the pending counts last became rows
        # What the running turn's write did, for `committed`: the rows it leaves
        # queued, and whether it took the pending counts (and the turn's own).
        self._leftover: list[Row] = []
        self._took_pending = False
        #: Set (from the event loop) to have the next turn write whatever is pending.
        self.write_wanted = False

    @property
    def pending(self) -> bool:
        return bool(self._pending or self._queued)

    def take(self, turn: Activity) -> tuple[list[Row], float] | None:
        """Inside a turn's transaction: the rows to write now (the next queued ones,
        or, when it is time (`WRITE_EVERY`, or asked for), the pending counts and
        this turn's), with the time they are written at; None: nothing to write
        in this turn. Write at most `MAX_ROWS_PER_TURN` of them, then call `written`."""
        self._took_pending = False
        if self._queued:
            return self._queued, self._written_at
        at = turn.at if turn.at > self._at else self._at  # -inf: nothing counted at all
        if (at - self._written_at < WRITE_EVERY and not self.write_wanted) or at == -math.inf:
            return None
        rows = rows_of(self._pending)  # pending stays as it is until the commit
        if turn.at > -math.inf:
            counted = Counts()
            turn.count_into(counted)
            rows += rows_of({slot_of(turn.at): counted})
        self._took_pending = True
        return rows, at

    def written(self, rows: list[Row], ok: bool) -> bool:
        """The first `MAX_ROWS_PER_TURN` of `rows` (from `take`) were written in the
        turn's transaction, or (not `ok`) failed to be: they stay pending. `ok`."""
        if not ok:
            self._took_pending = False
            return False
        self._leftover = rows[MAX_ROWS_PER_TURN:]
        return True

    def committed(self, turn: Activity, written: bool) -> None:
        """After the turn's commit: what it wrote is no longer pending; what it did
        not write waits for a later turn."""
        if not written and turn.at == -math.inf:
            return
        if written:
            self._queued, self._leftover = self._leftover, []
        if self._took_pending:  # the pending counts and the turn's became rows
            self._written_at = max(turn.at, self._at, self._written_at)
            self._pending = {}
            self._at = -math.inf
            self.write_wanted = False
            self._took_pending = False
        elif turn.at > -math.inf:
            at = turn.at
            counts = self._pending.get(slot_of(at))
            if counts is None:
                counts = self._pending[slot_of(at)] = Counts()
            turn.count_into(counts)
            if at > self._at:
                self._at = at

    def unwritten(self) -> list[Row]:
        return self._queued + rows_of(self._pending)


def rows_of(counted: dict[int, Counts]) -> list[Row]:
    """Counts by slot as rows, one per slot and destination."""
    rows = []
    for slot, counts in counted.items():
        histograms = counts.histograms()
        for destination, (
            arrived,
            calls,
            finished,
            retried,
            dead,
        ) in counts.by_destination().items():
            latency = histograms.get(destination)
            rows.append(
                Row(
                    slot,
                    destination,
                    arrived,
                    calls,
                    finished,
                    retried,
                    dead,
                    latency,
                    counts.first_at,
                )
            )
    return rows


def journal_stats(
    per: dict[str, dict[str, Any]],
    window: Window,
    limits: Mapping[str, float],
    now: float,
    workers: int,
) -> JournalStats:
    """`stats()`'s answer from what a backend read: the counts per destination
    (`per`, completed here with the ages and the window's figures), the last
    minute's activity, the declared rates and the live workers."""
    for destination in window.tallies:
        per.setdefault(destination, {})
    for destination, counts in per.items():
        oldest = counts.get("oldest_ready_at")
        if oldest is not None:
            counts["oldest_ready_age"] = max(0.0, now - oldest)
        counts.update(
            figures(
                window.tallies.get(destination),
                window.latency.get(destination),
                window.seconds,
                limits.get(destination),
            )
        )
    every_call: Counter[int] = Counter()
    for histogram in window.latency.values():
        every_call.update(histogram)
    p50, p95, p99 = percentiles(every_call, (0.50, 0.95, 0.99))
    return JournalStats(
        {d: DestinationCounts(**c) for d, c in sorted(per.items())},
        at=now,
        workers=workers,
        latency_p50=p50,
        latency_p95=p95,
        latency_p99=p99,
    )
