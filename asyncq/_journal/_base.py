"""The journal interface: domain actions on durable jobs, with time passed in.

Callers never see SQL and the storage never reads the clock, so every
time-based path runs on a controlled clock. A second backend implements the
same protocol and passes the same contract suite (tests/journal/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .._policy import Rate
from .._records import JobInfo, JobState

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


class Journal(Protocol):
    """Durable storage of jobs. Every method is safe to call concurrently."""

    #: What the journal is, for messages and logs (a file's path; never a password).
    description: str

    async def open(self) -> None:
        """Create or migrate the schema; raise `JournalError` if the store cannot be used."""
        ...

    async def close(self) -> None: ...

    async def insert_many(self, jobs: Sequence[NewJob], now: float) -> list[Inserted]:
        """Insert jobs atomically; a live job with the same key is returned instead.

        A job with parents (`after`) is `blocked` until they all succeeded; a parent
        id that is not in the journal raises `JobNotFound` and nothing is written.
        """
        ...

    async def insert_batch(self, batch: NewBatch, now: float) -> Sequence[int]:
        """Insert a batch atomically; the new ids, in payload order (increasing, not
        necessarily consecutive).

        Raises `PayloadError` naming the task and the payload's index, and writes
        nothing, if a payload is not an object or is over `max_payload_bytes`;
        `JobNotFound` for a parent (`after`) that is not in the journal.
        """
        ...

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_until: float,
        now: float,
        limits: ClaimLimits | None = None,
    ) -> Claim:
        """Take up to `limit` ready jobs, stamped with `owner` until `lease_until`.

        Destinations take turns; within one, higher priority first, then FIFO.
        With `limits`, at most `limits.room(name)` jobs come from destination
        `name`, and calls for the jobs taken from paced destinations are booked in
        their shared buckets in the same transaction (as `take_tokens` does).
        """
        ...

    async def record_outcomes(
        self,
        owner: str,
        now: float,
        *,
        started: Sequence[Started] = (),
        succeeded: Sequence[Succeeded] = (),
        failed: Sequence[Failed] = (),
        released: Sequence[Released] = (),
        cancelled: Sequence[Cancelled] = (),
    ) -> list[int]:
        """Write what became of claimed jobs, in one transaction. A start counts the
        attempt (an outcome counts it too if its start was not written). A failure
        is rescheduled at its `retry_at`, or dead when that is None; a released job
        goes back to pending and is not charged; a cancelled one is final. Outcomes
        for a claim that `owner` no longer holds are ignored.

        A job asked to stop (`cancel`) that a failure or a release would send back
        to wait is cancelled instead. Returns the ids of the jobs cancelled in turn
        (those, and the children of every job cancelled here), for their waiters."""
        ...

    async def renew(self, owner: str, lease_until: float) -> int:
        """Extend the lease of every job `owner` holds; the number renewed."""
        ...

    async def reclaim_expired(
        self, now: float, decide: RetryDecision | None = None
    ) -> list[tuple[ExpiredJob, float | None]]:
        """Take back jobs whose lease expired, each with when it runs again (None:
        dead). A job whose handler had started is charged the crashed attempt and
        `decide` says when (default: again now); one that had not goes back to run
        now, uncharged (see `ExpiredJob`)."""
        ...

    async def cancel(self, job_id: int, now: float) -> Cancellation | None:
        """Cancel a job, in one transaction (None: no such job). A pending, scheduled
        or blocked job is cancelled now, and so is a running one whose lease expired
        (its owner is gone); a running one is asked to stop (see `cancel_requests`);
        a finished one is left as it is. Its children are settled with it."""
        ...

    async def get(self, job_id: int) -> JobInfo | None: ...

    async def next_run_at(self) -> float | None:
        """When the next pending job is due (seconds since the epoch): `-inf` if one
        is ready now, None if no job is pending. The dispatcher sleeps until then
        (or until woken) when a claim found nothing."""
        ...

    async def changed_elsewhere(self) -> bool:
        """Whether another process wrote since the last call (cheap; for polling)."""
        ...

    def on_failure(self, callback: Callable[[BaseException], None] | None) -> None:
        """Call `callback` (on the event loop) at once if the journal stops working
        on its own (its writer task died): the queue then fails every waiting caller
        instead of leaving them to find out at their next call."""
        ...

    def on_change_elsewhere(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` (on the event loop) when the journal learns that another
        process wrote: the push beside `changed_elsewhere()`'s polling, for backends
        that can be told (PostgreSQL's LISTEN/NOTIFY). A backend that cannot never
        calls it; the dispatcher's poll covers both."""
        ...

    def on_children_settled(self, callback: Callable[[list[int]], None] | None) -> None:
        """Call `callback` (on the event loop) after a write of this journal in which
        parents' outcomes made blocked jobs ready or cancelled them, with the ids of
        the jobs cancelled (perhaps none): the queue wakes their waiters and its
        dispatcher."""
        ...

    async def stats(self, now: float) -> JournalStats: ...

    async def prune_finished(self, before: float | None, keep: int | None = None) -> Pruned:
        """Delete succeeded and cancelled jobs: those that finished before `before`,
        and, while more than `keep` are kept, the oldest (lowest ids) of the rest.
        None turns either bound off. Dead jobs stay until purged; a job with a child
        that has not finished stays (the child reads its result).

        One call does a bounded share of the work (a part of the table): call again
        while `Pruned.more` says that more may be left."""
        ...

    async def checkpoint(self) -> None:
        """Keep the store's own files bounded (SQLite: checkpoint the write-ahead
        log, and truncate it once it is over its bound). Waits at most briefly for
        other connections; a backend with nothing to do returns."""
        ...

    async def load_destinations(self) -> list[DestinationRecord]: ...

    async def save_destinations(self, records: Sequence[DestinationRecord]) -> None:
        """Write pause, hold and circuit; a bucket's level is `take_tokens`'s alone."""
        ...

    async def take_tokens(
        self,
        wants: Mapping[str, int],
        rates: Mapping[str, Rate],
        clock: Callable[[], float],
        horizon: float,
    ) -> dict[str, Booked]:
        """Book up to `wants[name]` calls in each destination's rate bucket, each at
        the earliest time the bucket allows and none later than `clock() + horizon`
        (the clock is read when the buckets are read),
        reading and writing the bucket in one transaction, so that every process
        sharing the journal draws from one bucket."""
        ...

    async def dead_letters(
        self, *, destination: str | None, since: float | None, limit: int
    ) -> list[JobInfo]:
        """Dead jobs, most recent death first."""
        ...

    async def redrive(
        self,
        *,
        ids: Sequence[int] | None,
        destination: str | None,
        now: float,
        spacing: float = 0.0,
    ) -> int:
        """Dead jobs back to pending with attempts reset, `spacing` seconds apart; the
        jobs their deaths cancelled come back blocked. Returns how many dead jobs went."""
        ...

    async def purge(
        self, *, ids: Sequence[int] | None, destination: str | None, before: float | None
    ) -> int:
        """Delete dead jobs."""
        ...

    # -- periodic ticks ------------------------------------------------------

    async def make_tick(self, name: str, tick: float, job: NewJob, now: float) -> int | None:
        """Make schedule `name`'s `tick` (seconds since the epoch) once: in one
        transaction, record it as the schedule's last tick and insert `job`, but
        only if it is later than the last tick recorded. The new job's id, or None
        if this tick (or a later one) was made already, by any process.

        The record outlives the job (pruning a finished job leaves it), so a tick
        is never made twice."""
        ...

    async def last_ticks(self) -> dict[str, float]:
        """The last tick each periodic schedule made, by schedule name."""
        ...

    # -- cancellation ------------------------------------------------------

    async def cancel_where(
        self,
        *,
        destination: str | None,
        task: str | None,
        states: Sequence[JobState],
        now: float,
    ) -> Cancellation:
        """`cancel` for every job of `destination` and `task` (None: any) in one of
        `states` (PENDING, BLOCKED, RUNNING), in one transaction."""
        ...

    async def cancel_requests(self, owner: str) -> list[int]:
        """The running jobs of `owner` that were asked to stop and are not cancelled yet."""
        ...
