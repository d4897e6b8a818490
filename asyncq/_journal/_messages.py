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
    created_at: float
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


@dataclass(frozen=True, slots=True)
class Claim:
    """Jobs taken by one claim, how many from each destination, and the calls
    booked for the paced ones."""

    jobs: list[ClaimedJob]
    booked: dict[str, Booked] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    #: The trace contexts stored with the claimed jobs that have one, by job id.
    traces: dict[int, str] = field(default_factory=dict)


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
class DestinationCounts:
    """One destination's jobs by state, and what holds its calls back now.

    `claimed` jobs sit in a worker process's prefetch, not started; `running` jobs
    have a handler started (as far as the journal knows: a start is written with
    its owner's next outcomes) under a live lease.
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
    """Jobs per destination (`destinations`), and their totals."""

    destinations: dict[str, DestinationCounts] = field(default_factory=dict)

    def _total(self, name: str) -> int:
        return sum(getattr(counts, name) for counts in self.destinations.values())

    @property
    def ready(self) -> int:
        return self._total("ready")

    @property
    def scheduled(self) -> int:
        return self._total("scheduled")

    @property
    def pending(self) -> int:
        return self._total("pending")

    @property
    def blocked(self) -> int:
        return self._total("blocked")

    @property
    def claimed(self) -> int:
        return self._total("claimed")

    @property
    def running(self) -> int:
        return self._total("running")

    @property
    def succeeded(self) -> int:
        return self._total("succeeded")

    @property
    def dead(self) -> int:
        return self._total("dead")

    @property
    def cancelled(self) -> int:
        return self._total("cancelled")
