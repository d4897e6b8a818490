"""What goes into a journal and comes out of it: plain records, no behaviour.

The interface that takes and gives them is `Journal` (`_base.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._policy import Rate
from .._records import JobState

#: The error recorded for an attempt whose worker stopped renewing its lease.
LEASE_EXPIRED = (
    "LeaseExpired: the worker running this job stopped renewing its lease "
    "(killed, or its event loop was blocked)"
)


class NewJob(NamedTuple):
    """A job to insert. `payload` is JSON text already checked by the codec."""

    task: str
    payload: str
    destination: str
    priority: int
    run_at: float
    key: str | None = None
    after: tuple[int, ...] = ()  # parent job ids (see `_sqlite_deps`)
    on_parent_failure: str = "cancel"  # or "run"
    trace: str | None = None  # the submitter's trace context (see `_instrument.py`)


class NewBatch(NamedTuple):
    """Jobs of one task, one destination, one priority and one due time (`submit_many`).

    `payloads` is the JSON text of an array of payload objects, encoded in one go;
    the journal refuses the whole batch if any payload is larger than `max_payload_bytes`.
    """

    task: str
    payloads: str
    job_count: int
    destination: str
    priority: int
    run_at: float
    max_payload_bytes: int
    after: tuple[int, ...] = ()  # parent job ids, the same for every job of the batch
    on_parent_failure: str = "cancel"  # or "run"
    trace: str | None = None  # the submitter's trace context, the same for every job


class Inserted(NamedTuple):
    id: int
    created: bool  # False: `key` matched a live job, whose id this is


# Not frozen: one is built per claimed job, and a frozen init costs about 2 us more.
@dataclass(slots=True)
class ClaimedJob:
    """A job stamped with this process as owner, ready to run."""

    id: int
    task: str
    payload: dict[str, Any] | None  # None: the stored payload is not valid JSON
    destination: str
    priority: int
    attempts: int  # the number this attempt has if its handler starts (1 for the first)
    first_started_at: float | None  # the first attempt's start, for policies that count time
    snoozes: int = 0  # RetryAfter answers so far
    token: int = 0  # names this claim in the outcomes
    started_us: int | None = None  # set by the worker when the handler starts (`micros`)
    start_written: bool = False  # the start went to the journal with earlier outcomes
    parents: dict[int, Any] | None = None  # parent id -> its result; None: no parents


class ExpiredJob(NamedTuple):
    """A claimed job whose lease ran out: its worker died or stalled.

    `started`: its handler's start had been written, so the crash charges the
    attempt (number `attempts`) and the policy decides. A job whose start was not
    written goes back unchanged, except from its third such loss on, when it is
    charged anyway: a job that kills its process at once still ends dead.
    """

    id: int
    task: str
    destination: str
    attempts: int
    first_started_at: float | None
    started: bool


#: Calls booked in one destination's rate bucket: (the booked calls' times, the
#: bucket's new `full_at`, when it was or will have been last full).
Booked = tuple[list[float], float]


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    """What one claim may take, as plain data and pure policy lookups.

    Both functions may run inside the journal's transaction (on its thread, for
    SQLite), so they read only a snapshot taken before the claim and the declared
    policies: no dispatcher state, no I/O.
    """

    #: How many ready jobs of a destination the claim may take (0: none now).
    room: Callable[[str], int]
    #: The destination's rate, or None if it is not paced.
    rate: Callable[[str], Rate | None]
    #: The queue's clock, read once when the buckets are read: a claim that waited
    #: for the writer must not book calls at a time already gone.
    clock: Callable[[], float]
    #: Calls of paced jobs are booked in the shared bucket up to `clock() + horizon`.
    horizon: float = 0.2
    #: The destination's concurrency cap, or None if it has none. A journal that
    #: processes share (PostgreSQL) counts the cap over all of them: a claim takes
    #: at most the cap less the destination's jobs claimed and not finished there.
    cap: Callable[[str], int | None] = lambda name: None


@dataclass(frozen=True, slots=True)
class Claim:
    """Jobs taken by one claim, how many from each destination, and the calls
    booked for the paced ones."""

    jobs: list[ClaimedJob]
    booked: dict[str, Booked] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    #: The trace contexts stored with the claimed jobs that have one, by job id.
    traces: dict[int, str] = field(default_factory=dict)
    #: Capped destinations of which the claim took less than it asked, because other
    #: processes hold their slots (a journal that shares caps): worth claiming again
    #: once a call to one of them has ended and its outcome is written.
    at_cap: frozenset[str] = frozenset()


#: Decides when an expired job runs again (seconds since the epoch), or None: dead.
RetryDecision = Callable[[ExpiredJob], "float | None"]


# Outcomes name the claim they answer (`token`, with the owner): a process whose
# lease expired and whose job was claimed again cannot overwrite the newer run.
# Times are the handler's own: an attempt runs from its handler's start. A start
# travels as whole microseconds of the queue's clock (`micros`): a float's shortest
# repr, which a JSON batch would spend on every job, cost 4 % of a no-op job.


def micros(seconds: float) -> int:
    """A time in seconds as whole microseconds, rounded (times are >= 0)."""
    return int(seconds * 1_000_000 + 0.5)


class Started(NamedTuple):
    """A handler started on a claimed job. Written with the owner's next outcomes for
    the jobs still running then, so that a crash charges an attempt to the jobs that
    had started, and to no other."""

    id: int
    token: int
    at_us: int  # see `micros`


class Succeeded(NamedTuple):
    id: int
    token: int
    result: str  # JSON text
    started_us: int  # see `micros`
    destination: str  # the job's, so that a journal can count without reading it back


class Failed(NamedTuple):
    id: int
    token: int
    error: str
    retry_at: float | None  # None: dead
    snoozed: int = 0  # 1: a RetryAfter, which gives the attempt back
    started_us: int | None = None  # None: no handler ran (the attempt is charged now)
    destination: str = ""  # the job's, for the counts of calls (see `_activity.py`)


class Pruned(NamedTuple):
    """What one `prune_finished` call did: the jobs it deleted, and whether more
    may be left (over the count, or the walk is among old jobs)."""

    deleted: int
    more: bool


class Released(NamedTuple):
    """A claimed job handed back unstarted, or cut off at shutdown: no attempt is charged."""

    id: int
    token: int


class Cancelled(NamedTuple):
    """A claimed job stopped by `queue.cancel`: its handler's coroutine was cancelled,
    or it had not started (`started_us` None). Final: the job is cancelled, whatever
    its handler does afterwards."""

    id: int
    token: int
    started_us: int | None = None  # see `micros`; None: no handler ran
    destination: str = ""  # the job's, for the counts of calls (see `_activity.py`)


class Cancellation(NamedTuple):
    """What one cancel did, in one transaction."""

    #: Jobs that were pending, scheduled or blocked (or running under an expired
    #: lease): cancelled now.
    cancelled: list[int]
    #: Running jobs asked to stop, each with the owner that runs it: that process
    #: cancels the handler and records `Cancelled`.
    requested: list[tuple[int, str]]
    #: Jobs cancelled in turn: the children of the cancelled jobs, and theirs.
    settled: list[int]
    #: For a cancel of one job: its state after the call.
    state: JobState | None = None


@dataclass(frozen=True, slots=True)
class DestinationRecord:
    """What must outlive a process about one destination. Times are seconds since the epoch."""

    name: str
    paused: bool = False
    hold_until: float = 0.0
    circuit: str = "closed"
    circuit_until: float = 0.0
    full_at: float = 0.0  # the rate bucket may be full up to this time


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    """A process that runs jobs, as its heartbeats describe it."""

    owner: str  # the name its claims carry: host:pid:token
    host: str
    pid: int
    concurrency: int
    started_at: float  # seconds since the epoch


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationCounts:
    """One destination's jobs by state, what happened to them lately, and what
    holds its calls back now.

    `claimed` jobs sit in a worker process's prefetch, not started; `running` jobs
    have a handler started (as far as the journal knows: a start is written with
    its owner's next outcomes) under a live lease.

    Rates cover the last minute (between 55 and 60 seconds: the journal counts in
    5-second slots; on a journal younger than that, its life so far, since its
    first event, and at least a second) and every process sharing the journal: jobs per second, or
    per minute where the name says so. A call is an attempt that reached the handler,
    counted when it ends; latencies are those attempts' durations, seconds, from the
    handler's start until its outcome was written (within 4.5 %, from a histogram).
    """

    ready: int = 0  # pending and due now
    scheduled: int = 0  # pending, due later: delayed or waiting to retry
    blocked: int = 0  # waiting for parent jobs
    claimed: int = 0
    running: int = 0
    succeeded: int = 0  # kept until pruned (`keep_finished`)
    dead: int = 0
    cancelled: int = 0
    oldest_ready_at: float | None = None  # seconds since the epoch
    oldest_ready_age: float | None = None  # seconds the oldest ready job has waited
    arrival_rate: float = 0.0  # jobs submitted per second
    completion_rate: float = 0.0  # jobs finished (succeeded, dead or cancelled) per second
    call_rate: float = 0.0  # calls made per second
    retries_per_minute: float = 0.0  # failed attempts scheduled to run again
    dead_per_minute: float = 0.0  # jobs dead-lettered
    latency_p50: float | None = None  # seconds; None: no call in the last minute
    latency_p95: float | None = None
    latency_p99: float | None = None
    limit: float | None = None  # calls per second its Rate allows (None: none known)
    limit_used: float | None = None  # call_rate / limit
    paused: bool = False
    held_until: float | None = None  # a RetryAfter hold in force until then
    circuit: str = "closed"
    circuit_until: float | None = None  # an open circuit's next probe

    @property
    def pending(self) -> int:
        """Jobs waiting to start: ready and scheduled."""
        return self.ready + self.scheduled


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Jobs per destination (`destinations`), and their totals; taken `at` (seconds
    since the epoch), when `workers` processes that run jobs were alive on the
    journal (seen from their heartbeats). The latencies are those of every call."""

    destinations: dict[str, DestinationCounts] = field(default_factory=dict)
    at: float = 0.0
    workers: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None

    def _total(self, name: str) -> Any:
        return sum(getattr(counts, name) for counts in self.destinations.values())

    @property
    def ready(self) -> int:
        return int(self._total("ready"))

    @property
    def scheduled(self) -> int:
        return int(self._total("scheduled"))

    @property
    def pending(self) -> int:
        return int(self._total("pending"))

    @property
    def blocked(self) -> int:
        return int(self._total("blocked"))

    @property
    def claimed(self) -> int:
        return int(self._total("claimed"))

    @property
    def running(self) -> int:
        return int(self._total("running"))

    @property
    def succeeded(self) -> int:
        return int(self._total("succeeded"))

    @property
    def dead(self) -> int:
        return int(self._total("dead"))

    @property
    def cancelled(self) -> int:
        return int(self._total("cancelled"))

    @property
    def arrival_rate(self) -> float:
        return float(self._total("arrival_rate"))

    @property
    def completion_rate(self) -> float:
        return float(self._total("completion_rate"))

    @property
    def call_rate(self) -> float:
        return float(self._total("call_rate"))

    @property
    def retries_per_minute(self) -> float:
        return float(self._total("retries_per_minute"))

    @property
    def dead_per_minute(self) -> float:
        return float(self._total("dead_per_minute"))

    @property
    def oldest_ready_at(self) -> float | None:
        """The oldest ready job's time over every destination."""
        times = [c.oldest_ready_at for c in self.destinations.values()]
        return min((t for t in times if t is not None), default=None)

    @property
    def oldest_ready_age(self) -> float | None:
        ages = [c.oldest_ready_age for c in self.destinations.values()]
        return max((a for a in ages if a is not None), default=None)
