"""Prometheus metrics of a queue (extra: `pip install 'asyncq[prometheus]'`).

    from asyncq.contrib.prometheus import QueueMetrics
    metrics = QueueMetrics(queue)   # before the queue starts; in prometheus_client's REGISTRY

Two kinds of figures, each labelled by destination:

- What the journal says, for every process sharing it (`queue.stats()`): jobs by
  state, arrival, completion and call rates, retries and dead letters per minute,
  the age of the oldest ready job, the rate limit and how much of it is used, call
  latency percentiles, pauses, holds and circuits, live worker processes. Gauges,
  refreshed every `interval` seconds (of the queue's clock) by a background part
  that the queue supervises, in producer-only processes too; `await
  metrics.refresh()` refreshes them at once.
- What this process ran, told by the engine's hook: attempts by outcome, retries,
  dead letters and jobs submitted (counters), and the attempts' durations (a
  histogram). Counters start at 0 in each process, as Prometheus expects.

A scrape only reads what was gathered: it never waits for the journal, so the
thread of `prometheus_client.start_http_server` never touches the event loop, and
a FastAPI route can call `generate_latest` on the loop. Per attempt, counting is
a list append (a success) or a few dictionary and list updates, on the event loop,
without a lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - what the test of the extra checks
    raise ImportError(
        "asyncq.contrib.prometheus needs prometheus-client: pip install 'asyncq[prometheus]'"
    ) from exc

from .._backoff import Backoff
from .._errors import CircuitOpen, JournalError
from .._instrument import AttemptEnd, Instrument, Outcome, Part, attach
from .._journal import DestinationCounts, JournalStats

if TYPE_CHECKING:
    from .._journal import ClaimedJob
    from .._queue import Queue

__all__ = ["DEFAULT_BUCKETS", "QueueMetrics"]

#: Upper bounds (seconds) of the attempt-duration histogram's buckets: outbound
#: calls take from milliseconds to a minute.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_STATES = ("ready", "scheduled", "blocked", "claimed", "running", "succeeded", "dead", "cancelled")
_OUTCOMES: tuple[Outcome, ...] = ("succeeded", "retry", "snoozed", "dead", "cancelled", "released")
_CIRCUIT_STATES = ("closed", "open", "half_open")

# Per-destination gauges read from `DestinationCounts`: (name, help, attribute).
# Fields that an older journal's stats lack are read with a default.
_FIGURES = (
    ("asyncq_arrivals_per_second", "Jobs submitted per second, last minute.", "arrival_rate"),
    (
        "asyncq_completions_per_second",
        "Jobs finished (succeeded, dead or cancelled) per second, last minute.",
        "completion_rate",
    ),
    ("asyncq_calls_per_second", "Calls (attempts started) per second, last minute.", "call_rate"),
    (
        "asyncq_retries_per_minute",
        "Failed attempts scheduled to run again, last minute.",
        "retries_per_minute",
    ),
    ("asyncq_dead_letters_per_minute", "Jobs dead-lettered, last minute.", "dead_per_minute"),
    (
        "asyncq_rate_limit_calls_per_second",
        "Calls per second the destination's Rate allows (absent: no rate).",
        "limit",
    ),
    (
        "asyncq_rate_limit_used_ratio",
        "Calls per second over the rate limit, last minute.",
        "limit_used",
    ),
)
_QUANTILES = (("0.5", "latency_p50"), ("0.95", "latency_p95"), ("0.99", "latency_p99"))


#: Successes whose durations are kept as they come before they are bucketed.
_FOLD_AT = 1024


class _Folded(NamedTuple):
    """Successes bucketed so far, and the list of the next ones' durations."""

    succeeded: int
    buckets: tuple[int, ...]  # cumulative: the count of each bucket and those below
    seconds: float
    durations: list[float]  # of successes since, appended to on the event loop


class _Ran:
    """What this process ran for one destination.

    A success, the usual end, only appends its duration to a list: the durations
    are bucketed 1,024 at a time (sorted, then one bisection per bucket), and at
    each scrape, rather than each with a bisection of its own. The event loop
    alone writes; a scrape in another thread reads `folded`, replaced in one step,
    so that what it sees never goes back."""

    __slots__ = ("attempts", "bounds", "buckets", "ended", "folded", "seconds", "submitted")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ending with +inf
        self.folded = _Folded(0, (0,) * len(bounds), 0.0, [])
        # Attempts that did not succeed, by outcome, and those timed among them.
        self.attempts: dict[Outcome, int] = dict.fromkeys(_OUTCOMES, 0)
        self.buckets = [0] * len(bounds)  # not cumulative: the count of each bucket alone
        self.seconds = 0.0
        self.submitted = 0
        self.ended = self._ender()

    def _ender(self) -> AttemptEnd:
        # `folded.durations` and its append, held by the closure: an attribute read
        # less per success.
        durations = self.folded.durations
        append = durations.append

        def ended(outcome: Outcome, error: BaseException | None, seconds: float) -> None:
            nonlocal durations, append
            # Timed: a call that ran to its end. Without an error, that is a success
            # (not a cancel or a cut-off); with one, any but a refusal by an open circuit.
            if error is None and outcome == "succeeded":
                append(seconds)
                if len(durations) >= _FOLD_AT:
                    self.folded = self._fold(self.folded, durations)
                    durations = self.folded.durations
                    append = durations.append
                return
            self.attempts[outcome] += 1
            if error is not None and not isinstance(error, CircuitOpen):
                self.buckets[bisect_left(self.bounds, seconds)] += 1
                self.seconds += seconds

        return ended

    def _fold(self, folded: _Folded, durations: list[float]) -> _Folded:
        """`folded` with `durations` bucketed, and a new empty list."""
        ordered = sorted(durations)
        buckets = tuple(
            count + bisect_right(ordered, bound)
            for count, bound in zip(folded.buckets, self.bounds, strict=True)
        )
        # Exactly rounded: a scrape's sum of the first durations is never more.
        seconds = folded.seconds + math.fsum(durations)
        return _Folded(folded.succeeded + len(durations), buckets, seconds, [])

    def snapshot(self) -> tuple[dict[Outcome, int], list[int], float]:
        """Attempts by outcome, the histogram's cumulative buckets and its sum, now."""
        folded = self.folded  # read once: the event loop may replace it meanwhile
        folded = self._fold(folded, list(folded.durations))
        outcomes = dict(self.attempts)
        outcomes["succeeded"] += folded.succeeded
        cumulative, total = [], 0
        for count, below in zip(list(self.buckets), folded.buckets, strict=True):
            total += count
            cumulative.append(total + below)
        return outcomes, cumulative, folded.seconds + self.seconds


class QueueMetrics(Instrument):
    """Prometheus metrics of `queue` (see the module's docstring); a collector,
    registered in `registry` (None: register it yourself). Create it before the
    queue starts. `interval`: seconds between refreshes of the journal's figures;
    `buckets`: upper bounds (seconds) of the attempt-duration histogram."""

    def __init__(
        self,
        queue: Queue,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        interval: float = 5.0,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not (isinstance(interval, int | float) and 0 < interval < math.inf):
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        bounds = sorted(float(b) for b in buckets)
        if not bounds or not all(0 < b < math.inf for b in bounds):
            raise ValueError("buckets must be positive, finite numbers of seconds")
        self.interval = float(interval)
        self._queue = queue
        self._bounds = (*bounds, math.inf)
        self._ran: dict[str, _Ran] = {}
        self._ends: dict[str, AttemptEnd] = {}  # each destination's `_Ran.ended`, bound once
        self._stats: JournalStats | None = None
        self._taken_at = 0.0  # the queue's clock when `_stats` was read
        if registry is not None:
            registry.register(self)  # first: a name taken already leaves nothing attached
        attach(queue, self)

    # -- the engine's hook ------------------------------------------------------

    ends_by_destination = True  # `attempt` gives each destination's `_Ran.ended`

    def background(self, queue: Queue) -> list[Part]:
        return [(self._refresh_every(), "prometheus metrics")]

    def submitted(self, task: str, destination: str, count: int) -> None:
        ran = self._ran.get(destination)
        if ran is None:
            ran = self._for(destination)
        ran.submitted += count

    def attempt(self, job: ClaimedJob, trace: str | None) -> AttemptEnd:
        end = self._ends.get(job.destination)
        if end is None:
            end = self._ends[job.destination] = self._for(job.destination).ended
        return end

    def _for(self, destination: str) -> _Ran:
        ran = self._ran.get(destination)
        if ran is None:
            ran = self._ran[destination] = _Ran(self._bounds)
        return ran

    # -- the journal's figures ----------------------------------------------------

    async def refresh(self) -> None:
        """Read the journal's figures now (`queue.stats()`)."""
        stats = await self._queue.stats()
        self._stats, self._taken_at = stats, self._queue.clock.now()

    async def _refresh_every(self) -> None:
        backoff = Backoff("prometheus metrics")
        while True:
            try:
                await self.refresh()
            except JournalError as exc:
                await backoff.failed(exc)  # a transient fault is waited out
                continue
            backoff.succeeded()
            await self._queue.clock.sleep(self.interval)

    # -- collecting -------------------------------------------------------------

    def describe(self) -> list[Metric]:
        """The metric families, without samples (for the registry's name checks)."""
        return [*self._journal_families(None), *self._process_families({})]

    def collect(self) -> Iterator[Metric]:
        yield from self._journal_families(self._stats)
        # A copy in one step: the event loop's thread may add a destination meanwhile.
        yield from self._process_families(dict(self._ran))

    def _journal_families(self, stats: JournalStats | None) -> list[Metric]:
        jobs = GaugeMetricFamily(
            "asyncq_jobs",
            "Jobs in the journal by destination and state, every process.",
            labels=["destination", "state"],
        )
        oldest = GaugeMetricFamily(
            "asyncq_oldest_ready_age_seconds",
            "How long the oldest ready job has waited.",
            labels=["destination"],
        )
        figures = [
            (GaugeMetricFamily(name, doc, labels=["destination"]), attribute)
            for name, doc, attribute in _FIGURES
        ]
        latency = GaugeMetricFamily(
            "asyncq_call_latency_seconds",
            "Call durations over the last minute, every process: percentiles.",
            labels=["destination", "quantile"],
        )
        paused = GaugeMetricFamily(
            "asyncq_paused", "1 if the destination is paused.", labels=["destination"]
        )
        held = GaugeMetricFamily(
            "asyncq_hold_remaining_seconds",
            "Seconds until a RetryAfter hold of the destination ends (0: none).",
            labels=["destination"],
        )
        circuit = GaugeMetricFamily(
            "asyncq_circuit",
            "1 for the state the destination's circuit is in, 0 for the others.",
            labels=["destination", "state"],
        )
        workers = GaugeMetricFamily(
            "asyncq_workers", "Worker processes alive on the journal (from their heartbeats)."
        )
        taken = GaugeMetricFamily(
            "asyncq_stats_timestamp_seconds",
            "When these journal figures were read (seconds since the epoch).",
        )
        if stats is not None:
            at = float(getattr(stats, "at", 0.0) or self._taken_at)
            for name, counts in sorted(stats.destinations.items()):
                for state in _STATES:
                    jobs.add_metric([name, state], getattr(counts, state))
                if (age := _oldest_ready_age(counts, at)) is not None:
                    oldest.add_metric([name], age)
                for family, attribute in figures:
                    value = getattr(counts, attribute, None)
                    if value is not None:
                        family.add_metric([name], value)
                for quantile, attribute in _QUANTILES:
                    value = getattr(counts, attribute, None)
                    if value is not None:
                        latency.add_metric([name, quantile], value)
                paused.add_metric([name], float(counts.paused))
                held.add_metric([name], max(0.0, (counts.held_until or at) - at))
                for state in _CIRCUIT_STATES:
                    circuit.add_metric([name, state], float(counts.circuit == state))
            workers.add_metric([], getattr(stats, "workers", 0))
            taken.add_metric([], at)
        families: list[Metric] = [jobs, oldest, *(f for f, _ in figures), latency]
        return [*families, paused, held, circuit, workers, taken]

    def _process_families(self, ran: dict[str, _Ran]) -> list[Metric]:
        attempts = CounterMetricFamily(
            "asyncq_attempts",
            "Attempts this process ran, by destination and outcome.",
            labels=["destination", "outcome"],
        )
        retries = CounterMetricFamily(
            "asyncq_retries",
            "Failed attempts of this process scheduled to run again.",
            labels=["destination"],
        )
        dead = CounterMetricFamily(
            "asyncq_dead_letters",
            "Jobs dead-lettered by an attempt in this process.",
            labels=["destination"],
        )
        submitted = CounterMetricFamily(
            "asyncq_jobs_submitted", "Jobs this process submitted.", labels=["destination"]
        )
        durations = HistogramMetricFamily(
            "asyncq_attempt_duration_seconds",
            "Durations of the calls this process made (attempts that ran a handler to its end).",
            labels=["destination"],
        )
        for name, counts in sorted(ran.items()):
            outcomes, cumulative, seconds = counts.snapshot()
            for outcome in _OUTCOMES:
                attempts.add_metric([name, outcome], outcomes[outcome])
            retries.add_metric([name], outcomes["retry"])
            dead.add_metric([name], outcomes["dead"])
            submitted.add_metric([name], counts.submitted)
            buckets = [
                (_bound(bound), float(count))
                for bound, count in zip(counts.bounds, cumulative, strict=True)
            ]
            durations.add_metric([name], buckets, seconds)
        return [attempts, retries, dead, submitted, durations]


def _oldest_ready_age(counts: DestinationCounts, at: float) -> float | None:
    age: float | None = getattr(counts, "oldest_ready_age", None)
    if age is None and counts.oldest_ready_at is not None:
        age = max(0.0, at - counts.oldest_ready_at)
    return age


def _bound(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)
